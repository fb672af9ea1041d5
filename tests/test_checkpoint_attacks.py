"""Files that are not checkpoints, and crafted or foreign checkpoints: one-line refusals only.

Every refusal is a one-line :class:`CheckpointError` that says what the file is or what is
wrong; none passes on torch's advice to load with ``weights_only`` off, and none builds a
network larger than the tensors in the file.
"""

import json
import pickle
import re
import traceback
import zipfile
from dataclasses import asdict

import pytest
import torch

import hdrunet_pl.models.checkpoints as checkpoints
from hdrunet_pl import CheckpointError, HDRUNet, load_model

from .support import DATA_DIR, run_tool

LAYOUT = json.loads((DATA_DIR / "official_checkpoint_layout.json").read_text())
UNSAFE_ADVICE = re.compile(r"weights_only.{0,12}False", re.IGNORECASE)
SMALL = 64  # the widest network a test lets load_model allocate for real


@pytest.fixture(autouse=True)
def no_large_network(monkeypatch):
    """Fail (instead of allocating gigabytes) if load_model builds a real network wider than
    SMALL; a network on the meta device costs no memory and is allowed."""
    real = checkpoints.HDRUNet

    def guarded(*args, **kwargs):
        nf = kwargs.get("nf", args[0] if args else 64)
        on_meta = torch.get_default_device().type == "meta"
        if isinstance(nf, int) and nf > SMALL and not on_meta:
            raise AssertionError(f"load_model allocated HDRUNet(nf={nf})")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "HDRUNet", guarded)


def refusal(path) -> str:
    """load_model's error message for ``path``, checked to be one safe line."""
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    message = str(err.value)
    assert "\n" not in message, message
    assert str(path) in message
    shown = "".join(traceback.format_exception(err.value))  # what a traceback would print
    assert not UNSAFE_ADVICE.search(shown), shown
    return message


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def _zip_with_text(path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")


def _truncated_zip_checkpoint(path) -> None:
    torch.save(HDRUNet(nf=4).state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])


def _truncated_legacy_checkpoint(path) -> None:
    torch.save(HDRUNet(nf=4).state_dict(), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-100])


FILES = {
    "empty": (lambda p: p.write_bytes(b""), r"is empty"),
    "png": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), r"is a PNG image, not a"),
    "jpeg": (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64)), r"is a JPEG image"),
    "exr": (lambda p: p.write_bytes(b"v/1\x01\x02\x00\x00\x00" + bytes(64)), r"OpenEXR image"),
    "hdr": (lambda p: p.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n"), r"Radiance HDR"),
    "text": (lambda p: p.write_text("lr: 0.0002\nnf: 64\n"), r"is a text file"),
    "lfs": (
        lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\n"),
        r"Git LFS pointer",
    ),
    "html": (lambda p: p.write_text("<!DOCTYPE html><html>404</html>"), r"HTML page"),
    "binary": (lambda p: p.write_bytes(bytes(range(256)) * 8), r"unrecognised binary content"),
    "truncated-zip": (
        _truncated_zip_checkpoint,
        r"is truncated or corrupt \(not a complete PyTorch zip archive\)",
    ),
    "truncated-legacy": (_truncated_legacy_checkpoint, r"is truncated or corrupt"),
    "other-zip": (_zip_with_text, r"is a zip archive but not a PyTorch checkpoint"),
    "code-pickle": (
        lambda p: torch.save({"conv_first.weight": _RunsCode()}, p, pickle_module=pickle),
        r"holds pickled Python objects other than tensors \(print\); refused because loading "
        r"them could run code",
    ),
    "plain-pickle": (
        lambda p: p.write_bytes(pickle.dumps({"nf": {1, 2}}, protocol=4)),
        r"holds pickled Python objects other than tensors",
    ),
    "one-tensor": (lambda p: torch.save(torch.zeros(3), p), r"holds a single tensor"),
    "list": (lambda p: torch.save([torch.zeros(3)], p), r"holds a list, not a dict"),
}


@pytest.mark.parametrize("kind", list(FILES))
def test_a_file_that_is_not_a_checkpoint_is_named_in_one_line(tmp_path, kind, capsys):
    write, expected = FILES[kind]
    path = tmp_path / "model.pth"
    write(path)
    assert re.search(expected, refusal(path)), refusal(path)
    assert "this must never run" not in capsys.readouterr().out


def test_a_folder_is_not_a_checkpoint(tmp_path):
    assert "is a folder, not a checkpoint file" in refusal(tmp_path)


# --- crafted checkpoints: each edit of a valid save_model() file must be refused cleanly ---


def _base() -> dict:
    torch.manual_seed(0)
    net = HDRUNet(nf=8)
    state = {"net." + k: v.clone() for k, v in net.state_dict().items()}
    return {"state_dict": state, "hdrunet_config": asdict(net.config)}


def _config(**changes):
    def edit(ckpt):
        ckpt["hdrunet_config"].update(changes)

    return edit


def _tensor(key, value):
    def edit(ckpt):
        ckpt["state_dict"]["net." + key] = value

    return edit


def _set(key, value):
    def edit(ckpt):
        ckpt[key] = value

    return edit


def _expanded(ckpt):
    """Every tensor of an nf-512 network as a stride-0 view of one number: a 40 KB file."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in HDRUNet(nf=512).state_dict().items()}
    ckpt["state_dict"] = {"net." + k: torch.zeros(()).expand(s) for k, s in shapes.items()}
    ckpt["hdrunet_config"]["nf"] = 512


def _shared(ckpt):
    """Every tensor a view of one storage: 0.6 MB of data standing for a 6.6 MB network."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in HDRUNet(nf=64).state_dict().items()}
    pool = torch.zeros(max(s.numel() for s in shapes.values()))
    ckpt["state_dict"] = {"net." + k: pool[: s.numel()].view(s) for k, s in shapes.items()}
    ckpt["hdrunet_config"]["nf"] = 64


CRAFTED = {
    "config-list": (_set("hdrunet_config", [8, "sft"]), r"'hdrunet_config' is a list, not a"),
    "config-str": (_set("hdrunet_config", "nf=8"), r"'hdrunet_config' is a str"),
    "config-unknown-key": (_config(depth=3), r"unknown keys 'depth'"),
    "config-int-key": (_set("hdrunet_config", {1: 2}), r"unknown keys 1 "),
    "nf-str": (_config(nf="abc"), r"nf='abc': expected int, got str"),
    "nf-negative": (_config(nf=-1), r"nf=-1; HDRUNet needs an even width >= 2"),
    "nf-odd": (_config(nf=7), r"even width"),
    "nf-huge": (_config(nf=10**6), r"says nf=1000000.*conv_first.weight has shape \(8, 3"),
    "nf-4096": (_config(nf=4096), r"says nf=4096"),
    "nf-bool": (_config(nf=True), r"expected int, got bool"),
    "nf-float": (_config(nf=8.0), r"expected int, got float"),
    "nf-none": (_config(nf=None), r"expected int, got NoneType"),
    "in-ch-zero": (_config(in_ch=0), r"in_ch=0"),
    "modulation-unknown": (_config(modulation="fancy"), r"modulation='fancy'; must be one of"),
    "modulation-none-but-sft-weights": (
        _config(modulation="none"),
        r"does not fit HDRUNet\(nf=8, modulation='none'.*unexpected: condition\.",
    ),
    "use-condition-str": (_config(use_condition="yes"), r"expected bool, got str"),
    "condition-int": (_config(condition=3), r"expected str, got int"),
    "state-dict-list": (_set("state_dict", [torch.zeros(1)]), r"'state_dict' is a list"),
    "state-dict-tensor": (_set("state_dict", torch.zeros(1)), r"'state_dict' is a Tensor"),
    "state-dict-none": (_set("state_dict", None), r"'state_dict' is a NoneType"),
    "state-dict-int-keys": (_set("state_dict", {1: torch.zeros(1)}), r"keys that are not str"),
    "state-dict-foreign": (
        _set("state_dict", {"encoder.weight": torch.zeros(1)}),
        r"its 'state_dict' has no 'net.conv_first.weight'",
    ),
    "conv-first-1d": (_tensor("conv_first.weight", torch.zeros(216)), r"shape \(216,\), not"),
    "conv-first-0d": (_tensor("conv_first.weight", torch.tensor(1.0)), r"shape \(\), not"),
    "conv-first-5x5": (_tensor("conv_first.weight", torch.zeros(8, 3, 5, 5)), r"\(8, 3, 5, 5\)"),
    "hr-conv1-2d": (_tensor("hr_conv1.weight", torch.zeros(8, 72)), r"shape: hr_conv1.weight"),
    "key-with-newline": (_tensor("evil\nkey", torch.zeros(1)), r"unexpected: evil\\nkey"),
    "value-float": (_tensor("conv_first.bias", 3.0), r"not tensors: conv_first.bias"),
    "value-str": (_tensor("conv_first.bias", "abc"), r"not tensors: conv_first.bias"),
    "value-none": (_tensor("conv_first.bias", None), r"not tensors: conv_first.bias"),
    "value-list": (_tensor("conv_first.bias", [1.0] * 8), r"not tensors: conv_first.bias"),
    "value-dict": (_tensor("conv_first.bias", {"a": torch.zeros(8)}), r"not tensors"),
    "value-int-tensor": (
        _tensor("conv_first.bias", torch.zeros(8, dtype=torch.int64)),
        r"not dense floating point: conv_first.bias \(torch.int64",
    ),
    "value-complex": (_tensor("conv_first.bias", torch.zeros(8, dtype=torch.cfloat)), "complex"),
    "value-sparse": (_tensor("conv_first.bias", torch.zeros(8).to_sparse()), r"sparse_coo"),
    "expanded-views": (_expanded, r"claim more elements than the file holds"),
    "shared-storage": (_shared, r"claim more elements than the file holds"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_checkpoint_is_refused_in_one_line(tmp_path, case):
    edit, expected = CRAFTED[case]
    ckpt = _base()
    edit(ckpt)
    path = tmp_path / "crafted.ckpt"
    torch.save(ckpt, path)
    message = refusal(path)
    assert re.search(expected, message), message


PLAIN = {
    "official-conv-first-1d": (lambda sd: sd.update({"conv_first.weight": torch.zeros(9)}), "(9,)"),
    "official-odd-width": (
        lambda sd: sd.update({"conv_first.weight": torch.zeros(7, 3, 3, 3)}),
        "nf=7; HDRUNet needs an even width",
    ),
    "official-non-tensor": (lambda sd: sd.update({"HR_conv1.bias": 1}), "not tensors: HR_conv1"),
    "int-key": (lambda sd: sd.update({1: torch.zeros(1)}), "keys that are not strings: 1"),
    "empty": (lambda sd: sd.clear(), "not an HDRUNet checkpoint"),
    # the public code always has the weighting branch: a file without it is cut short, not
    # the package's no-weighting variant (it loaded as one, and predicted something else)
    "official-no-weighting": (
        lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("mask_est.")],
        "missing: weighting.body.0.bias",
    ),
    "official-no-condition": (
        lambda sd: [sd.pop(k) for k in list(sd) if k.startswith(("cond_first.", "CondNet"))],
        "missing: condition.head_full.0.bias",
    ),
    # BasicSR keeps the weights under 'params' and their average under 'params_ema'
    "nested-basicsr": (
        lambda sd: sd.update({"params": dict(sd), "params_ema": dict(sd)}) or None,
        "nested under 'params' and 'params_ema'",
    ),
}


@pytest.mark.parametrize("case", list(PLAIN))
def test_a_crafted_plain_state_dict_is_refused_in_one_line(tmp_path, case):
    edit, expected = PLAIN[case]
    sd = {k: torch.zeros(shape) for k, shape in LAYOUT.items()}
    edit(sd)
    if case == "nested-basicsr":
        sd = {"params": sd["params"], "params_ema": sd["params_ema"]}
    path = tmp_path / "crafted.pth"
    torch.save(sd, path)
    assert expected in refusal(path)


def test_an_inferred_odd_width_of_an_own_state_dict_is_refused(tmp_path):
    sd = HDRUNet(nf=8).state_dict()
    sd["conv_first.weight"] = torch.zeros(7, 3, 3, 3)
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    assert "nf=7; HDRUNet needs an even width" in refusal(path)


def test_a_claimed_huge_width_never_builds_the_network(tmp_path, monkeypatch):
    built = []
    real = checkpoints.HDRUNet
    monkeypatch.setattr(checkpoints, "HDRUNet", lambda **kw: built.append(kw) or real(**kw))
    ckpt = _base()
    ckpt["hdrunet_config"]["nf"] = 4096
    path = tmp_path / "huge.ckpt"
    torch.save(ckpt, path)
    assert path.stat().st_size < 1_000_000
    assert "says nf=4096" in refusal(path)
    assert built == []  # not even on the meta device


_MEASURE = """
import os, resource, sys
from dataclasses import asdict
import torch
torch.set_num_threads(1)
from hdrunet_pl import CheckpointError, HDRUNet, load_model

folder = sys.argv[1]
net = HDRUNet(nf=8)
ckpt = {{"state_dict": {{"net." + k: v for k, v in net.state_dict().items()}},
        "hdrunet_config": {{**asdict(net.config), "nf": 4096}}}}
torch.save(ckpt, os.path.join(folder, "claims.ckpt"))
with torch.device("meta"):
    shapes = {{k: v.shape for k, v in HDRUNet(nf=4096).state_dict().items()}}
expanded = {{"net." + k: torch.zeros(()).expand(s) for k, s in shapes.items()}}
torch.save({{"state_dict": expanded, "hdrunet_config": ckpt["hdrunet_config"]}},
           os.path.join(folder, "expanded.ckpt"))
vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize"))
limit = (vm + {limit_mib} * 1024) * 1024  # a safety net: the old loader allocated ~21 GB
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = []
for name in ("claims.ckpt", "expanded.ckpt"):
    try:
        load_model(os.path.join(folder, name))
        outcome.append(name + ": loaded")
    except CheckpointError:
        outcome.append(name + ": CheckpointError")
    except Exception as err:
        outcome.append(name + ": " + type(err).__name__)
grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(os.path.getsize(os.path.join(folder, "claims.ckpt")), grown_mib, "; ".join(outcome))
"""


def test_refusing_a_huge_claimed_width_takes_little_memory(tmp_path):
    script = _MEASURE.format(limit_mib=1024)
    result = run_tool("python", ["-c", script, str(tmp_path)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    size, grown_mib, outcome = result.stdout.split(maxsplit=2)
    assert int(size) < 1_000_000  # a small file ...
    assert outcome.strip() == "claims.ckpt: CheckpointError; expanded.ckpt: CheckpointError"
    assert float(grown_mib) < 100  # ... refused without allocating the network it claims


@pytest.mark.parametrize(
    "extra",
    [
        {"net_ema.conv_first.weight": torch.ones(8, 3, 3, 3)},  # a weight average beside
        {"conv_first.weight": torch.zeros(8, 3, 3, 3)},  # a second, unprefixed copy
        {"junk.weight": torch.zeros(1)},
    ],
    ids=["average-beside", "unprefixed-copy", "junk"],
)
def test_net_names_beside_other_tensors_are_refused_not_read_in_part(tmp_path, extra):
    """A LightningModule's ``net.`` tensors beside others (another codebase's ``net_ema``):
    the others were dropped without a word, so the raw weights loaded where the average was
    meant. Which tensors are the weights, no loader can tell."""
    state = {f"net.{k}": v for k, v in HDRUNet(nf=8).state_dict().items()}
    path = tmp_path / "two-copies.pth"
    torch.save({**state, **extra}, path)
    message = refusal(path)
    assert f"besides the network's 'net.' ones ({next(iter(extra))})" in message
    torch.save(state, path)  # the network's tensors alone load
    with pytest.warns(UserWarning, match="does not record the modulation"):
        assert load_model(path).config.nf == 8
