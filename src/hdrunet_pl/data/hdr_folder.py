"""Any folder of linear HDR images; the LDR inputs are synthesised with the camera model.

Files: ``.exr``, ``.hdr`` and NTIRE ``*_gt.png`` (+ align ratio) pairs, found recursively.
Each item is captured by :class:`~hdrunet_pl.camera.CameraModel` with settings drawn per
sample (training) or fixed per image index (validation), exactly as ``data=synthetic``.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from hdrunet_pl.camera import CameraModel
from hdrunet_pl.data.datamodule import HDRDataModule
from hdrunet_pl.data.sampling import SampleKey, item_generator, split_key
from hdrunet_pl.data.synthetic import scene_generator
from hdrunet_pl.data.walk import files_under
from hdrunet_pl.errors import DatasetError, HDRUNetError
from hdrunet_pl.io import (
    LINEAR_HDR_EXTENSIONS,
    NEGATIVE,
    alignratio_path_for,
    hdr_image_size,
    is_hdr_ground_truth,
    read_linear_hdr,
)
from hdrunet_pl.metrics import BLACK_GROUND_TRUTH, is_black
from hdrunet_pl.resolvers import available_cpus

log = logging.getLogger(__name__)

PANORAMAS = "panoramas"
"""``rows`` value: the middle half of an equirectangular panorama's rows (an image twice as
wide as it is tall), away from the stretched poles; every row of any other image."""
PANORAMA_BAND = (0.25, 0.75)

Rows = tuple[float, float] | str | None


def find_hdr_files(root: str | Path) -> list[Path]:
    """Every linear HDR file (``.exr``, ``.hdr``, ``.pic``, ``.rgbe``, ``.pfm``) and NTIRE
    ``*_gt.png`` under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (set data.root to a folder of HDR images)")
    not_files: list[Path] = []
    files = sorted(p for p in files_under(root, not_files) if is_hdr_ground_truth(p))
    unread = sorted(p for p in not_files if is_hdr_ground_truth(p))
    if unread:  # a data set smaller than its folder looks: say so
        log.warning(
            "%s: %d HDR name(s) that are no readable files (a link that leads nowhere, a "
            "pipe), left out: %s",
            root,
            len(unread),
            ", ".join(str(p.relative_to(root)) for p in unread[:5]),
        )
    if not files:
        raise DatasetError(
            f"{root}: no HDR images ({', '.join(LINEAR_HDR_EXTENSIONS)} or NTIRE *_gt.png) found"
        )
    return files


def item_names(files: list[Path]) -> list[str]:
    """A name per file for scores, previews and side-by-sides: its stem, or where two files
    share a stem (``a/scene.exr``, ``b/scene.hdr``), its path below the files' common folder
    with ``__`` for each separator (``a__scene``), and the suffix if that still repeats."""
    stems = Counter(p.stem for p in files)
    if len(files) < 2 or max(stems.values()) == 1:
        return [p.stem for p in files]
    common = Path(os.path.commonpath([p.parent for p in files]))

    def relative(path: Path, suffix: bool) -> str:
        name = path.relative_to(common).as_posix()
        return (name if suffix else name[: -len(path.suffix) or None]).replace("/", "__")

    names = [p.stem if stems[p.stem] == 1 else relative(p, suffix=False) for p in files]
    repeated = Counter(names)
    names = [
        n if repeated[n] == 1 else relative(p, suffix=True)
        for n, p in zip(names, files, strict=True)
    ]
    repeated = Counter(names)  # only for names built to collide (a__b.exr beside a/b.exr)
    return [n if repeated[n] == 1 else f"{n}_{i:04d}" for i, n in enumerate(names)]


class HDRFolderDataset(Dataset):
    """Linear HDR files captured into ``{"ldr", "hdr", "name"}`` pairs on the fly.

    Args:
        files: the HDR files (see :func:`find_hdr_files`).
        camera: the camera model; its settings are drawn per item.
        random_camera: draw camera settings afresh each time (training); otherwise item
            ``i`` is fixed by ``seed`` (validation).
        seed: the seed of fixed camera settings.
        rows: keep only this band of rows, as fractions (e.g. ``[0.25, 0.75]`` for the
            undistorted middle of an equirectangular panorama); ``"panoramas"``: that band
            for images exactly twice as wide as tall, every row of the others; ``None``:
            every row.
        min_size: every (banded) image must be at least this tall and wide.
        negative: what to do with negative values: ``fill`` (default) each such pixel
            from its neighbours, or ``clip`` it to 0 (a black hole in the ground truth); see
            :func:`hdrunet_pl.io.fill_negative`.
        rows_name: the ``rows`` setting's name in messages.
    """

    def __init__(
        self,
        files: list[Path],
        camera: CameraModel | None = None,
        random_camera: bool = True,
        seed: int = 0,
        rows: Rows = None,
        min_size: int = 0,
        negative: str = "fill",
        rows_name: str = "data.rows",
    ) -> None:
        if not files:
            raise DatasetError("no HDR files to serve")
        self.rows = rows_setting(rows, rows_name)
        self.rows_name = rows_name  # the setting's name in messages
        self.files = [Path(f) for f in files]
        self.names = item_names(self.files)
        self.camera = camera or CameraModel()
        self.random_camera = random_camera
        self.seed = seed
        if negative not in NEGATIVE:
            raise ValueError(f"negative must be one of {NEGATIVE}, got {negative!r}")
        self.negative = negative
        problems = []
        self.banded = 0  # how many files lose rows to ``rows``
        for path in self.files:
            try:
                if path.suffix.lower() == ".png" and not alignratio_path_for(path).is_file():
                    problems.append(f"{path}: no align ratio file {alignratio_path_for(path).name}")
                    continue
                height, width = hdr_image_size(path)
            except HDRUNetError as err:
                problems.append(str(err))
                continue
            top, bottom = self._band(height, width)
            self.banded += (top, bottom) != (0, height)
            if bottom <= top:
                problems.append(
                    f"{path}: {self.rows_name}={list(self.rows)} keeps none of its {height} "
                    f"rows; widen the band (or {self.rows_name}=null)"
                )
            elif min(bottom - top, width) < min_size:
                problems.append(
                    f"{path}: {bottom - top}x{width}{self._kept(top, bottom, height)} is "
                    f"smaller than the {min_size}x{min_size} patch; choose a smaller patch or "
                    "remove the image"
                )
        DatasetError.check(self.files[0].parent, problems)

    def content_problems(self, progress: bool = True, capture: bool = True) -> list[str]:
        """Read every file once, as training will (validation images captured too, unless
        ``capture`` is False), and say what is wrong with each that cannot be decoded,
        holds NaN/Inf values or (captured for validation) is black: found before a run, not
        hours in when a sample first draws it. Files are decoded in threads (the decoders
        release the GIL)."""

        def problem(index: int) -> str | None:
            try:
                if self.random_camera or not capture:
                    read_linear_hdr(self.files[index], self.negative)
                else:
                    self[index]  # the capture too: a black validation image is refused
            except (HDRUNetError, OSError) as err:
                return str(err)
            return None

        with ThreadPoolExecutor(max(1, min(4, available_cpus()))) as pool:
            found = tqdm(
                pool.map(problem, range(len(self.files))),
                total=len(self.files),
                desc="reading HDR files",
                unit="file",
                disable=not progress,
            )
            return [p for p in found if p is not None]

    def _kept(self, top: int, bottom: int, height: int) -> str:
        """What ``rows`` left of an image, in words ("" for every row)."""
        if (top, bottom) == (0, height):
            return ""
        setting = self.rows if self.rows == PANORAMAS else list(self.rows)
        return f" (the {bottom - top} of its {height} rows that {self.rows_name}={setting} keeps)"

    def rows_note(self) -> str:
        """What ``rows`` keeps of these files, in words ("" for every row of every file)."""
        if not self.banded:
            return ""
        if self.rows == PANORAMAS:
            others = len(self.files) - self.banded
            whole = f", every row of the {others} other image(s)" if others else ""
            return (
                f"the middle half of the rows of {self.banded} equirectangular panorama(s)"
                f"{whole} ({self.rows_name}={PANORAMAS})"
            )
        return f"rows {self.rows[0]:g} to {self.rows[1]:g} of each image ({self.rows_name})"

    def _band(self, height: int, width: int) -> tuple[int, int]:
        """The rows kept of a height x width image: [top, bottom)."""
        band = self.rows
        if band == PANORAMAS:
            band = PANORAMA_BAND if width == 2 * height else None
        if band is None:
            return 0, height
        return round(band[0] * height), round(band[1] * height)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor | str]:
        index, seed = split_key(key)
        path = self.files[index]
        linear = read_linear_hdr(path, self.negative)
        top, bottom = self._band(*linear.shape[:2])
        linear = torch.from_numpy(np.ascontiguousarray(linear[top:bottom].transpose(2, 0, 1)))
        if self.random_camera:
            generator = item_generator(seed)
        else:
            generator = scene_generator(self.seed, index)
        ldr, hdr = self.camera(linear, generator)
        if not self.random_camera and is_black(hdr):
            # a validation image nobody can score: every val/psnr_mu would be NaN
            raise DatasetError(f"{path}: {BLACK_GROUND_TRUTH}; remove it from the validation files")
        return {"ldr": ldr, "hdr": hdr, "name": self.names[index]}


def rows_setting(rows: object, name: str = "data.rows") -> Rows:
    """A ``rows`` setting checked and normalised: None, ``"panoramas"`` or a (top, bottom)
    pair of fractions with 0 <= top < bottom <= 1; refused by ``name`` otherwise."""
    if rows is None or (isinstance(rows, str) and rows == PANORAMAS):
        return rows
    try:
        top, bottom = rows  # type: ignore[misc]
        if isinstance(top, bool | str) or isinstance(bottom, bool | str):
            raise TypeError
        top, bottom = float(top), float(bottom)
    except (TypeError, ValueError):
        top = bottom = math.nan
    if not 0 <= top < bottom <= 1:
        shown = list(rows) if isinstance(rows, list | tuple) else rows
        raise ValueError(
            f"{name} must be [top, bottom] fractions with 0 <= top < bottom <= 1, "
            f"{PANORAMAS} or null; got {shown!r}"
        )
    return top, bottom


def split_files(files: list[Path], val_count: int) -> tuple[list[Path], list[Path]]:
    """(training files, the last ``val_count`` files held out for validation)."""
    if not 0 < val_count < len(files):
        raise DatasetError(
            f"cannot hold out {val_count} of {len(files)} HDR files for validation; "
            "set val_count between 1 and the number of files - 1, or a separate val_root"
        )
    return files[:-val_count], files[-val_count:]


def folder_dataset(
    root: str | Path,
    camera: CameraModel | None = None,
    part: str = "all",
    val_count: int = 0,
    rows: Rows = None,
    min_size: int = 0,
    seed: int = 1,
    negative: str = "fill",
    rows_name: str = "data.rows",
) -> HDRFolderDataset:
    """The HDR images under ``root`` as a pair data set (e.g. one source of ``data=mixed``).

    ``part``: ``all`` files, or the ``train`` / ``val`` part of a split that holds out the
    last ``val_count`` files; ``val`` items have camera settings fixed by ``seed``, the
    others draw them per sample. ``rows``, ``min_size``, ``negative`` and ``rows_name`` as
    :class:`HDRFolderDataset`.
    """
    if part not in ("all", "train", "val"):
        raise ValueError(f"part must be all, train or val, got {part!r}")
    files = find_hdr_files(root)
    if part != "all":
        train_files, val_files = split_files(files, val_count)
        files = val_files if part == "val" else train_files
    return HDRFolderDataset(
        files,
        camera,
        random_camera=part != "val",
        seed=seed,
        rows=rows,
        min_size=min_size,
        negative=negative,
        rows_name=rows_name,
    )


class HDRFolderDataModule(HDRDataModule):
    """HDR images under ``root`` with LDRs made by ``camera``; see :class:`HDRFolderDataset`.

    Validation uses ``val_root`` or, without one, the last ``val_count`` files of ``root``,
    with camera settings fixed by ``val_seed``; ``seed`` fixes the training order and draws.
    """

    def __init__(
        self,
        root: str,
        val_root: str | None = None,
        val_count: int = 2,
        camera: CameraModel | None = None,
        rows: Rows = None,
        val_seed: int = 1,
        patch_size: int = 160,
        batch_size: int = 16,
        num_workers: int = 2,
        augment: bool = True,
        seed: int = 0,
        negative: str = "fill",
    ) -> None:
        files = find_hdr_files(root)
        if val_root:
            train_files, val_files = files, find_hdr_files(val_root)
        else:
            train_files, val_files = split_files(files, val_count)
        camera = camera or CameraModel()
        super().__init__(
            train_set=HDRFolderDataset(
                train_files, camera, True, rows=rows, min_size=patch_size, negative=negative
            ),
            val_set=HDRFolderDataset(
                val_files, camera, False, seed=val_seed, rows=rows, negative=negative
            ),
            patch_size=patch_size,
            batch_size=batch_size,
            num_workers=num_workers,
            augment=augment,
            seed=seed,
        )
        self.file_sets = [self.train_set.dataset, self.val_set]
        self.split = (
            train_files,
            val_files,
            f"data.val_root={val_root} and data.root={root} share them (one folder inside "
            "the other: subfolders are searched too; or links); give a validation folder "
            "of files of its own (or no data.val_root: the last data.val_count files are "
            "held out)"
            if val_root
            else f"the last data.val_count files of data.root={root}, held out, are links to "
            "training files (or hard links); remove the duplicates",
        )
