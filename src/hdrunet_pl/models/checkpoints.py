"""Loading HDRUNet weights: the public repository's state_dict and this project's checkpoints.

Every file is read with ``torch.load(weights_only=True)``: a checkpoint that would run code
when unpickled is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch

from hdrunet_pl.errors import CheckpointError
from hdrunet_pl.models.hdrunet import HDRUNet, HDRUNetConfig

CONFIG_KEY = "hdrunet_config"
"""Key under which this project's checkpoints store :class:`HDRUNetConfig` as a plain dict."""

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


def official_to_ours(key: str) -> str:
    """Translate a parameter name of the public HDRUNet code to this package's name."""
    for pattern, replacement in _OFFICIAL_TO_OURS:
        key = re.sub(pattern, replacement, key)
    return key


def is_official_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True when the keys follow the public repository's naming (``HR_conv1``, ``recon_trunk2``)."""
    return "conv_first.weight" in state_dict and "HR_conv1.weight" in state_dict


def config_from_official(state_dict: Mapping[str, torch.Tensor]) -> HDRUNetConfig:
    """Infer the network's configuration from a public state_dict (width, which parts exist)."""
    weight = state_dict["conv_first.weight"]
    return HDRUNetConfig(
        nf=int(weight.shape[0]),
        in_ch=int(weight.shape[1]),
        use_condition="cond_first.0.weight" in state_dict,
        use_weighting="mask_est.0.weight" in state_dict,
    )


def _load_file(path: Path) -> object:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors alike
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not a loadable weights file (it is corrupt, truncated, or holds objects "
            f"that weights_only=True refuses to unpickle): {first_line}"
        ) from err


def _strict_load(model: HDRUNet, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        f"{k} {tuple(state_dict[k].shape)} (model: {tuple(expected[k].shape)})"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shape)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(
            f"{source}: does not fit HDRUNet({model.config}); " + "; ".join(problems)
        )
    model.load_state_dict(state_dict, strict=True)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> HDRUNet:
    """Build a ready :class:`HDRUNet` (in eval mode) from a weights file.

    Accepts (a) the public HDRUNet repository's plain ``state_dict`` (its key names are
    translated; every tensor must be used) or (b) a Lightning checkpoint written by this
    package's training (it records the variant: modulation, condition, width).

    Raises:
        CheckpointError: unreadable file, unknown layout, missing, unexpected or misshapen keys.
    """
    path = Path(path)
    obj = _load_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")

    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):  # Lightning checkpoint
        if CONFIG_KEY not in obj:
            raise CheckpointError(
                f"{path}: Lightning checkpoint without '{CONFIG_KEY}'; "
                "was it written by hdrunet-pl?"
            )
        config = HDRUNetConfig(**obj[CONFIG_KEY])
        state = {
            k[len(NET_PREFIX) :]: v
            for k, v in obj["state_dict"].items()
            if k.startswith(NET_PREFIX)
        }
        source = f"{path} (Lightning checkpoint)"
    elif is_official_state_dict(obj):
        config = config_from_official(obj)
        state = {official_to_ours(k): v for k, v in obj.items()}
        source = f"{path} (public HDRUNet state_dict)"
    else:
        some = ", ".join(list(obj)[:5]) or "none"
        raise CheckpointError(
            f"{path}: not an HDRUNet checkpoint: no 'conv_first.weight' nor 'state_dict' "
            f"(first keys: {some})"
        )

    non_tensor = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if non_tensor:
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(non_tensor[:5])}")
    model = HDRUNet(**asdict(config))
    _strict_load(model, state, source)
    return model.to(map_location).eval()


def save_model(model: HDRUNet, path: str | Path) -> Path:
    """Save ``model`` as a minimal checkpoint that :func:`load_model` reads (weights + variant).

    Same layout as this package's Lightning checkpoints, without optimizer state; written
    to a temporary name and renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    state = {NET_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, CONFIG_KEY: asdict(model.config)}, tmp)
    tmp.replace(path)
    return path
