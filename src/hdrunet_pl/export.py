"""``hdrunet-export``: ONNX or TorchScript files with dynamic batch, height and width.

hdrunet-export ckpt=last.ckpt format=onnx              # -> last.onnx
hdrunet-export ckpt=HDRUNet.pth format=torchscript     # -> HDRUNet.torchscript.pt

The exported model (HDRUNet or ExpandNet, as the checkpoint records) takes (B, 3, H, W) LDR
in [0, 1] of any size (input ``ldr``) and returns the non-linear HDR. Each export is run on
an odd-sized input and compared with PyTorch before the file is kept.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.jit import TracerWarning

from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.models.checkpoints import load_model
from hdrunet_pl.outputs import OutputFolder
from hdrunet_pl.validation import EXPORT_RULES, check_settings

SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
EXPORT_SIZE = (1, 3, 64, 64)
"""Example input used to trace or export (any size works; H, W stay dynamic)."""
INTERRUPTED = "the exported file is written whole or not at all: run the same command again"
"""What ``hdrunet-export`` says on Ctrl-C."""


def export_onnx(model: nn.Module, path: Path, opset: int = 18) -> None:
    """Export with ``torch.onnx`` (dynamo); batch, height and width are dynamic."""
    dims = {
        0: torch.export.Dim("batch", max=1024),
        2: torch.export.Dim("height", min=4, max=16384),
        3: torch.export.Dim("width", min=4, max=16384),
    }
    torch.onnx.export(
        model,
        (torch.rand(EXPORT_SIZE),),
        str(path),
        dynamo=True,
        dynamic_shapes={"ldr": dims},
        opset_version=opset,
        input_names=["ldr"],
        output_names=["hdr"],
        external_data=False,  # one self-contained file that can be moved anywhere
        verbose=False,
    )


def export_torchscript(model: nn.Module, path: Path) -> None:
    """Trace to TorchScript (the tracer records the padding arithmetic, so sizes stay free)."""
    with warnings.catch_warnings():
        # the input check (4-D, 3 channels) is rightly frozen into the trace; TorchScript
        # itself is deprecated (the README says so)
        warnings.filterwarnings(
            "ignore",
            message="Converting a tensor to a Python boolean",
            category=TracerWarning,
            module=r"hdrunet_pl\.models\.(hdrunet|expandnet)",
        )
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.trace", category=DeprecationWarning
        )
        traced = torch.jit.trace(model, torch.rand(EXPORT_SIZE))
    traced.save(str(path))


def check_onnx_file(path: Path, opset: int) -> None:
    """Refuse an ONNX file whose weights live in other files (it would not load once moved)
    or whose opset is not the one asked for (torch writes its own when it cannot convert)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in model.graph.initializer if uses_external_data(t)]
    if external:
        raise HDRUNetError(f"{path}: weights stored outside the file ({external[0]}, ...)")
    written = {o.domain: o.version for o in model.opset_import}.get("")
    if written != opset:
        advice = f"{written}" if opset > written else f"{written} or higher"
        raise HDRUNetError(
            f"opset={opset}: torch.onnx could not convert the network to it (it wrote opset "
            f"{written}); choose opset={advice}"
        )


def run_exported(path: Path, fmt: str, ldr: torch.Tensor) -> np.ndarray:
    """Run an exported file on ``ldr`` with its own runtime (onnxruntime or torch.jit)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: ldr.numpy()})[0]
    return torch.jit.load(str(path))(ldr).detach().numpy()


def export(
    ckpt: str,
    fmt: str,
    output: str | None = None,
    opset: int = 18,
    check_size: tuple[int, ...] = (1, 3, 97, 131),
    tolerance: float = 1e-4,
) -> tuple[Path, float]:
    """Export ``ckpt``; returns the file and its largest difference from PyTorch."""
    if fmt not in SUFFIXES:
        raise HDRUNetError(f"format must be one of {sorted(SUFFIXES)}, got {fmt!r}")
    if not Path(ckpt).is_file():  # before its name is used to name the export
        raise HDRUNetError(f"ckpt={ckpt}: {'a folder' if Path(ckpt).is_dir() else 'no such file'}")
    target = Path(output) if output else Path(ckpt).with_suffix(SUFFIXES[fmt])
    if target.is_dir():
        raise HDRUNetError(f"output={output}: a folder; give the file to write, e.g. model.onnx")
    named = ".onnx" if target.suffix.lower() == ".onnx" else "torchscript"
    if output and named != fmt.replace("onnx", ".onnx"):
        raise HDRUNetError(
            f"output={output} is no name for a format={fmt} file (ONNX files end in .onnx, "
            "TorchScript files do not): runtimes pick the loader by the name"
        )
    model = load_model(ckpt).eval()  # before the claim: a bad checkpoint leaves no trace
    folder = OutputFolder(target.parent, "hdrunet-export", [Path(ckpt)])
    folder.claim([target])
    with folder.new_file(target) as tmp:
        if fmt == "onnx":
            export_onnx(model, tmp, opset)
        else:
            export_torchscript(model, tmp)
        ldr = torch.rand(tuple(check_size), generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            expected = model(ldr).numpy()
        if fmt == "onnx":
            check_onnx_file(tmp, opset)
        error = float(np.abs(run_exported(tmp, fmt, ldr) - expected).max())
        if not error <= tolerance:
            raise HDRUNetError(f"export differs from PyTorch by {error:.2e} > {tolerance}")
    return target, error


def run(cfg: DictConfig) -> Path:
    check_settings(cfg, EXPORT_RULES)
    start = time.perf_counter()
    path, error = export(
        cfg.ckpt, cfg.format, cfg.output, cfg.opset, tuple(cfg.check_size), cfg.tolerance
    )
    print(
        f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) "
        f"in {time.perf_counter() - start:.0f} s; "
        f"max |export - PyTorch| = {error:.1e} on a {tuple(cfg.check_size)} input"
    )
    return path


if __name__ == "__main__":
    from hdrunet_pl.cli import export as _main

    _main()
