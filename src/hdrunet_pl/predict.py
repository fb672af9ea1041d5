"""``hdrunet-predict``: turn LDR photos into HDR files.

hdrunet-predict ckpt=HDRUNet.pth input=photos/ output=hdr/                # NTIRE PNG pairs
hdrunet-predict ckpt=last.ckpt input=IMG_0001.jpg output=hdr/ format=exr preview=true

``input=`` is one image or a folder. From a folder, the inputs are its images (PNG, JPEG,
BMP, TIFF, WebP; not its subfolders), except that in an NTIRE-style folder (one holding
``NNNN_medium.png`` files) they are the ``*_medium.png`` files only: its ``NNNN_gt.png``
ground truth is never converted. Inputs of any size are read as 8-bit RGB.

Results are named after their input, with NTIRE's ``_medium`` dropped: ``NNNN_medium.png``
becomes ``NNNN.png`` + ``NNNN_alignratio.npy`` (the challenge's submission names),
``photo.jpg`` becomes ``photo.png`` + ``photo_alignratio.npy`` (or ``photo.exr``/``.hdr``).
Because the align ratio of ``NNNN.png`` and of the ground truth ``NNNN_gt.png`` share one
name, the output folder may not be the input folder nor a folder holding NTIRE ground truth.
Results are written under a temporary name and renamed. A bad input is reported and
skipped; the exit code is 1 if any input failed.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from hdrunet_pl.errors import HDRUNetError, one_line
from hdrunet_pl.inference import DEFAULT_OVERLAP, Predictor
from hdrunet_pl.io import (
    ALIGNRATIO_SUFFIX,
    GT_SUFFIX,
    LDR_EXTENSIONS,
    LDR_SUFFIX,
    alignratio_path_for,
    read_ldr,
    write_hdr,
    write_ldr,
)
from hdrunet_pl.models.checkpoints import load_model
from hdrunet_pl.outputs import OutputFolder
from hdrunet_pl.tonemap import display_mu_law
from hdrunet_pl.validation import INFERENCE_RULES, check_required, check_settings

FORMATS = ("png", "exr", "hdr")


def list_inputs(path: str | Path) -> list[Path]:
    """The LDR images to convert: ``path`` itself or the images in folder ``path``.

    In a folder holding NTIRE inputs (``*_medium.png``) only those are taken; NTIRE ground
    truth (``*_gt.png``) is never an input.
    """
    path = Path(path)
    if path.is_file():
        if path.stem.endswith(GT_SUFFIX):
            raise HDRUNetError(f"input {path}: an NTIRE ground-truth file, not an LDR input")
        return [path]
    if not path.is_dir():
        raise HDRUNetError(f"input {path}: no such file or folder")
    files = sorted(
        p
        for p in path.iterdir()
        if p.suffix.lower() in LDR_EXTENSIONS and p.is_file() and not p.stem.endswith(GT_SUFFIX)
    )
    ntire = [p for p in files if p.stem.endswith(LDR_SUFFIX)]
    if ntire:
        return ntire
    if not files:
        raise HDRUNetError(f"input {path}: no images ({', '.join(LDR_EXTENSIONS)})")
    return files


def check_output_folder(output: Path, inputs: list[Path]) -> None:
    """Refuse an output folder whose results could overwrite or be mistaken for inputs or
    ground truth: an input's own folder, or a folder holding NTIRE ``*_gt.png`` files."""
    if output.is_file():
        raise HDRUNetError(f"output {output}: is a file; give a folder for the results")
    if not output.is_dir():
        return
    resolved = output.resolve()
    if any(p.parent.resolve() == resolved for p in inputs):
        raise HDRUNetError(
            f"output {output}: is the input folder; results would mix with (or replace) the "
            "inputs. Give another folder"
        )
    ground_truth = sorted(output.glob(f"*{GT_SUFFIX}.png"))
    if ground_truth:
        raise HDRUNetError(
            f"output {output}: holds NTIRE ground truth ({ground_truth[0].name}, ...); the "
            f"results' NNNN{ALIGNRATIO_SUFFIX} would replace the ground truth's. Give another "
            "folder"
        )


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
    check_output_folder(output, inputs)
    folder = OutputFolder(output, "hdrunet-predict", inputs)
    report = PredictReport()
    start = time.perf_counter()
    for path, stem in tqdm(
        list(zip(inputs, stems, strict=True)), disable=not progress, unit="image"
    ):
        target = output / f"{stem}.{fmt}"
        unit = [target, alignratio_path_for(target)] if fmt == "png" else [target]
        if preview:
            unit.append(output / f"{stem}_preview.png")
        if not overwrite and folder.complete(unit):
            report.skipped.append(target)
            continue
        try:
            folder.claim(unit)
            ldr = torch.from_numpy(read_ldr(path).transpose(2, 0, 1).copy())
            hdr = predictor(ldr).clamp_min(0)
            write_hdr(target, hdr.permute(1, 2, 0).numpy())
            if preview:
                shown = display_mu_law(hdr).permute(1, 2, 0).numpy().astype(np.float32)
                write_ldr(unit[-1], shown)
        except (HDRUNetError, OSError) as err:
            message = str(err) if isinstance(err, HDRUNetError) else f"{target}: {err.strerror}"
            tqdm.write(f"skipped: {message}", file=sys.stderr)
            report.failed[path] = message
            continue
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
    check_settings(cfg, INFERENCE_RULES)
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
    check_required(cfg)
    inputs = list_inputs(cfg.input)
    check_output_folder(Path(cfg.output), inputs)  # before the checkpoint is loaded
    predictor = make_predictor(cfg)
    print(f"hdrunet-predict: {cfg.ckpt} on {predictor.device} ({predictor.dtype})")
    report = predict_files(
        predictor,
        inputs,
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
            print(f"{Path(sys.argv[0]).name}: error: {one_line(err)}", file=sys.stderr)
            sys.exit(2)
        if getattr(result, "failed", None):
            sys.exit(1)

    return wrapper


if __name__ == "__main__":
    from hdrunet_pl.cli import predict as _main

    _main()
