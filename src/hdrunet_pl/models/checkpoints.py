"""Loading network weights: the public HDRUNet and ExpandNet state_dicts and this project's
checkpoints (of either network).

Every file is read with ``torch.load(weights_only=True)``: a checkpoint that would run code
when unpickled is refused. Whatever the file holds is checked before a network is built: the
layout, the recorded configuration (its keys, types and values), that it agrees with the
tensors' shapes, and that every tensor is backed by its own bytes. The full-size network is
only allocated once every expected tensor is present with the right shape, so a small crafted
file cannot make the loader allocate a huge model. Every refusal is one
:class:`CheckpointError` line that says what the file is or what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import torch

from hdrunet_pl.errors import CheckpointError
from hdrunet_pl.models.blocks import MODULATIONS
from hdrunet_pl.models.expandnet import ARCH as EXPANDNET_ARCH
from hdrunet_pl.models.expandnet import OUTPUTS, ExpandNet, ExpandNetConfig
from hdrunet_pl.models.hdrunet import CONDITIONS, HDRUNet, HDRUNetConfig

NetConfig = HDRUNetConfig | ExpandNetConfig
"""The configuration of a network this package trains (its ``.config``)."""
Network = HDRUNet | ExpandNet

CONFIG_KEY = "hdrunet_config"
"""Key under which this project's checkpoints store the network's config as a plain dict:
:class:`HDRUNetConfig` (no ``arch`` key) or :class:`ExpandNetConfig` (``arch: expandnet``)."""
STREAM_KEY = "hdrunet_data_stream"
"""Key of a training checkpoint's data-stream layout: ``{"batch_size", "processes"}``, on
which the position of a resumed run's training samples depends."""

NET_PREFIX = "net."
"""Prefix of the network's parameters inside a Lightning checkpoint's ``state_dict``."""

# (official name pattern, our name); applied in order to every key of the public state_dict.
_OFFICIAL_TO_OURS: tuple[tuple[str, str], ...] = (
    (r"^mask_est\.", "weighting.body."),
    (r"^cond_first\.", "condition.stem."),
    (r"^CondNet1\.", "condition.head_full."),
    (r"^CondNet2\.", "condition.head_half."),
    (r"^CondNet3\.", "condition.head_quarter."),
    (r"^SFT_layer1\.", "mod_first."),
    (r"^SFT_layer2\.", "mod_last."),
    (r"^HR_conv1\.", "hr_conv1."),
    (r"^HR_conv2\.", "hr_conv2."),
    (r"^down_conv1\.", "down1."),
    (r"^down_conv2\.", "down2."),
    (r"^recon_trunk1\.", "trunk_half1."),
    (r"^recon_trunk2\.", "trunk_quarter."),
    (r"^recon_trunk3\.", "trunk_half2."),
    (r"^up_conv1\.", "up1."),
    (r"^up_conv2\.", "up2."),
    (r"\.sft1\.", ".mod1."),
    (r"\.sft2\.", ".mod2."),
    (r"SFT_scale_conv0\.", "scale.0."),
    (r"SFT_scale_conv1\.", "scale.2."),
    (r"SFT_shift_conv0\.", "shift.0."),
    (r"SFT_shift_conv1\.", "shift.2."),
)

# (published ExpandNet branch, our branch) and the published ``<layer>.0.`` (conv + SELU) or
# ``<layer>.`` (a bare conv) names: layer i of a branch is our ``<branch>.<2 i>.``.
_EXPANDNET_BRANCHES = {
    "local_net": "local_branch",
    "mid_net": "dilated_branch",
    "glob_net": "global_branch.body",
    "end_net": "fusion",
}
_EXPANDNET_KEY = re.compile(r"^(local_net|mid_net|glob_net|end_net)\.(\d+)\.(?:0\.)?(weight|bias)$")
EXPANDNET_FIRST = "local_branch.0.weight"
"""The first convolution of this package's :class:`ExpandNet` (its width and channels)."""
PUBLISHED_EXPANDNET_FIRST = "local_net.0.0.weight"

# File signatures of things people pass by mistake: (leading bytes, what the file is).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"v/1\x01", "an OpenEXR image"),
    (b"#?RADIANCE", "a Radiance HDR image"),
    (b"#?RGBE", "a Radiance HDR image"),
    (b"\x93NUMPY", "a NumPy array file (.npy)"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras or TensorFlow weights?)"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an executable (ELF) file"),
)

_TEXT_KINDS: tuple[tuple[str, str], ...] = (
    ("version https://git-lfs", "a Git LFS pointer, not the weights (run `git lfs pull`)"),
    ("<!doctype html", "an HTML page (a failed download?)"),
    ("<html", "an HTML page (a failed download?)"),
)

_MAX_SHOWN = 8  # names listed in one message
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def official_to_ours(key: str) -> str:
    """Translate a parameter name of the public HDRUNet code to this package's name."""
    for pattern, replacement in _OFFICIAL_TO_OURS:
        key = re.sub(pattern, replacement, key)
    return key


def _renamed(state: Mapping[str, object], rename: Callable[[str], str]) -> dict[str, object]:
    """``state`` with its keys renamed; refuses two tensors that become one weight (the
    public name and this package's side by side: which one is meant, no loader can tell)."""
    out: dict[str, object] = {}
    source: dict[str, str] = {}
    for key, value in state.items():
        new = rename(key)
        if new in out:
            raise CheckpointError(
                f"two tensors for one weight: {source[new]!r} and {key!r} are both {new!r} "
                "(a mix of the public code's names and this package's)"
            )
        out[new], source[new] = value, key
    return out


def is_official_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True when the keys follow the public repository's naming (``HR_conv1``, ``recon_trunk2``)."""
    return "conv_first.weight" in state_dict and "HR_conv1.weight" in state_dict


def is_own_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True when the keys are this package's :class:`HDRUNet` names (``hr_conv1``, ...)."""
    return "conv_first.weight" in state_dict and "hr_conv1.weight" in state_dict


def published_expandnet_to_ours(key: str) -> str:
    """Translate a parameter name of the published ExpandNet code to this package's name
    (``glob_net.6.weight`` -> ``global_branch.body.12.weight``); others are kept."""
    match = _EXPANDNET_KEY.match(key)
    if match is None:
        return key
    branch, layer, kind = match.groups()
    return f"{_EXPANDNET_BRANCHES[branch]}.{2 * int(layer)}.{kind}"


def is_published_expandnet_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True when the keys follow the published ExpandNet code (``local_net``, ``glob_net``)."""
    return PUBLISHED_EXPANDNET_FIRST in state_dict and "glob_net.0.0.weight" in state_dict


def is_own_expandnet_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True when the keys are this package's :class:`ExpandNet` names (``local_branch``, ...)."""
    return EXPANDNET_FIRST in state_dict and "global_branch.body.0.weight" in state_dict


def network_name(config: NetConfig) -> str:
    """``"HDRUNet"`` or ``"ExpandNet"``: the network ``config`` describes."""
    return "ExpandNet" if isinstance(config, ExpandNetConfig) else "HDRUNet"


def build_network(config: NetConfig) -> Network:
    """The (freshly initialised) network that ``config`` describes."""
    if isinstance(config, ExpandNetConfig):
        return ExpandNet(nf=config.nf, output=config.output)
    return HDRUNet(**asdict(config))


def _one_line(text: str, limit: int = 100_000) -> str:
    """``text`` with control characters (newlines from crafted key names) escaped, shortened."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(names: list[str]) -> str:
    """At most ``_MAX_SHOWN`` names, comma-separated, with the total when there are more."""
    more = f", ... ({len(names)} in all)" if len(names) > _MAX_SHOWN else ""
    return ", ".join(_one_line(n, 120) for n in names[:_MAX_SHOWN]) + more


def _width_and_channels(state_dict: Mapping[str, object]) -> tuple[int, int]:
    """(nf, in_ch) read from ``conv_first.weight``, which must be a (nf, in_ch, 3, 3) tensor."""
    weight = state_dict.get("conv_first.weight")
    if not isinstance(weight, torch.Tensor):
        raise CheckpointError(f"'conv_first.weight' is a {type(weight).__name__}, not a tensor")
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise CheckpointError(
            f"'conv_first.weight' has shape {tuple(weight.shape)}, not (nf, in_ch, 3, 3)"
        )
    return int(weight.shape[0]), int(weight.shape[1])


def _expandnet_width(state_dict: Mapping[str, object], key: str) -> int:
    """nf read from ExpandNet's first convolution ``key``, a (nf, 3, 3, 3) tensor."""
    weight = state_dict.get(key)
    if not isinstance(weight, torch.Tensor):
        raise CheckpointError(f"'{key}' is a {type(weight).__name__}, not a tensor")
    if weight.ndim != 4 or tuple(weight.shape[1:]) != (3, 3, 3):
        raise CheckpointError(f"'{key}' has shape {tuple(weight.shape)}, not (nf, 3, 3, 3)")
    return int(weight.shape[0])


def _check_config_values(config: NetConfig) -> None:
    """Raise :class:`CheckpointError` for values that no network accepts."""
    if isinstance(config, ExpandNetConfig):
        if config.nf < 1:
            raise CheckpointError(f"width nf={config.nf}; ExpandNet needs a width >= 1")
        if config.output not in OUTPUTS:
            raise CheckpointError(f"output={config.output!r}; must be one of {', '.join(OUTPUTS)}")
        return
    if config.nf < 2 or config.nf % 2:
        raise CheckpointError(f"width nf={config.nf}; HDRUNet needs an even width >= 2")
    if config.in_ch < 1:
        raise CheckpointError(f"in_ch={config.in_ch}; must be >= 1")
    if config.modulation not in MODULATIONS:
        raise CheckpointError(
            f"modulation={config.modulation!r}; must be one of {', '.join(MODULATIONS)}"
        )
    if config.condition not in CONDITIONS:
        raise CheckpointError(
            f"condition={config.condition!r}; must be one of {', '.join(CONDITIONS)}"
        )


def config_from_official(state_dict: Mapping[str, object]) -> HDRUNetConfig:
    """The network of a public state_dict: the paper's, at the file's width and channels."""
    nf, in_ch = _width_and_channels(state_dict)
    # the public code always builds both branches (mask_est, cond_first/CondNet): a file
    # without them is cut short, not a variant, and its missing tensors are named
    config = HDRUNetConfig(nf=nf, in_ch=in_ch)
    _check_config_values(config)
    return config


def config_from_state_dict(state_dict: Mapping[str, object]) -> tuple[HDRUNetConfig, str]:
    """Infer the configuration of this package's :class:`HDRUNet` from its ``state_dict``.

    Width and channels come from ``conv_first.weight``; the weighting and condition networks
    from whether their keys exist. A network without condition network is recorded as
    ``modulation="none", use_condition=False`` (it computes the same as any other spelling).

    Returns:
        The configuration and a one-line note on what the keys cannot tell (empty if nothing):
        ``"sft"`` and ``"channel"`` modulation have the same parameters, and the condition
        input (``"image"`` or ``"gradient"``) has none; the paper's ``sft``/``image`` is assumed.
    """
    nf, in_ch = _width_and_channels(state_dict)
    modulated = any(k.startswith("condition.") for k in state_dict)
    config = HDRUNetConfig(
        nf=nf,
        in_ch=in_ch,
        modulation="sft" if modulated else "none",
        use_condition=modulated,
        use_weighting="weighting.body.0.weight" in state_dict,
    )
    _check_config_values(config)
    note = ""
    if modulated:
        note = (
            "a plain state_dict does not record the modulation ('sft' or 'channel': same "
            "weights) nor the condition input ('image' or 'gradient'); assuming 'sft' and "
            "'image' (save_model() files record both)"
        )
    return config, note


def config_from_record(record: object) -> NetConfig:
    """Validate the ``hdrunet_config`` dict of a checkpoint (keys, types, values).

    A record with an ``arch`` key describes that network (``expandnet``: an
    :class:`ExpandNetConfig`); one without describes an :class:`HDRUNet`. Missing keys take
    the config's defaults; unknown keys, values of the wrong type (``bool`` is not an
    ``int``) and values no network accepts are refused.
    """
    if not isinstance(record, Mapping):
        raise CheckpointError(f"'{CONFIG_KEY}' is a {type(record).__name__}, not a dict")
    cls: type[HDRUNetConfig] | type[ExpandNetConfig] = HDRUNetConfig
    if "arch" in record:
        arch = record["arch"]
        if type(arch) is not str or arch != EXPANDNET_ARCH:
            raise CheckpointError(
                f"'{CONFIG_KEY}' arch={_one_line(repr(arch), 60)}: unknown network; "
                f"known: {EXPANDNET_ARCH!r} (an HDRUNet record has no arch)"
            )
        cls = ExpandNetConfig
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(repr(k) for k in record if k not in fields)
    if unknown:
        raise CheckpointError(
            f"'{CONFIG_KEY}' has unknown keys {_shown(unknown)} (known: {', '.join(fields)})"
        )
    for name, value in record.items():
        expected = type(fields[name].default)
        if type(value) is not expected:  # exact: True is not a width, 8.0 is not an int
            raise CheckpointError(
                f"'{CONFIG_KEY}' {name}={value!r:.60}: expected {expected.__name__}, "
                f"got {type(value).__name__}"
            )
    config = cls(**record)
    try:
        _check_config_values(config)
    except CheckpointError as err:
        raise CheckpointError(f"'{CONFIG_KEY}' {err}") from None
    return config


def _describe_unreadable(path: Path, err: BaseException) -> str:
    """What a file that ``torch.load(weights_only=True)`` could not read is, in a few words."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as os_err:
        return f"cannot be read ({os_err.strerror or type(os_err).__name__})"
    if size == 0:
        return "is empty (0 bytes)"
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return f"is {kind}, not a checkpoint"
    if len(head) >= 10 and head[8:10] == b'{"':
        return "is a safetensors file; load_model reads PyTorch .pth/.ckpt files only"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _describe_zip(path, err)
    if head.startswith(b"\x80"):  # pickle protocol >= 2: a legacy torch.save file or a pickle
        refused = _describe_refused_pickle(err)
        if refused:
            return refused
        if isinstance(err, EOFError) or "EOF" in str(err):
            return "is truncated or corrupt (its pickled data ends early)"
        return f"is truncated or corrupt (a pickle that cannot be read: {type(err).__name__})"
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as decode_err:  # a character cut at the 512-byte boundary
            text = head[: decode_err.start].decode("utf-8") if decode_err.start > 500 else None
        if text is not None:
            lowered = text.lstrip().lower()
            for start, kind in _TEXT_KINDS:
                if lowered.startswith(start):
                    return f"is {kind}"
            return "is a text file, not a checkpoint"
    return "is not a PyTorch checkpoint (unrecognised binary content)"


def _describe_refused_pickle(err: BaseException) -> str:
    """The refusal of pickled objects by the weights-only unpickler, or "" for other errors.

    Never passes on torch's advice: its message suggests the unsafe ``weights_only`` setting.
    """
    message = str(err)
    if not isinstance(err, pickle.UnpicklingError) or "Weights only load failed" not in message:
        return ""
    named = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    what = f" ({named.group(1)})" if named else ""
    return (
        f"holds pickled Python objects other than tensors{what}; refused because loading "
        "them could run code (read with weights_only=True)"
    )


def _describe_zip(path: Path, err: BaseException) -> str:
    """What a file that starts like a zip archive but did not load is."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return "is truncated or corrupt (not a complete PyTorch zip archive)"
    if not any(name.endswith("/data.pkl") for name in names):
        return "is a zip archive but not a PyTorch checkpoint (no data.pkl in it)"
    refused = _describe_refused_pickle(err)
    if refused:
        return refused
    return f"is a corrupt PyTorch zip archive ({type(err).__name__})"


def read_checkpoint_file(path: Path) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; one-line error saying what it is."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": refused or fine anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip, EOF and runtime errors alike
        # from None: torch's own message advises an unsafe setting; it is not passed on
        raise CheckpointError(
            _one_line(f"{path}: not a loadable weights file: it {_describe_unreadable(path, err)}")
        ) from None


def _string_keyed(mapping: Mapping[object, object], what: str) -> dict[str, object]:
    """``mapping`` as a dict, refusing keys that are not strings."""
    odd = [repr(k)[:40] for k in mapping if not isinstance(k, str)]
    if odd:
        raise CheckpointError(f"{what} has keys that are not strings: {_shown(odd)}")
    return dict(mapping)  # type: ignore[arg-type]


def _first_keys(mapping: Mapping[str, object]) -> str:
    return ", ".join(_one_line(k, 120) for k in list(mapping)[:5]) or "none"


PARALLEL_PREFIX = "module."
"""What ``nn.DataParallel`` and DDP put before a wrapped network's names."""
NESTED_WEIGHT_KEYS = ("params", "params_ema", "model", "net", "network", "generator")
"""Keys under which other training codes keep a network's weights (BasicSR: ``params`` and
its weight average ``params_ema``): named in the refusal, never guessed between."""
PUBLIC_HDRUNET, OWN_HDRUNET = "public HDRUNet", "hdrunet-pl"
PUBLISHED_EXPANDNET, OWN_EXPANDNET = "published ExpandNet", "hdrunet-pl ExpandNet"
_EXPANDNET_LAYOUTS = (PUBLISHED_EXPANDNET, OWN_EXPANDNET)


def _split(obj: object) -> tuple[dict[str, object], NetConfig | None, str, str]:
    """(network state_dict, recorded config or None, its names' layout, what it is: the
    layout and the container, e.g. ``hdrunet-pl Lightning checkpoint``)."""
    if isinstance(obj, torch.Tensor):
        raise CheckpointError("holds a single tensor, not a dict of tensors")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"holds a {type(obj).__name__}, not a dict of tensors")
    top = _string_keyed(obj, "the checkpoint")
    config = config_from_record(top.pop(CONFIG_KEY)) if CONFIG_KEY in top else None
    if "state_dict" in top:  # Lightning checkpoint, or this package's save_model()
        inner = top["state_dict"]
        if isinstance(inner, torch.Tensor) or not isinstance(inner, Mapping):
            raise CheckpointError(
                f"'state_dict' is a {type(inner).__name__}, not a dict of tensors"
            )
        state = _string_keyed(inner, "'state_dict'")
        kind = "Lightning checkpoint"
    else:
        state, kind = top, "state_dict"
    if state and all(k.startswith(PARALLEL_PREFIX) for k in state):
        # saved from a DataParallel / DistributedDataParallel wrapper: the network's names
        state = {k[len(PARALLEL_PREFIX) :]: v for k, v in state.items()}
        kind += f" ('{PARALLEL_PREFIX}' names)"
    if any(NET_PREFIX + k in state for k in ("conv_first.weight", EXPANDNET_FIRST)):
        # the LightningModule's names: its state holds the network's tensors and nothing else
        others = [k for k in state if not k.startswith(NET_PREFIX)]
        if others:
            raise CheckpointError(
                f"holds tensors besides the network's '{NET_PREFIX}' ones ({_shown(others)}): "
                "which are the weights (another copy, a weight average?) no loader can "
                f"tell; save the ones meant with save_model() or as a dict of '{NET_PREFIX}' "
                "tensors alone"
            )
        state = {k[len(NET_PREFIX) :]: v for k, v in state.items()}
    for layout, matches in (
        (PUBLIC_HDRUNET, is_official_state_dict),  # names translated by the caller
        (OWN_HDRUNET, is_own_state_dict),
        (PUBLISHED_EXPANDNET, is_published_expandnet_state_dict),  # translated by the caller
        (OWN_EXPANDNET, is_own_expandnet_state_dict),
    ):
        if matches(state):
            return state, config, layout, f"{layout} {kind}"
    nested = [k for k in NESTED_WEIGHT_KEYS if isinstance(state.get(k), Mapping)]
    if kind == "state_dict" and nested:
        raise CheckpointError(
            f"the weights are nested under {' and '.join(map(repr, nested))} (as BasicSR "
            "saves them); save the one meant as a plain state_dict and load that, e.g. "
            f"torch.save(torch.load(path)[{nested[-1]!r}], 'weights.pth')"
        )
    if kind == "state_dict":
        # HDRUNet is known by two keys: conv_first and hr_conv1 (HR_conv1 in the public code)
        needed = "'conv_first.weight' with 'hr_conv1.weight' or 'HR_conv1.weight'"
        raise CheckpointError(
            f"not an HDRUNet checkpoint: no 'state_dict', nor {needed} (first keys: "
            f"{_first_keys(state)}); not an ExpandNet one either (no "
            f"'{EXPANDNET_FIRST}' nor '{PUBLISHED_EXPANDNET_FIRST}')"
        )
    raise CheckpointError(
        "not an HDRUNet checkpoint: its 'state_dict' has no 'net.conv_first.weight' nor "
        f"'conv_first.weight' (first keys: {_first_keys(state)}); not an ExpandNet one "
        f"either (no 'net.{EXPANDNET_FIRST}')"
    )


def _check_tensors(state: Mapping[str, object]) -> None:
    """Every value a dense, real floating-point tensor backed by its own bytes."""
    non_tensor = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if non_tensor:
        raise CheckpointError(f"entries that are not tensors: {_shown(non_tensor)}")
    tensors: dict[str, torch.Tensor] = state  # type: ignore[assignment]
    odd = [
        f"{k} ({v.dtype}, {str(v.layout).removeprefix('torch.')})"
        for k, v in tensors.items()
        if v.layout != torch.strided or not v.is_floating_point()
    ]
    if odd:
        raise CheckpointError(f"tensors that are not dense floating point: {_shown(odd)}")
    # An expanded view (stride 0) or many views of one storage claim more elements than the
    # file holds: refuse them, so that the network built below is no larger than the file.
    short = [
        k
        for k, v in tensors.items()
        if v.untyped_storage().nbytes() < (v.storage_offset() + v.numel()) * v.element_size()
    ]
    storages = {
        v.untyped_storage().data_ptr(): v.untyped_storage().nbytes() for v in tensors.values()
    }
    needed = sum(v.numel() * v.element_size() for v in tensors.values())
    if short or sum(storages.values()) < needed:
        names = _shown(short) if short else "tensors share storage"
        raise CheckpointError(
            f"tensors claim more elements than the file holds (expanded or shared views: "
            f"{names}); refused"
        )


def _expected_shapes(config: NetConfig) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the network ``config`` describes, from a network on the meta
    device (no memory)."""
    with torch.device("meta"):
        model = build_network(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _config_text(config: NetConfig) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in asdict(config).items() if k != "arch")


def _check_fit(config: NetConfig, state: Mapping[str, torch.Tensor]) -> None:
    """Raise unless ``state`` has exactly the keys and shapes of the network of ``config``."""
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} (model: {expected[k]})"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    problems = [
        f"{label}: {_shown(keys)}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape", wrong_shape),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"does not fit {network_name(config)}({_config_text(config)}); " + "; ".join(problems)
        )


def _check_config_against_tensors(
    config: NetConfig, state: Mapping[str, object], layout: str
) -> None:
    """Cheap check that the recorded network, width and channels are those of the first
    convolution's weight (before any network is built)."""
    if isinstance(config, ExpandNetConfig) != (layout in _EXPANDNET_LAYOUTS):
        names = "ExpandNet" if layout in _EXPANDNET_LAYOUTS else "HDRUNet"
        raise CheckpointError(
            f"'{CONFIG_KEY}' describes {network_name(config)} but the tensors have "
            f"{names}'s names; refused"
        )
    if isinstance(config, ExpandNetConfig):
        first = EXPANDNET_FIRST if layout == OWN_EXPANDNET else PUBLISHED_EXPANDNET_FIRST
        nf = _expandnet_width(state, first)
        if config.nf != nf:
            raise CheckpointError(
                f"'{CONFIG_KEY}' says nf={config.nf} but {first} has shape "
                f"{tuple(state[first].shape)}; refused"  # type: ignore[union-attr]
            )
        return
    nf, in_ch = _width_and_channels(state)
    if (config.nf, config.in_ch) != (nf, in_ch):
        raise CheckpointError(
            f"'{CONFIG_KEY}' says nf={config.nf}, in_ch={config.in_ch} but conv_first.weight "
            f"has shape {tuple(state['conv_first.weight'].shape)}; refused"  # type: ignore[union-attr]
        )


def _inferred_config(
    state: Mapping[str, object], layout: str, assume: NetConfig | None = None
) -> tuple[NetConfig, str]:
    """The configuration of a file without a record, from its names and shapes, and a note
    on what they cannot tell (see :func:`config_from_state_dict`); what they cannot tell is
    taken from ``assume`` when it is the same kind of network (no note then)."""
    if layout == PUBLIC_HDRUNET:
        return config_from_official(state), ""
    if layout == OWN_HDRUNET:
        config, note = config_from_state_dict(state)
        if isinstance(assume, HDRUNetConfig) and config.use_condition and assume.use_condition:
            untold = {"modulation": assume.modulation, "condition": assume.condition}
            if assume.modulation != "none":
                return dataclasses.replace(config, **untold), ""
        return config, note
    if layout == PUBLISHED_EXPANDNET:  # the published network ends in a sigmoid
        nf = _expandnet_width(state, PUBLISHED_EXPANDNET_FIRST)
        return ExpandNetConfig(nf=nf, output="sigmoid"), ""
    if isinstance(assume, ExpandNetConfig):
        nf = _expandnet_width(state, EXPANDNET_FIRST)
        return ExpandNetConfig(nf=nf, output=assume.output), ""
    default = ExpandNetConfig().output
    note = (
        "a plain ExpandNet state_dict does not record the output map "
        f"({', '.join(map(repr, OUTPUTS))}: none has weights); assuming {default!r} "
        "(save_model() files record it)"
    )
    return ExpandNetConfig(nf=_expandnet_width(state, EXPANDNET_FIRST)), note


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", assume: NetConfig | None = None
) -> Network:
    """Build a ready network (in eval mode) from a weights file.

    Accepts (a) the public HDRUNet repository's plain ``state_dict`` (its key names are
    translated; every tensor must be used), (b) a Lightning checkpoint written by this
    package's training or :func:`save_model` (it records the network and its variant:
    modulation, condition, width; or ExpandNet's width and output map), (c) a plain
    ``state_dict`` of this package's :class:`HDRUNet` or :class:`ExpandNet` or of its
    LightningModule (``net.`` names): the configuration is inferred from the keys and
    shapes, and a :class:`UserWarning` says what could not be inferred (see
    :func:`config_from_state_dict`), and (d) the published ExpandNet's plain ``state_dict``
    (names translated; built with its ``sigmoid`` output).

    ``assume``: for a plain ``state_dict`` of this package's networks, the variant to take
    for what its keys cannot tell (modulation and condition input; ExpandNet's output map),
    e.g. the configured network that the weights are to start (no warning then). Everything
    the keys and shapes do tell still comes from the file.

    Raises:
        CheckpointError: one line: unreadable file (saying what it is), unknown layout, a bad
            recorded configuration, missing, unexpected or misshapen keys, odd tensors.
    """
    path = Path(path)
    obj = read_checkpoint_file(path)
    where = str(path)
    try:
        state, config, layout, kind = _split(obj)
        where = f"{path} ({kind})"
        _check_tensors(state)
        note = ""
        if config is not None:
            _check_config_against_tensors(config, state, layout)
        else:
            config, note = _inferred_config(state, layout, assume)
        if layout == PUBLIC_HDRUNET:
            state = _renamed(state, official_to_ours)
        elif layout == PUBLISHED_EXPANDNET:
            state = _renamed(state, published_expandnet_to_ours)
        tensors: dict[str, torch.Tensor] = state  # type: ignore[assignment]
        _check_fit(config, tensors)  # before the real network is allocated
        broken = [k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()]
        if broken:
            raise CheckpointError(
                f"{len(broken)} weight tensor(s) hold NaN/Inf values ({broken[0]}, ...): the "
                "weights of a run that diverged; take an earlier checkpoint"
            )
    except CheckpointError as err:
        raise CheckpointError(_one_line(f"{where}: {err}")) from None
    if note:
        warnings.warn(f"{path}: {note}", UserWarning, stacklevel=2)
    model = build_network(config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:  # not expected after _check_fit; kept to one line anyway
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise CheckpointError(_one_line(f"{where}: cannot load: {first}")) from None
    return model.to(map_location).eval()


def save_model(model: Network, path: str | Path) -> Path:
    """Save ``model`` as a minimal checkpoint that :func:`load_model` reads (weights + variant).

    Same layout as this package's Lightning checkpoints, without optimizer state; written
    to a new temporary file beside ``path`` (an unguessable name) and renamed.
    """
    from hdrunet_pl.io import atomic_path

    path = Path(path)
    state = {NET_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:  # a new file of its own: never through a planted link
        torch.save({"state_dict": state, CONFIG_KEY: asdict(model.config)}, tmp)
    return path
