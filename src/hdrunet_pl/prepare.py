"""``hdrunet-prepare``: cut NTIRE frames into sub-images, or write streaming shards.

hdrunet-prepare crop   --input NTIRE/train --output NTIRE/train_sub [--crop 480 --step 240]
hdrunet-prepare stream --input NTIRE/train_sub --output shards/ [--val-count 16]

``crop`` follows the public HDRUNet code: 480x480 crops at stride 240, plus a last crop
flush with the border where more than 48 pixels would otherwise be left out. The 16-bit GT
values and the align ratio are copied unchanged, so a sub-image holds exactly the frame's
values. Files are written under a temporary name and renamed; a re-run skips finished ones.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import multiprocessing
import os
import queue
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hdrunet_pl.data.ntire import NTIREDataset, NTIREPair, find_ntire_pairs, held_out_start
from hdrunet_pl.data.shards import check_shards
from hdrunet_pl.data.walk import folder_holding
from hdrunet_pl.errors import INTERRUPTED_STATUS, HDRUNetError
from hdrunet_pl.io import (
    ALIGNRATIO_SUFFIX,
    GT_SUFFIX,
    LDR_SUFFIX,
    atomic_path,
    encode_image,
    imread,
    process_gone,
    read_alignratio,
    read_hdr_png_codes,
    read_ldr_codes,
    remove_dead_temporaries,
)
from hdrunet_pl.outputs import OutputFolder, file_identity, origin
from hdrunet_pl.quiet import install_filters
from hdrunet_pl.resolvers import workers as cpu_workers
from hdrunet_pl.runtime import end_with_parent

log = logging.getLogger(__name__)

TOOL = "hdrunet-prepare"
CROP_SIZE = 480
CROP_STEP = 240
CROP_THRESHOLD = 48
BYTE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
"""``--chunk-bytes`` units, as litdata reads them (decimal; ``KB`` = ``K``)."""


def byte_count(text: str) -> int:
    """``--chunk-bytes``: a number of bytes, plain (``64000000``) or with a unit (``64MB``,
    ``1.5G``), at least 1."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)b?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a number of bytes, plain (64000000) or with a unit: 64MB, 1.5GB "
            "(B, KB, MB, GB, TB; powers of 1000)"
        )
    count = int(float(match[1]) * BYTE_UNITS[match[2].lower()])
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a chunk holds at least 1 byte")
    return count


def positive_int(text: str) -> int:
    """A whole number >= 1 (``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, 1 or more")
    return value


def crop_positions(
    size: int, crop: int = CROP_SIZE, step: int = CROP_STEP, threshold: int = CROP_THRESHOLD
) -> list[int]:
    """Start offsets of crops along one axis of ``size`` pixels (the public code's rule).

    Regular starts ``0, step, ...`` while a crop fits, then one crop flush with the far edge
    when more than ``threshold`` pixels would be left uncovered. Empty if ``size < crop``.
    """
    if crop < 1 or step < 1:
        raise ValueError(f"crop and step must be >= 1, got {crop}, {step}")
    if size < crop:
        return []
    starts = list(range(0, size - crop + 1, step))
    if size - (starts[-1] + crop) > threshold:
        starts.append(size - crop)
    return starts


def crop_boxes(
    height: int,
    width: int,
    crop: int = CROP_SIZE,
    step: int = CROP_STEP,
    threshold: int = CROP_THRESHOLD,
) -> list[tuple[int, int]]:
    """(top, left) of every crop of a ``height x width`` image, rows first, as numbered."""
    return [
        (top, left)
        for top in crop_positions(height, crop, step, threshold)
        for left in crop_positions(width, crop, step, threshold)
    ]


def _sub_names(output: Path, name: str, index: int) -> tuple[Path, Path, Path]:
    sub = f"{name}_s{index:03d}"
    return (
        output / f"{sub}{LDR_SUFFIX}.png",
        output / f"{sub}{GT_SUFFIX}.png",
        output / f"{sub}{ALIGNRATIO_SUFFIX}",
    )


def crop_pair(
    pair: NTIREPair,
    output: Path,
    crop: int = CROP_SIZE,
    step: int = CROP_STEP,
    threshold: int = CROP_THRESHOLD,
) -> tuple[int, int]:
    """Cut one pair into sub-images under ``output``; returns (written, skipped) counts.

    A sub-image (its three files) is skipped when this tool wrote all three before, from
    these same files with the same ``crop``, ``step`` and ``threshold`` (else it is cut
    again); a file of that name that it did not write stops the run instead of being
    written over. Sub-images of an earlier version of the frame beyond this cut's count
    (this tool's, unchanged) are removed.
    """
    folder = OutputFolder(output, TOOL, [pair.ldr, pair.gt, pair.alignratio])
    made_from = origin(
        *(file_identity(p) for p in (pair.ldr, pair.gt, pair.alignratio)),
        f"crop {crop}, step {step}, threshold {threshold}",
    )
    # the LDR's codes as training reads them (a colour profile converted to sRGB: the crop
    # carries none), in OpenCV's order for writing; the GT as stored
    ldr = np.ascontiguousarray(read_ldr_codes(pair.ldr, upright=False)[..., ::-1])
    gt = imread(pair.gt)
    read_alignratio(pair.alignratio)  # checked (one finite value > 0), then copied as stored
    ratio = pair.alignratio.read_bytes()
    written = skipped = 0
    boxes = crop_boxes(*ldr.shape[:2], crop, step, threshold)
    # sub-images beyond this cut's count come from an earlier version of the frame: gone
    kept = [p for index in range(1, len(boxes) + 1) for p in _sub_names(output, pair.name, index)]
    suffixes = (f"{LDR_SUFFIX}.png", f"{GT_SUFFIX}.png", ALIGNRATIO_SUFFIX)
    # as _sub_names numbers them: 3 digits, more from 1,000 on (a small --crop and --step
    # cut tens of thousands from one frame)
    digits = tuple("[0-9]" * n for n in range(3, 10))
    stale = [f"{glob.escape(pair.name)}_s{d}{suffix}" for d in digits for suffix in suffixes]
    folder.remove_stale(stale, kept)
    for index, (top, left) in enumerate(boxes, 1):
        ldr_path, gt_path, ratio_path = unit = _sub_names(output, pair.name, index)
        if folder.complete(unit, made_from):
            skipped += 1
            continue
        folder.claim(unit)
        for path in unit:  # ours (claimed): a file is recorded before it takes its name
            path.unlink(missing_ok=True)
        window = (slice(top, top + crop), slice(left, left + crop))
        folder.write_bytes(
            gt_path, encode_image(gt_path, np.ascontiguousarray(gt[window])), made_from
        )
        folder.write_bytes(ratio_path, ratio, made_from)  # as stored: a float64 one stays
        # the LDR last: until it is there, the sub-image is not done
        folder.write_bytes(
            ldr_path, encode_image(ldr_path, np.ascontiguousarray(ldr[window])), made_from
        )
        written += 1
    return written, skipped


def _crop_job(args: tuple[NTIREPair, Path, int, int, int]) -> tuple[int, int]:
    return crop_pair(*args)


def _worker_start(parent: int) -> None:
    """Start of a worker process (crop's, the stream's manager): Ctrl-C reaches the whole
    process group, but the parent stops the work (letting each started frame finish); and
    the worker ends with its parent, killed or not (:func:`end_with_parent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent(parent)


class Interrupted(HDRUNetError):
    """Ctrl-C: the work done so far is kept (finished files), the rest is for a re-run."""


def _remove_frames_gone(folder: OutputFolder, output: Path, frames: set[str]) -> list[Path]:
    """Delete this tool's sub-images of frames no longer in the input (moved to a validation
    folder, say): kept, they would still be trained on. A sub-image is removed whole, or,
    when one of its files was changed since (or is not this tool's), kept whole and named."""
    suffixes = (f"{LDR_SUFFIX}.png", f"{GT_SUFFIX}.png", ALIGNRATIO_SUFFIX)
    units: dict[str, list[Path]] = {}
    for suffix in suffixes:
        for path in output.glob(f"*_s[0-9][0-9][0-9]*{suffix}"):
            sub = path.name.removesuffix(suffix)
            frame, _, index = sub.rpartition("_s")
            if index.isdigit() and frame not in frames:
                units.setdefault(sub, []).append(path)
    gone = []
    for sub, paths in sorted(units.items()):
        if all(folder.owns(p) and not p.is_symlink() for p in paths):
            gone += [glob.escape(p.name) for p in paths]
        else:
            log.warning(
                "%s: a sub-image of a frame no longer in --input, kept: changed since this "
                "tool cut it; remove its files (%s) if it should not be trained on",
                output / sub,
                ", ".join(sub + s for s in suffixes),
            )
    return folder.remove_stale(gone, keep=[])


def run_crop(
    input_dir: str, output_dir: str, crop: int, step: int, threshold: int, workers: int
) -> tuple[int, int]:
    """Cut every pair under ``input_dir``; returns (written, skipped) sub-image counts.
    Ctrl-C lets the frames being cut finish, then raises :class:`Interrupted`."""
    if min(crop, step) < 1 or threshold < 0:
        raise HDRUNetError(
            f"--crop and --step must be >= 1 and --threshold >= 0, got {crop}, {step}, {threshold}"
        )
    output = Path(output_dir)
    _refuse_output_inside_input(Path(input_dir), output)
    found = find_ntire_pairs(input_dir, "--input")
    target = output.resolve()
    if Path(input_dir).resolve().is_relative_to(target):
        raise HDRUNetError(
            f"--input {input_dir} lies inside the --output folder {output_dir}: the sub-images "
            "would mix with the frames (a data set read from the output folder reads its "
            "subfolders too); give an --output outside it"
        )
    reached = [p.ldr for p in found if p.ldr.resolve().is_relative_to(target)]
    if reached:  # through a symbolic link in the input tree: its sub-images would be cut
        raise HDRUNetError(
            f"--input {input_dir} reaches the --output folder through a link ({reached[0]}); "
            "its files would mix with the data set. Remove the link or give another --output"
        )
    pairs = NTIREDataset(found, min_size=crop, size_name="crop (--crop)").pairs
    settings = {"crop": crop, "step": step, "threshold": threshold}
    jobs = [(pair, output, crop, step, threshold) for pair in pairs]
    written = skipped = 0
    # the folder is made (or refused) before the workers start, and held while they cut
    with OutputFolder(output, TOOL).sole_writer() as folder:
        _check_crop_settings(output, settings | {"input": str(Path(input_dir).resolve())})
        remove_dead_temporaries(output)  # of a killed run
        _remove_frames_gone(folder, output, {pair.name for pair in pairs})
        pool = ProcessPoolExecutor(
            max_workers=max(1, min(cpu_workers(workers), len(jobs))),
            initializer=_worker_start,
            initargs=(os.getpid(),),
        )
        try:
            futures = [pool.submit(_crop_job, job) for job in jobs]
            for done in tqdm(as_completed(futures), total=len(jobs), desc="crop", unit="image"):
                w, s = done.result()
                written, skipped = written + w, skipped + s
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)  # the started frames finish
            counts = [
                f.result() for f in futures if f.done() and not f.cancelled() and not f.exception()
            ]
            written, skipped = (sum(c[i] for c in counts) for i in (0, 1))
            raise Interrupted(
                f"interrupted: {written} sub-images written, {skipped} already there; run the "
                "same command again to go on"
            ) from None
        except BrokenProcessPool:  # a worker killed (out of memory?): the rest is for a re-run
            pool.shutdown(wait=True, cancel_futures=True)
            raise HDRUNetError(
                "a worker process ended abruptly (killed? out of memory?); the finished "
                "sub-images are kept: run the same command again to go on (fewer --workers "
                "take less memory)"
            ) from None
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return written, skipped


CROP_SETTINGS = ".hdrunet-crop.json"
"""The settings the sub-images of a ``crop`` output folder were cut with."""


def _check_crop_settings(output: Path, settings: dict[str, int | str]) -> None:
    """Record ``settings`` (the cut's and the input folder) in a new output folder; refuse
    a folder cut with others, or cut before they were recorded: its sub-images would be
    kept as done, under names that now mean other positions or other frames."""
    record = output / CROP_SETTINGS
    if record.is_file():
        try:
            earlier = json.loads(record.read_text())
            given = " ".join(f"--{key} {value}" for key, value in earlier.items())
        except (OSError, ValueError, AttributeError):
            earlier, given = None, "unknown settings"
        if isinstance(earlier, dict) and earlier.keys() != settings.keys():
            raise HDRUNetError(
                f"--output {output}: its {record.name} records {', '.join(earlier)}, not "
                f"{', '.join(settings)}; give another --output"
            )
        if earlier != settings:
            raise HDRUNetError(
                f"--output {output} holds sub-images cut with {given} ({record.name}); give "
                "the same settings to go on, or another --output"
            )
        return
    made = (f"*{LDR_SUFFIX}.png", f"*{GT_SUFFIX}.png", f"*{ALIGNRATIO_SUFFIX}")
    if any(next(output.glob(pattern), None) for pattern in made):
        raise HDRUNetError(
            f"--output {output} holds sub-images cut before their settings were recorded; "
            "give another --output (or empty this one)"
        )
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(settings) + "\n")


def _refuse_output_inside_input(input_dir: Path, output: Path) -> None:
    """Results inside the input tree (symlinked subfolders included) would be read as data
    by the next run: refused."""
    holder = folder_holding(input_dir, output)
    if holder is not None:
        how = "" if holder == input_dir else f" (through {holder}, a symbolic link)"
        raise HDRUNetError(
            f"--output {output} is inside --input {input_dir}{how}; its files would mix with "
            "the data set. Give a folder outside it"
        )


def load_pair_record(pair: tuple[str, str, str, str]) -> dict:
    """One NTIRE pair as a streaming record: the LDR's RGB codes as stored (uint8, or uint16
    for a 16-bit LDR), the GT's uint16 RGB codes and the align ratio; grey repeated and alpha
    dropped as the ``ntire2021`` data set reads them."""
    name, ldr_path, gt_path, ratio_path = pair
    return {
        "name": name,
        "ldr": read_ldr_codes(ldr_path, upright=False),
        "gt": read_hdr_png_codes(gt_path),
        "alignratio": float(read_alignratio(ratio_path)),
    }


class _CountingLoader:
    """:func:`load_pair_record` that also reports each finished pair on ``done`` (a
    multiprocessing manager's queue, which litdata's spawned workers can use)."""

    def __init__(self, done: Any) -> None:
        self.done = done

    def __call__(self, pair: tuple[str, str, str, str]) -> dict:
        record = load_pair_record(pair)
        self.done.put(1)
        return record


def _follow(done: Any, bar: tqdm, stop: threading.Event) -> None:
    """Advance ``bar`` for every pair reported on ``done`` until ``stop`` and drained."""
    while not (stop.is_set() and done.empty()):
        try:
            done.get(timeout=0.2)
        except queue.Empty:
            continue
        bar.update(1)


LITDATA_CACHE_VARIABLES = ("DATA_OPTIMIZER_CACHE_FOLDER", "DATA_OPTIMIZER_DATA_CACHE_FOLDER")
"""Where ``litdata.optimize`` keeps its working folders (default: ``chunks/`` and ``data/``
in the temp folder, left there empty)."""


def _started_manager() -> SyncManager:
    """A multiprocessing manager (for the progress queue) whose process ends with this one."""
    manager = SyncManager()
    manager.start(_worker_start, (os.getpid(),))
    return manager


@contextlib.contextmanager
def _python_interrupts() -> Iterator[None]:
    """Keep Python's own Ctrl-C (KeyboardInterrupt) while ``litdata.optimize`` runs: it
    installs a handler that ends the process at once with status 0, leaving a partial
    shard set, its manager process and no word of what happened. Its ``signal.signal``
    calls for SIGINT are ignored for the time being; the others pass. After Ctrl-C its
    worker processes are stopped before the interrupt goes on."""
    from litdata.processing import data_processor

    real = data_processor.signal

    class Signals:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def signal(signum: int, handler: Any) -> Any:
            if signum == real.SIGINT:
                return real.getsignal(signum)
            return real.signal(signum, handler)

    data_processor.signal = Signals()
    try:
        yield
    except KeyboardInterrupt:
        # litdata's workers (this process's children): stopped and waited for, so that none
        # is left running, nor starts up after this process has gone (with a traceback)
        for child in multiprocessing.active_children():
            child.terminate()
            child.join()
        raise
    finally:
        data_processor.signal = real


SCRATCH_PREFIX = "hdrunet-prepare-"
"""Name of ``prepare stream``'s scratch folders in the temp folder: ``<prefix><pid>-...``."""


@contextlib.contextmanager
def _litdata_scratch() -> Iterator[None]:
    """Give litdata's working folders a temporary home that is removed afterwards (unless
    the user set them); its spawned workers inherit the environment. Homes left by killed
    runs (their process gone) are removed first."""
    unset = [name for name in LITDATA_CACHE_VARIABLES if name not in os.environ]
    for left in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = left.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if pid.isdigit() and left.is_dir() and not left.is_symlink() and process_gone(pid):
            shutil.rmtree(left, ignore_errors=True)
    prefix = f"{SCRATCH_PREFIX}{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        for name in unset:
            os.environ[name] = str(Path(scratch, name.lower()))
        try:
            yield
        finally:
            for name in unset:
                os.environ.pop(name, None)


def run_stream(
    input_dir: str, output_dir: str, val_count: int, chunk_bytes: int | str, workers: int
) -> dict[str, int]:
    """Write ``train/`` and ``val/`` litdata shards of the pairs under ``input_dir``, with a
    progress bar over all pairs (litdata's own, verbose output stays off)."""
    import litdata

    pairs = NTIREDataset(find_ntire_pairs(input_dir, "--input")).pairs
    if not 0 <= val_count < len(pairs):
        raise HDRUNetError(f"--val-count must be in [0, {len(pairs)}), got {val_count}")
    cut = held_out_start(pairs, val_count, "--val-count") if val_count else len(pairs)
    split = {"train": pairs[:cut], "val": pairs[cut:]}
    output = Path(output_dir)
    inputs = [f for p in pairs for f in (p.ldr, p.gt, p.alignratio)]
    folder = OutputFolder(output, TOOL)
    with folder.sole_writer():
        for part in split:  # every refusal before anything is written
            _check_shard_target(folder, output / part, inputs)
        counts = {}
        with (
            _litdata_scratch(),
            _python_interrupts(),
            _started_manager() as manager,
            tqdm(total=len(pairs), desc="stream", unit="pair") as bar,
        ):
            done, stop = manager.Queue(), threading.Event()
            follower = threading.Thread(target=_follow, args=(done, bar, stop), daemon=True)
            follower.start()
            try:
                for part, members in split.items():
                    if not members:  # an earlier split's shards (ours, checked above) must go:
                        _remove_shards(output / part)  # they hold pairs now in train/
                        continue
                    target = output / part
                    partial = output / f".{part}.partial"
                    folder.claim([target, partial])
                    _remove_shards(partial)
                    bar.set_postfix_str(part)
                    litdata.optimize(
                        fn=_CountingLoader(done),
                        inputs=[
                            (p.name, str(p.ldr), str(p.gt), str(p.alignratio)) for p in members
                        ],
                        output_dir=str(partial),
                        chunk_bytes=chunk_bytes,
                        num_workers=max(1, cpu_workers(workers)),
                        mode="overwrite",
                        verbose=False,
                    )
                    check_shards(partial, expected=len(members))
                    _remove_shards(target)  # ours (checked above): replaced as a whole
                    partial.rename(target)
                    counts[part] = len(members)
            finally:
                stop.set()
                follower.join()
        return counts


_WORKER_INDEX = re.compile(r"\d+\.index\.json")
"""A litdata worker's index (``0.index.json``), merged into ``index.json`` at the end."""


def _litdata_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(litdata's files, other files) directly in ``folder``."""
    ours, others = [], []
    for path in sorted(folder.iterdir()):
        is_shard = (
            path.name == "index.json"
            or (path.name.startswith("chunk-") and path.suffix == ".bin")
            or _WORKER_INDEX.fullmatch(path.name) is not None  # a stopped run's partial index
        )
        (ours if is_shard and path.is_file() else others).append(path)
    return ours, others


def _check_shard_target(folder: OutputFolder, target: Path, inputs: list[Path]) -> None:
    """Refuse a shard folder that is not this tool's, holds other files, or holds inputs."""
    if any(p.resolve().is_relative_to(target.resolve()) for p in inputs):
        raise HDRUNetError(
            f"{target}: holds the input pairs; shards would replace them. Give another --output"
        )
    if not target.exists():
        return
    if not folder.owns(target):
        raise HDRUNetError(
            f"{target}: exists and was not written by {TOOL}; not replaced (move it, or "
            "choose another --output)"
        )
    others = _litdata_files(target)[1] if target.is_dir() else [target]
    if others:
        raise HDRUNetError(
            f"{target}: holds files that are not shards ({others[0].name}, ...); not replaced"
        )


def _remove_shards(folder: Path) -> None:
    """Delete a shard folder written by this tool: its litdata files, then the folder."""
    if not folder.exists():
        return
    shards, others = _litdata_files(folder)
    if others:
        raise HDRUNetError(f"{folder}: holds files that are not shards; not removed")
    for path in shards:
        path.unlink()
    folder.rmdir()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hdrunet-prepare", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    crop = sub.add_parser("crop", help="cut NTIRE frames into sub-images (the public rule)")
    crop.add_argument("--input", required=True, help="folder with NTIRE pairs")
    crop.add_argument("--output", required=True, help="folder for the sub-images")
    crop.add_argument(
        "--crop", type=int, default=CROP_SIZE, help="side of a sub-image (px; default %(default)s)"
    )
    crop.add_argument(
        "--step", type=int, default=CROP_STEP, help="stride between crops (px; default %(default)s)"
    )
    crop.add_argument(
        "--threshold",
        type=int,
        default=CROP_THRESHOLD,
        help="add a crop flush with the border when more pixels than this are left out "
        "(default %(default)s)",
    )
    crop.add_argument(
        "--workers",
        type=positive_int,
        default=2,
        help="processes cutting frames, at most the CPUs (default %(default)s)",
    )
    stream = sub.add_parser("stream", help="write litdata shards (train/ and val/)")
    stream.add_argument("--input", required=True, help="folder with NTIRE pairs")
    stream.add_argument("--output", required=True, help="local folder for the shards")
    stream.add_argument(
        "--val-count", type=int, default=16, help="pairs written to val/ (default %(default)s)"
    )
    stream.add_argument(
        "--chunk-bytes",
        type=byte_count,
        default="64MB",
        help="size of a litdata chunk file: bytes, or with a unit (default %(default)s)",
    )
    stream.add_argument(
        "--workers",
        type=positive_int,
        default=2,
        help="litdata worker processes, at most the CPUs (default %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    install_filters()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "crop":
            written, skipped = run_crop(
                args.input, args.output, args.crop, args.step, args.threshold, args.workers
            )
            print(f"{written} sub-images written, {skipped} already there, in {args.output}")
        else:
            counts = run_stream(
                args.input, args.output, args.val_count, args.chunk_bytes, args.workers
            )
            print(", ".join(f"{n} {part} pairs" for part, n in counts.items()), "in", args.output)
    except Interrupted as err:
        print(f"hdrunet-prepare: {err}", file=sys.stderr)
        return INTERRUPTED_STATUS
    except KeyboardInterrupt:
        print(
            f"hdrunet-prepare: interrupted; run the same command again to go on ({args.command} "
            "starts its unfinished part again)",
            file=sys.stderr,
        )
        return INTERRUPTED_STATUS
    except HDRUNetError as err:
        print(f"hdrunet-prepare: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only or full output folder, outside the checked writes
        where = err.filename or args.output
        print(f"hdrunet-prepare: error: {where}: {err.strerror or err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
