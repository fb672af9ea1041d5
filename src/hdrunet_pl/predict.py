"""``hdrunet-predict``: turn LDR photos into HDR files.

hdrunet-predict ckpt=HDRUNet.pth input=photos/ output=hdr/                # NTIRE PNG pairs
hdrunet-predict ckpt=last.ckpt input=IMG_0001.jpg output=hdr/ format=exr preview=true

Inputs of any size are read as 8-bit RGB; ``NNNN_medium.png`` becomes ``NNNN.png`` +
``NNNN_alignratio.npy`` (the challenge's submission names). Results are written under a
temporary name and renamed. A bad input is reported and skipped; the exit code is 1 if any
input failed.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.inference import DEFAULT_OVERLAP, Predictor
from hdrunet_pl.io import LDR_EXTENSIONS, LDR_SUFFIX, read_ldr, write_hdr, write_ldr
from hdrunet_pl.models.checkpoints import load_model
from hdrunet_pl.tonemap import display_mu_law

FORMATS = ("png", "exr", "hdr")


def list_inputs(path: str | Path) -> list[Path]:
    """The LDR images to convert: ``path`` itself or the images in folder ``path``."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise HDRUNetError(f"input {path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in LDR_EXTENSIONS)
    if not files:
        raise HDRUNetError(f"input {path}: no images ({', '.join(LDR_EXTENSIONS)})")
    return files


def output_stem(path: Path) -> str:
    """``0001_medium.png`` -> ``0001`` (NTIRE submission name); ``photo.jpg`` -> ``photo``."""
    return path.stem.removesuffix(LDR_SUFFIX)


@dataclass
class PredictReport:
    """What a prediction run did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    seconds: float = 0.0
    peak_memory_gb: float = 0.0

    def summary(self) -> str:
        n = len(self.written)
        rate = f", {self.seconds / n:.2f} s per image" if n else ""
        lines = [
            f"{n} written, {len(self.skipped)} skipped (exist), {len(self.failed)} failed "
            f"in {self.seconds:.1f} s{rate}; peak memory {self.peak_memory_gb:.2f} GB"
        ]
        lines += [f"  failed: {why}" for why in self.failed.values()]
        return "\n".join(lines)


def predict_files(
    predictor: Predictor,
    inputs: list[Path],
    output: Path,
    fmt: str = "png",
    preview: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> PredictReport:
    """Convert every file in ``inputs``; see the module docstring for names and errors."""
    if fmt not in FORMATS:
        raise HDRUNetError(f"format must be one of {FORMATS}, got {fmt!r}")
    stems = [output_stem(p) for p in inputs]
    clashes = {s for s in stems if stems.count(s) > 1}
    if clashes:
        raise HDRUNetError(f"inputs map to the same output name: {sorted(clashes)}")
    output.mkdir(parents=True, exist_ok=True)
    report = PredictReport()
    start = time.perf_counter()
    for path, stem in tqdm(
        list(zip(inputs, stems, strict=True)), disable=not progress, unit="image"
    ):
        target = output / f"{stem}.{fmt}"
        if target.exists() and not overwrite:
            report.skipped.append(target)
            continue
        try:
            ldr = torch.from_numpy(read_ldr(path).transpose(2, 0, 1).copy())
        except HDRUNetError as err:
            tqdm.write(f"skipped: {err}", file=sys.stderr)
            report.failed[path] = str(err)
            continue
        hdr = predictor(ldr).clamp_min(0)
        write_hdr(target, hdr.permute(1, 2, 0).numpy())
        if preview:
            shown = display_mu_law(hdr).permute(1, 2, 0).numpy().astype(np.float32)
            write_ldr(output / f"{stem}_preview.png", shown)
        report.written.append(target)
    report.seconds = time.perf_counter() - start
    report.peak_memory_gb = peak_memory_gb(predictor.device)
    return report


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory of this process so far: GPU memory on CUDA, resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def make_predictor(cfg: DictConfig) -> Predictor:
    """A :class:`Predictor` for the checkpoint and settings of a predict/eval config."""
    return Predictor(
        load_model(cfg.ckpt),
        device=cfg.device,
        precision=cfg.precision,
        tile=cfg.tile,
        overlap=DEFAULT_OVERLAP if cfg.overlap is None else cfg.overlap,
        memory_gb=cfg.memory_gb,
        tile_batch=cfg.tile_batch,
        compile=cfg.get("compile", False),
    )


def run(cfg: DictConfig) -> PredictReport:
    predictor = make_predictor(cfg)
    print(f"hdrunet-predict: {cfg.ckpt} on {predictor.device} ({predictor.dtype})")
    report = predict_files(
        predictor,
        list_inputs(cfg.input),
        Path(cfg.output),
        fmt=cfg.format,
        preview=cfg.preview,
        overwrite=cfg.overwrite,
    )
    print(report.summary())
    return report


def exit_on_error(func):
    """Run a tool's body; print a package error as one line and exit non-zero."""

    def wrapper(cfg: DictConfig) -> None:
        try:
            result = func(cfg)
        except (HDRUNetError, ValueError) as err:
            print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
            sys.exit(2)
        if getattr(result, "failed", None):
            sys.exit(1)

    return wrapper


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    exit_on_error(run)(cfg)


if __name__ == "__main__":
    main()
