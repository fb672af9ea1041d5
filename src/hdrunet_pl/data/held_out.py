"""A held-out evaluation set: HDR photographs captured at fixed, named camera settings.

Each file of ``root`` is captured once per setting (e.g. ``dark``, ``normal``, ``bright``)
with noise fixed by ``seed``, and named ``<file>_<setting>``; the same inputs every time,
for ``hdrunet-eval`` only (it has no training set).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from hdrunet_pl.camera import CameraModel
from hdrunet_pl.data.hdr_folder import PANORAMAS, HDRFolderDataset, Rows, find_hdr_files
from hdrunet_pl.errors import DatasetError, HDRUNetError

EVALUATION_ONLY = (
    "data=held_out is an evaluation set (hdrunet-eval ckpt=... data=held_out); "
    "train on data=synthetic, hdr_folder or mixed"
)


class NamedCapture(Dataset):
    """The items of a pair data set with ``_<suffix>`` added to their names, and the
    suffix (the capture setting) as their ``setting``."""

    def __init__(self, dataset: Dataset, suffix: str) -> None:
        self.dataset = dataset
        self.suffix = suffix

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        item = dict(self.dataset[index])
        item["name"] = f"{item['name']}_{self.suffix}"
        item["setting"] = self.suffix
        return item


class HeldOutCaptures:
    """Every HDR file under ``root`` captured with each camera of ``captures``.

    Args:
        root: a folder of ``.exr``, ``.hdr`` or NTIRE ``*_gt.png`` files.
        captures: setting name -> camera model (give each range as one value, low = high,
            to fix the setting).
        seed: fixes each capture's noise.
        rows: the rows scored (see :class:`HDRFolderDataset`): by default the middle half of
            equirectangular panoramas, every row of other images.
        negative: what to do with negative values of the files: ``fill`` (default) each such
            pixel from its neighbours, or ``clip`` them to 0 (see :data:`hdrunet_pl.io.NEGATIVE`).
        training_settings: what only training configs give (``patch_size`` from the
            ``patch`` group, ``batch_size``, ...): refused, saying what to use instead, as
            this is an evaluation set.
    """

    def __init__(
        self,
        root: str,
        captures: Mapping[str, CameraModel],
        seed: int = 2027,
        rows: Rows = PANORAMAS,
        negative: str = "fill",
        **training_settings: object,
    ) -> None:
        if training_settings:
            raise HDRUNetError(EVALUATION_ONLY)
        if not captures:
            raise HDRUNetError("data.captures: give at least one camera setting")
        files = find_hdr_files(root)
        self.settings = tuple(captures)
        datasets = [
            HDRFolderDataset(files, camera, False, seed=seed, rows=rows, negative=negative)
            for camera in captures.values()
        ]
        self.val_set = ConcatDataset(
            [NamedCapture(d, name) for d, name in zip(datasets, captures, strict=True)]
        )
        self.rows_note = datasets[0].rows_note()  # what is scored of each file, in words
        self._first_setting = datasets[0]  # reads every file (check_files)

    def check_files(self) -> None:
        """Read every file once before any is scored: a file that cannot be decoded or holds
        NaN/Inf values stops the evaluation at its start, every such file named, instead of
        after the captures before it were scored (and their scores lost)."""
        problems = self._first_setting.content_problems(capture=False)
        DatasetError.check("reading every HDR file before scoring", problems)

    def setup(self, stage: str | None = None) -> None:
        """Nothing to prepare (for the LightningDataModule interface)."""

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1)

    def train_dataloader(self) -> DataLoader:
        raise HDRUNetError(EVALUATION_ONLY)
