"""``hdrunet-predict``: turn LDR photos into HDR files.

hdrunet-predict ckpt=HDRUNet.pth input=photos/ output=hdr/                # NTIRE PNG pairs
hdrunet-predict ckpt=last.ckpt input=IMG_0001.jpg output=hdr/ format=exr preview=true

``input=`` is one image or a folder. From a folder, the inputs are its images (PNG, JPEG,
BMP, TIFF, WebP; not its subfolders), except that in an NTIRE-style folder (one holding
``NNNN_medium.png`` files) they are the ``*_medium.png`` files only: its ``NNNN_gt.png``
ground truth is never converted. Inputs of any size are read as 8- or 16-bit RGB.

Results are named after their input, with NTIRE's ``_medium`` dropped: ``NNNN_medium.png``
becomes ``NNNN.png`` + ``NNNN_alignratio.npy`` (the challenge's submission names),
``photo.jpg`` becomes ``photo.png`` + ``photo_alignratio.npy`` (or ``photo.exr``/``.hdr``).
Because the align ratio of ``NNNN.png`` and of the ground truth ``NNNN_gt.png`` share one
name, the output folder may not be the input folder nor a folder holding NTIRE ground truth.
Results are written under a temporary name and renamed. A result already in the output
folder is skipped when this tool made it from the same input file (path, size, time) with
the same checkpoint, precision and tiling settings, and made again otherwise
(``IMG_0001.jpg`` of another memory card, another checkpoint). A bad input is reported and
skipped; the exit code is 1 if any input failed.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from hdrunet_pl.errors import INTERRUPTED_STATUS, HDRUNetError, one_line
from hdrunet_pl.inference import DEFAULT_OVERLAP, NonFiniteOutputError, Predictor
from hdrunet_pl.io import (
    ALIGNRATIO_SUFFIX,
    GT_SUFFIX,
    LDR_EXTENSIONS,
    LDR_SUFFIX,
    LINEAR_HDR_EXTENSIONS,
    alignratio_path_for,
    is_hdr_png,
    new_temporary,
    not_a_file,
    ntire_frame_id,
    read_ldr,
    remove_dead_temporaries,
    write_hdr,
    write_ldr,
)
from hdrunet_pl.models.checkpoints import load_model
from hdrunet_pl.outputs import OutputFolder, check_writable, file_identity, origin
from hdrunet_pl.resolvers import available_cpus
from hdrunet_pl.tonemap import display_mu_law
from hdrunet_pl.validation import (
    INFERENCE_RULES,
    PREDICT_RULES,
    check_required,
    check_settings,
)

FORMATS = ("png", "exr", "hdr")
PREVIEW_SUFFIX = "_preview"
"""A result's tonemapped preview is ``<name>_preview.png``."""

log = logging.getLogger(__name__)


def _is_ntire(path: Path, suffix: str) -> bool:
    """An NTIRE PNG of a frame, ``<frame id><suffix>.png`` (``0042_medium.png``)."""
    return ntire_frame_id(path, suffix) is not None


def _is_ntire_gt(path: Path) -> bool:
    """An NTIRE ground-truth PNG (``NNNN_gt.png``): never an input."""
    return _is_ntire(path, GT_SUFFIX)


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


UNREAD_IMAGE_SUFFIXES = (
    ".gif", ".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf",
    ".orf", ".rw2",
)  # fmt: skip
"""Image files this tool does not read (animations, phones' HEIF/AVIF, cameras' raw
files): named, never passed over in silence."""


def _unread(paths: list[Path]) -> str:
    return (
        f"{_listed([p.name for p in paths])}: not read here ({', '.join(LDR_EXTENSIONS)} "
        "are); convert them to PNG or JPEG first"
    )


def list_inputs(path: str | Path) -> list[Path]:
    """The LDR images to convert: ``path`` itself or the images in folder ``path``.

    In a folder holding NTIRE inputs (``NNNN_medium.png``) only those are taken (the others,
    a multi-frame set's ``_short`` / ``_long`` exposures say, are named in a log line); NTIRE
    ground truth (``*_gt.png``) and HDR results (a PNG beside its ``_alignratio.npy``) are
    never inputs.
    """
    path = Path(path)
    if path.is_file():
        if _is_ntire_gt(path):
            raise HDRUNetError(f"input {path}: an NTIRE ground-truth file, not an LDR input")
        if is_hdr_png(path):
            raise HDRUNetError(
                f"input {path}: an HDR image (a 16-bit PNG beside its "
                f"{alignratio_path_for(path).name}), not an LDR input"
            )
        if path.suffix.lower() in LINEAR_HDR_EXTENSIONS:
            raise HDRUNetError(
                f"input {path}: an HDR file already; the inputs are 8- or 16-bit LDR images "
                f"({', '.join(LDR_EXTENSIONS)})"
            )
        if path.suffix.lower() in UNREAD_IMAGE_SUFFIXES:
            raise HDRUNetError(f"input {_unread([path])}")
        return [path]
    if not path.is_dir():
        if path.exists() or path.is_symlink():  # a dangling link, a FIFO: never read
            raise HDRUNetError(f"input {path}: {not_a_file(path)}")
        raise HDRUNetError(f"input {path}: no such file or folder")
    files = sorted(
        p
        for p in path.iterdir()
        if p.suffix.lower() in LDR_EXTENSIONS and p.is_file() and not _is_ntire_gt(p)
    )
    unread = sorted(p for p in path.iterdir() if p.suffix.lower() in UNREAD_IMAGE_SUFFIXES)
    if unread and files:
        log.warning("input %s: %d file(s) left out: %s", path, len(unread), _unread(unread))
    broken = sorted(
        p.name
        for p in path.iterdir()
        if p.suffix.lower() in LDR_EXTENSIONS and p.is_symlink() and not p.exists()
    )
    if broken:
        log.warning(
            "input %s: %d symbolic link(s) that lead to no file (a loop?) left out: %s",
            path,
            len(broken),
            _listed(broken),
        )
    results = [p.name for p in files if is_hdr_png(p)]
    if results:
        log.warning(
            "input %s: %d HDR image(s) (16-bit PNGs beside their align ratio) are not LDR "
            "inputs and are left out: %s",
            path,
            len(results),
            _listed(results),
        )
        files = [p for p in files if p.name not in results]
    ntire = [p for p in files if _is_ntire(p, LDR_SUFFIX)]
    if ntire:
        others = [p.name for p in files if p not in ntire]
        if others:
            log.warning(
                "input %s holds NTIRE inputs (NNNN%s.png): only those are converted, not its "
                "%d other image(s): %s",
                path,
                LDR_SUFFIX,
                len(others),
                _listed(others),
            )
        return ntire
    if not files:
        if unread:
            raise HDRUNetError(f"input {path}: no images it reads; {_unread(unread)}")
        raise HDRUNetError(f"input {path}: no images ({', '.join(LDR_EXTENSIONS)})")
    return files


def check_output_folder(output: Path, inputs: list[Path]) -> None:
    """Refuse an output folder whose results could overwrite or be mistaken for inputs or
    ground truth: an input's own folder, or a folder holding NTIRE ``*_gt.png`` files."""
    if output.is_file():
        raise HDRUNetError(f"output {output}: is a file; give a folder for the results")
    if output.is_symlink() and not output.exists():  # checked before the network loads
        raise HDRUNetError(f"output {output}: a symbolic link that leads nowhere (a loop?)")
    if not output.is_dir():
        return
    resolved = output.resolve()
    if any(p.parent.resolve() == resolved for p in inputs):
        raise HDRUNetError(
            f"output {output}: is the input folder; results would mix with (or replace) the "
            "inputs. Give another folder"
        )
    # results of an input named like NTIRE ground truth (photo_gt.jpg -> photo_gt.png) are
    # this tool's own, recorded in the folder's manifest: a rerun may skip or replace them
    ours = OutputFolder(output, "hdrunet-predict")
    ground_truth = [p for p in sorted(output.glob("*.png")) if _is_ntire_gt(p) and not ours.owns(p)]
    if ground_truth:
        raise HDRUNetError(
            f"output {output}: holds NTIRE ground truth ({ground_truth[0].name}, ...); the "
            f"results' NNNN{ALIGNRATIO_SUFFIX} would replace the ground truth's. Give another "
            "folder"
        )


def output_stem(path: Path) -> str:
    """``0001_medium.png`` -> ``0001`` (NTIRE submission name); ``photo.jpg`` -> ``photo``,
    ``holiday_medium.png`` -> ``holiday_medium`` (a photo's name is kept)."""
    return path.stem.removesuffix(LDR_SUFFIX) if _is_ntire(path, LDR_SUFFIX) else path.stem


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
        rate = ""
        if n:
            # three significant digits (a slow frame's rate is not 0.00), no exponent
            fps = n / self.seconds
            shown = f"{fps:.0f}" if fps >= 100 else f"{fps:.3g}"
            rate = f", {self.seconds / n:.2f} s per image ({shown} frames/s)"
        lines = [
            f"{n} written, {len(self.skipped)} skipped (exist), {len(self.failed)} failed "
            f"in {self.seconds:.1f} s{rate}; peak memory {self.peak_memory_gb:.2f} GB"
        ]
        lines += [f"  failed: {why}" for why in self.failed.values()]
        return "\n".join(lines)


def read_input(path: Path) -> torch.Tensor:
    """(3, H, W) float LDR in [0, 1] of an input, read as this tool reads it: a photo turned
    upright by its EXIF orientation, an NTIRE frame as stored."""
    # an NTIRE input is read as stored, as its 16-bit GT is (pixel-aligned): an EXIF
    # orientation would turn the result against the GT; a photo is turned upright
    upright = not _is_ntire(path, LDR_SUFFIX)
    return torch.from_numpy(read_ldr(path, upright).transpose(2, 0, 1).copy())


def _unit(output: Path, stem: str, fmt: str, preview: bool) -> list[Path]:
    """The files one input's result is written to: the HDR (+ align ratio), the preview."""
    target = output / f"{stem}.{fmt}"
    unit = [target, alignratio_path_for(target)] if fmt == "png" else [target]
    if preview:
        unit.append(output / f"{stem}{PREVIEW_SUFFIX}.png")
    return unit


def _family(output: Path, stem: str) -> set[Path]:
    """Every file a result named ``stem`` may have in ``output`` (any format, a preview)."""
    return {*_unit(output, stem, "png", True), *(output / f"{stem}.{f}" for f in FORMATS)}


def _stems_of(path: Path) -> list[str]:
    """The result names whose files ``path`` can be: ``x_alignratio.npy`` is ``x``'s or
    ``x_gt``'s, ``x_preview.png`` is ``x``'s preview or the HDR of ``x_preview``."""
    name = path.name
    if name.endswith(ALIGNRATIO_SUFFIX):
        base = name.removesuffix(ALIGNRATIO_SUFFIX)
        return [base, base + GT_SUFFIX]
    if path.stem.endswith(PREVIEW_SUFFIX):
        return [path.stem, path.stem.removesuffix(PREVIEW_SUFFIX)]
    return [path.stem]


def taken_by_another_result(folder: OutputFolder, unit: list[Path], stem: str) -> str | None:
    """Why ``unit`` may not be written: one of its files belongs to another input's result
    written by an earlier run (``scene.png`` and ``scene_gt.png`` share
    ``scene_alignratio.npy``; ``photo_preview.png`` is a preview of ``photo`` or the HDR of
    ``photo_preview.jpg``), which it would leave broken (an align ratio replaced under its
    PNG). Files of the same name's own earlier results (other settings, another format, a
    preview) are not another result's. ``None`` when nothing is taken."""
    own = _family(folder.path, stem)
    for path in unit:
        # files recorded with this file's origin that belong to another name's result, whose
        # files include this one (inputs that are links to one file share an origin, but
        # not their results' files); the result's image named first (not its align ratio)
        others = sorted(
            (
                p
                for p in folder.partners(path)
                if p not in own and any(path in _family(folder.path, s) for s in _stems_of(p))
            ),
            key=lambda p: p.suffix == ".npy",
        )
        if others:
            return (
                f"{path.name} belongs to the result {others[0].name} of another input (an "
                "earlier run); writing it would break that result. Rename the input or "
                "choose another output folder"
            )
    return None


def _write(
    folder: OutputFolder, unit: list[Path], hdr: torch.Tensor, preview: bool, made_from: str
) -> None:
    """Write one input's result files under temporary names, then give them their names
    (:meth:`OutputFolder.place`): a run killed at any moment leaves nothing a re-run
    refuses."""
    temporaries = []
    try:
        for path in unit:
            temporaries.append(new_temporary(path))
        ratio = temporaries[1] if unit[0].suffix.lower() == ".png" else None
        write_hdr(temporaries[0], hdr.permute(1, 2, 0).numpy(), ratio)
        if preview:
            shown = display_mu_law(hdr).permute(1, 2, 0).numpy().astype(np.float32)
            write_ldr(temporaries[-1], shown)
        folder.place(unit, temporaries, made_from)
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


def _made_from(path: Path, settings: str) -> str:
    """The origin of ``path``'s result: the input file as it is now and ``settings``."""
    try:
        return origin(settings, file_identity(path))
    except OSError:  # gone: not done; reading it reports why
        return origin(settings, str(path), "unreadable")


def _failure(err: BaseException, target: Path) -> str | None:
    """The message of a per-file error (None for an error that should stop the run)."""
    if isinstance(err, HDRUNetError):
        return str(err)
    if isinstance(err, OSError):
        return f"{target}: {err.strerror}"
    return None


def plan_units(inputs: list[Path], output: Path, fmt: str, preview: bool) -> list[list[Path]]:
    """The files each input's result goes to; refuses an unknown format and inputs whose
    results would share a name (all such pairs at once)."""
    if fmt not in FORMATS:
        raise HDRUNetError(f"format must be one of {FORMATS}, got {fmt!r}")
    units = [_unit(output, output_stem(p), fmt, preview) for p in inputs]
    owner: dict[Path, Path] = {}
    clashes: list[str] = []
    for path, unit in zip(inputs, units, strict=True):
        for name in unit:  # e.g. photo.png and photo_preview.png with preview=true
            if owner.setdefault(name, path) != path:
                clashes.append(f"{owner[name]} and {path} would both write {name.name}")
                break
    if clashes:  # all of them at once: a folder of photos often has several
        more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
        raise HDRUNetError("; ".join(clashes[:3]) + more + "; rename one of each")
    return units


def predict_files(
    predictor: Predictor,
    inputs: list[Path],
    output: Path,
    fmt: str = "png",
    preview: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    read_ahead: int = 2,
    settings: str = "",
) -> PredictReport:
    """Convert every file in ``inputs``; see the module docstring for names and errors.

    ``settings``: what besides the input decides a result (the checkpoint and precision, as
    text); a result in ``output`` made from the same input and settings is skipped.

    A pipeline: up to ``read_ahead`` images are decoded in a thread while the network runs,
    and each result is encoded and written in another thread while the next one is
    computed (OpenCV releases the GIL), so decoding and encoding hide behind the network.
    Writers: one per spare CPU, up to 4 (for a GPU, whose frames come faster than one CPU
    encodes them); at most ``2 * writers`` results wait in memory. The results are the same
    as one image at a time.
    """
    units = plan_units(inputs, output, fmt, preview)
    check_output_folder(output, inputs)
    folder = OutputFolder(output, "hdrunet-predict", inputs)
    with folder.sole_writer():
        remove_dead_temporaries(output)  # of a killed run
        report = PredictReport()
        start = time.perf_counter()
        writes: list[tuple[Path, Path, Future]] = []

        def fail(path: Path, message: str) -> None:
            tqdm.write(f"skipped: {message}", file=sys.stderr)
            report.failed[path] = message

        jobs = []
        for path, unit in zip(inputs, units, strict=True):
            made_from = _made_from(path, settings)
            if not overwrite and folder.complete(unit, made_from):
                report.skipped.append(unit[0])
                continue
            try:  # a name the manifest cannot hold fails this image alone, as claim() does
                taken = taken_by_another_result(folder, unit, output_stem(path))
            except HDRUNetError as err:
                fail(path, str(err))
                continue
            if taken:
                fail(path, f"{path}: {taken}")
            else:
                jobs.append((path, unit, made_from))

        writers = max(1, min(4, available_cpus() - 1))
        with (
            ThreadPoolExecutor(1, thread_name_prefix="hdrunet-read") as reader,
            ThreadPoolExecutor(writers, thread_name_prefix="hdrunet-write") as writer,
        ):
            reads = deque(reader.submit(read_input, path) for path, *_ in jobs[:read_ahead])
            for i, (path, unit, made_from) in enumerate(
                tqdm(jobs, disable=not progress or not jobs, unit="image")  # none: no bar
            ):
                pending = reads.popleft()
                if i + read_ahead < len(jobs):
                    reads.append(reader.submit(read_input, jobs[i + read_ahead][0]))
                try:
                    folder.claim(unit)
                    hdr = predictor(pending.result()).clamp_min(0)
                except NonFiniteOutputError as err:
                    fail(path, f"{path}: {err}")
                    continue
                except (HDRUNetError, OSError) as err:
                    fail(path, _failure(err, unit[0]))
                    continue
                job = writer.submit(_write, folder, unit, hdr, preview, made_from)
                writes.append((path, unit[0], job))
                if len(writes) > 2 * writers:
                    wait([writes[-2 * writers - 1][2]])  # bound the results held in memory
            for path, target, done in writes:
                err = done.exception()
                if err is None:
                    report.written.append(target)
                elif _failure(err, target) is None:
                    raise err
                else:
                    fail(path, _failure(err, target))
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
    check_settings(cfg, PREDICT_RULES)
    inputs = list_inputs(cfg.input)
    # refusals before the checkpoint is loaded
    plan_units(inputs, Path(cfg.output), cfg.format, cfg.preview)
    check_output_folder(Path(cfg.output), inputs)
    check_writable(cfg.output)  # else each image would fail alone, after its decoding
    predictor = make_predictor(cfg)
    print(f"hdrunet-predict: {cfg.ckpt} on {predictor.device} ({predictor.dtype})")
    report = predict_files(
        predictor,
        inputs,
        Path(cfg.output),
        fmt=cfg.format,
        preview=cfg.preview,
        overwrite=cfg.overwrite,
        settings=(  # what decides a result besides its input (tiles change its rounding)
            f"checkpoint {file_identity(cfg.ckpt)}, {predictor.dtype}, tile {predictor.tile}, "
            f"overlap {predictor.overlap}, memory_gb {predictor.memory_gb}, "
            f"tile_batch {predictor.tile_batch}"
        ),
    )
    print(report.summary())
    return report


PREDICT_INTERRUPTED = "every result written is whole and kept: run the same command again to go on"
"""What ``hdrunet-predict`` says on Ctrl-C (a rerun skips the finished results)."""


def exit_on_error(func, interrupted: str = PREDICT_INTERRUPTED):
    """Run a tool's body; print a package error as one line and exit non-zero. On Ctrl-C,
    print ``interrupted`` (what the tool leaves behind, and how to go on) and exit 130."""

    def wrapper(cfg: DictConfig) -> None:
        try:
            result = func(cfg)
        except (HDRUNetError, ValueError) as err:
            print(f"{Path(sys.argv[0]).name}: error: {one_line(err)}", file=sys.stderr)
            sys.exit(2)
        except OSError as err:  # a file or folder that cannot be made, read or written
            where = f"{err.filename}: " if err.filename else ""
            print(f"{Path(sys.argv[0]).name}: error: {where}{err.strerror}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:  # the results being written were finished first
            print(f"{Path(sys.argv[0]).name}: interrupted; {interrupted}", file=sys.stderr)
            sys.exit(INTERRUPTED_STATUS)
        if getattr(result, "failed", None):
            sys.exit(1)

    return wrapper


if __name__ == "__main__":
    from hdrunet_pl.cli import predict as _main

    _main()
