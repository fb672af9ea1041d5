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
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hdrunet_pl.data.ntire import NTIREDataset, NTIREPair, find_ntire_pairs
from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.io import (
    ALIGNRATIO_SUFFIX,
    GT_SUFFIX,
    LDR_SUFFIX,
    atomic_path,
    imread,
    imwrite,
    read_alignratio,
)

CROP_SIZE = 480
CROP_STEP = 240
CROP_THRESHOLD = 48


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
    """Cut one pair into sub-images under ``output``; returns (written, skipped) counts."""
    ldr = imread(pair.ldr)
    gt = imread(pair.gt)
    ratio = np.float32(read_alignratio(pair.alignratio))
    written = skipped = 0
    for index, (top, left) in enumerate(crop_boxes(*ldr.shape[:2], crop, step, threshold), 1):
        ldr_path, gt_path, ratio_path = _sub_names(output, pair.name, index)
        if ldr_path.exists() and gt_path.exists() and ratio_path.exists():
            skipped += 1
            continue
        window = (slice(top, top + crop), slice(left, left + crop))
        imwrite(gt_path, np.ascontiguousarray(gt[window]))
        with atomic_path(ratio_path) as tmp:
            np.save(tmp, ratio)
        imwrite(ldr_path, np.ascontiguousarray(ldr[window]))  # last: marks the sub-image done
        written += 1
    return written, skipped


def _crop_job(args: tuple[NTIREPair, Path, int, int, int]) -> tuple[int, int]:
    return crop_pair(*args)


def run_crop(
    input_dir: str, output_dir: str, crop: int, step: int, threshold: int, workers: int
) -> tuple[int, int]:
    """Cut every pair under ``input_dir``; returns (written, skipped) sub-image counts."""
    pairs = NTIREDataset(find_ntire_pairs(input_dir), min_size=crop).pairs
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    jobs = [(pair, output, crop, step, threshold) for pair in pairs]
    written = skipped = 0
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        progress = tqdm(pool.map(_crop_job, jobs), total=len(jobs), desc="crop", unit="image")
        for w, s in progress:
            written, skipped = written + w, skipped + s
    return written, skipped


def load_pair_record(pair: tuple[str, str, str, str]) -> dict:
    """One NTIRE pair as a streaming record: raw RGB uint8 LDR, uint16 GT and align ratio."""
    name, ldr_path, gt_path, ratio_path = pair
    ldr = imread(Path(ldr_path))[..., ::-1]
    gt = imread(Path(gt_path))[..., ::-1]
    return {
        "name": name,
        "ldr": np.ascontiguousarray(ldr),
        "gt": np.ascontiguousarray(gt),
        "alignratio": float(read_alignratio(ratio_path)),
    }


def run_stream(
    input_dir: str, output_dir: str, val_count: int, chunk_bytes: str, workers: int
) -> dict[str, int]:
    """Write ``train/`` and ``val/`` litdata shards of the pairs under ``input_dir``."""
    import litdata

    pairs = NTIREDataset(find_ntire_pairs(input_dir)).pairs
    if not 0 <= val_count < len(pairs):
        raise HDRUNetError(f"--val-count must be in [0, {len(pairs)}), got {val_count}")
    split = {"train": pairs[: len(pairs) - val_count], "val": pairs[len(pairs) - val_count :]}
    counts = {}
    for part, members in split.items():
        if not members:
            continue
        target = Path(output_dir) / part
        if target.exists():
            shutil.rmtree(target)  # litdata refuses to write into a non-empty folder
        litdata.optimize(
            fn=load_pair_record,
            inputs=[(p.name, str(p.ldr), str(p.gt), str(p.alignratio)) for p in members],
            output_dir=str(target),
            chunk_bytes=chunk_bytes,
            num_workers=max(1, workers),
            mode="overwrite",
            verbose=False,
        )
        counts[part] = len(members)
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hdrunet-prepare", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    crop = sub.add_parser("crop", help="cut NTIRE frames into sub-images (the public rule)")
    crop.add_argument("--input", required=True, help="folder with NTIRE pairs")
    crop.add_argument("--output", required=True, help="folder for the sub-images")
    crop.add_argument("--crop", type=int, default=CROP_SIZE)
    crop.add_argument("--step", type=int, default=CROP_STEP)
    crop.add_argument("--threshold", type=int, default=CROP_THRESHOLD)
    crop.add_argument("--workers", type=int, default=2)
    stream = sub.add_parser("stream", help="write litdata shards (train/ and val/)")
    stream.add_argument("--input", required=True, help="folder with NTIRE pairs")
    stream.add_argument("--output", required=True, help="local folder for the shards")
    stream.add_argument("--val-count", type=int, default=16, help="pairs written to val/")
    stream.add_argument("--chunk-bytes", default="64MB")
    stream.add_argument("--workers", type=int, default=2)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
    except HDRUNetError as err:
        print(f"hdrunet-prepare: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
