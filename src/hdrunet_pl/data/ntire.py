"""NTIRE 2021 single-frame pairs: ``NNNN_medium.png``, ``NNNN_gt.png``, ``NNNN_alignratio.npy``.

Pairs are found by name anywhere under a root folder (one folder, or the public code's
``medium/``, ``gt/``, ``alignratio/`` split) and checked when the data set is built, from
PNG headers and the small ``.npy`` files, so that a bad pair stops the run at start-up.
Images are decoded lazily, in the DataLoader workers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hdrunet_pl.data.sampling import SampleKey, split_key
from hdrunet_pl.data.walk import files_under
from hdrunet_pl.errors import DatasetError, HDRUNetError
from hdrunet_pl.io import (
    ALIGNRATIO_SUFFIX,
    GT_SUFFIX,
    LDR_SUFFIX,
    png_info,
    read_alignratio,
    read_hdr_png,
    read_ldr,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NTIREPair:
    """The three files of one NTIRE frame (or sub-image) ``name``."""

    name: str
    ldr: Path
    gt: Path
    alignratio: Path


def _index(paths: Iterable[Path], suffix: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        name = path.name[: -len(suffix)]
        if name in found:
            raise DatasetError(f"two files for frame {name!r}: {found[name]} and {path}")
        found[name] = path
    return found


def find_ntire_pairs(root: str | Path, setting: str = "data.root") -> list[NTIREPair]:
    """Every complete NTIRE pair under ``root``, sorted by name; ``setting`` is the option
    that gave ``root``, named when the folder is missing.

    Raises :class:`DatasetError` listing every LDR without GT or align ratio, GT without
    LDR, or an empty folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (set {setting} to the NTIRE data)")
    files = list(files_under(root))
    ldrs = _index((p for p in files if p.name.endswith(f"{LDR_SUFFIX}.png")), f"{LDR_SUFFIX}.png")
    gts = _index((p for p in files if p.name.endswith(f"{GT_SUFFIX}.png")), f"{GT_SUFFIX}.png")
    ratios = _index((p for p in files if p.name.endswith(ALIGNRATIO_SUFFIX)), ALIGNRATIO_SUFFIX)
    if not ldrs and not gts:
        raise DatasetError(
            f"{root}: no NTIRE pairs (NNNN{LDR_SUFFIX}.png + NNNN{GT_SUFFIX}.png "
            f"+ NNNN{ALIGNRATIO_SUFFIX}) in this folder or below"
        )
    problems = [
        f"{gts[n]}: GT without its LDR partner {n}{LDR_SUFFIX}.png"
        for n in gts.keys() - ldrs.keys()
    ]
    pairs = []
    for name in sorted(ldrs):
        if name not in gts:
            problems.append(f"{ldrs[name]}: LDR without its GT partner {name}{GT_SUFFIX}.png")
        elif name not in ratios:
            problems.append(f"{gts[name]}: no align ratio file {name}{ALIGNRATIO_SUFFIX}")
        else:
            pairs.append(NTIREPair(name, ldrs[name], gts[name], ratios[name]))
    DatasetError.check(root, problems)
    return pairs


def check_pair(pair: NTIREPair, min_size: int = 0, size_name: str = "patch") -> list[str]:
    """Problems of one pair found from headers and the align ratio (empty when it is fine)."""
    try:
        ldr, gt = png_info(pair.ldr), png_info(pair.gt)
        read_alignratio(pair.alignratio)
    except HDRUNetError as err:
        return [str(err)]
    problems = []
    if gt.bit_depth != 16:
        problems.append(f"{pair.gt}: {gt.bit_depth}-bit GT; the HDR needs a 16-bit PNG")
    if ldr.bit_depth not in (8, 16):
        problems.append(f"{pair.ldr}: {ldr.bit_depth}-bit LDR; need 8 bits")
    if (ldr.height, ldr.width) != (gt.height, gt.width):
        problems.append(
            f"{pair.ldr}: LDR is {ldr.height}x{ldr.width} but its GT is {gt.height}x{gt.width}"
        )
    if min(ldr.height, ldr.width) < min_size:
        problems.append(
            f"{pair.ldr}: {ldr.height}x{ldr.width} is smaller than the {min_size}x{min_size} "
            f"{size_name}; choose a smaller {size_name} or remove the image"
        )
    return problems


def pair_to_tensors(ldr: np.ndarray, hdr: np.ndarray, name: str) -> dict[str, torch.Tensor | str]:
    """``(H, W, 3)`` arrays -> the package's pair item ``{"ldr", "hdr", "name"}`` of (3, H, W)."""
    return {
        "ldr": torch.from_numpy(np.ascontiguousarray(ldr.transpose(2, 0, 1))),
        "hdr": torch.from_numpy(np.ascontiguousarray(hdr.transpose(2, 0, 1))),
        "name": name,
    }


class NTIREDataset(Dataset):
    """NTIRE pairs as items ``{"ldr": (3, H, W) in [0, 1], "hdr": (3, H, W) non-linear, "name"}``.

    Args:
        pairs: the pairs to serve (see :func:`find_ntire_pairs`).
        min_size: every image must be at least this tall and wide (the training patch).
        size_name: what ``min_size`` is, for messages (``patch``, ``crop (--crop)``).
        validate: check every pair's headers and align ratio now (fast; no decoding).
    """

    def __init__(
        self,
        pairs: list[NTIREPair],
        min_size: int = 0,
        validate: bool = True,
        size_name: str = "patch",
    ) -> None:
        if not pairs:
            raise DatasetError("no NTIRE pairs to serve")
        if validate:
            problems = [p for pair in pairs for p in check_pair(pair, min_size, size_name)]
            DatasetError.check(pairs[0].ldr.parent, problems)
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor | str]:
        pair = self.pairs[split_key(key)[0]]
        ldr = read_ldr(pair.ldr, upright=False)  # as its GT: pixel-aligned as stored
        hdr = read_hdr_png(pair.gt, pair.alignratio)
        if not 0 < hdr.max() < np.inf:
            raise DatasetError(f"{pair.gt}: the ground truth is all black; remove the pair")
        if ldr.shape != hdr.shape:
            raise DatasetError(f"{pair.ldr}: LDR {ldr.shape[:2]} and GT {hdr.shape[:2]} differ")
        return pair_to_tensors(ldr, hdr, pair.name)


_SUB_IMAGE = re.compile(r"(.+)_s\d{3,}")
"""A sub-image's name as ``hdrunet-prepare crop`` writes it: ``<frame>_s<index>``."""


def frame_of(name: str) -> str:
    """The frame a pair comes from: ``0004`` for the sub-image ``0004_s007``, else the
    pair's own name."""
    match = _SUB_IMAGE.fullmatch(name)
    return match.group(1) if match else name


def held_out_start(pairs: list[NTIREPair], val_count: int, setting: str) -> int:
    """Where the last ``val_count`` pairs (by name) start, moved back to the first
    sub-image of their first frame: neighbouring sub-images of a frame overlap (by half at
    the public rule), so no frame is split between training and validation. Says so when
    it holds out more than ``val_count``; refuses when that leaves nothing to train on."""
    cut = len(pairs) - val_count
    frame = frame_of(pairs[cut].name)
    while cut > 0 and frame_of(pairs[cut - 1].name) == frame:
        cut -= 1
    if cut == 0:
        first = sum(frame_of(p.name) == frame_of(pairs[0].name) for p in pairs)
        if first == len(pairs):
            raise DatasetError(
                f"{setting}={val_count}: every pair is a sub-image of frame {frame}, which is "
                "not split between training and validation; give a validation folder"
            )
        raise DatasetError(
            f"{setting}={val_count} reaches into the first frame, and a frame's sub-images are "
            f"not split between training and validation: give at most {len(pairs) - first}"
        )
    if cut < len(pairs) - val_count:
        log.warning(
            "%s=%d holds out %d pairs: all %d sub-images of frame %s (overlapping crops of one "
            "frame never go to both training and validation)",
            setting,
            val_count,
            len(pairs) - cut,
            sum(frame_of(p.name) == frame for p in pairs),
            frame,
        )
    return cut


def split_pairs(pairs: list[NTIREPair], val_count: int) -> tuple[list[NTIREPair], list[NTIREPair]]:
    """Hold the last ``val_count`` pairs (by name) out for validation, with every other
    sub-image of their frames (:func:`held_out_start`)."""
    if not 0 < val_count < len(pairs):
        raise DatasetError(
            f"cannot hold out {val_count} of {len(pairs)} pairs for validation; "
            "set data.val_count between 1 and the number of pairs - 1, or data.val_root"
        )
    cut = held_out_start(pairs, val_count, "data.val_count")
    return pairs[:cut], pairs[cut:]
