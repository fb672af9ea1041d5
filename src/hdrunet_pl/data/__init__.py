"""Data sources, dataset wrappers and the LightningDataModules.

Names are imported on first use, so that a tool that reads NTIRE pairs or HDR files does not
load Lightning (``from hdrunet_pl.data import NTIREDataset`` works as usual).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hdrunet_pl.lazy import lazy_getattr

if TYPE_CHECKING:
    from hdrunet_pl.data.datamodule import HDRDataModule
    from hdrunet_pl.data.datasets import RandomPatches, augment_pair, random_patch
    from hdrunet_pl.data.hdr_folder import (
        HDRFolderDataModule,
        HDRFolderDataset,
        find_hdr_files,
        folder_dataset,
    )
    from hdrunet_pl.data.held_out import HeldOutCaptures
    from hdrunet_pl.data.mixed import MixedDataModule, MixedSources
    from hdrunet_pl.data.ntire import NTIREDataset, NTIREPair, find_ntire_pairs
    from hdrunet_pl.data.ntire_datamodule import NTIREDataModule
    from hdrunet_pl.data.synthetic import SyntheticHDRDataset, render_scene

__all__ = [
    "HDRDataModule",
    "HDRFolderDataModule",
    "HDRFolderDataset",
    "HeldOutCaptures",
    "MixedDataModule",
    "MixedSources",
    "NTIREDataModule",
    "NTIREDataset",
    "NTIREPair",
    "RandomPatches",
    "SyntheticHDRDataset",
    "augment_pair",
    "find_hdr_files",
    "find_ntire_pairs",
    "folder_dataset",
    "random_patch",
    "render_scene",
]

_LAZY = {
    "HDRDataModule": "hdrunet_pl.data.datamodule",
    "HDRFolderDataModule": "hdrunet_pl.data.hdr_folder",
    "HDRFolderDataset": "hdrunet_pl.data.hdr_folder",
    "HeldOutCaptures": "hdrunet_pl.data.held_out",
    "MixedDataModule": "hdrunet_pl.data.mixed",
    "MixedSources": "hdrunet_pl.data.mixed",
    "NTIREDataModule": "hdrunet_pl.data.ntire_datamodule",
    "NTIREDataset": "hdrunet_pl.data.ntire",
    "NTIREPair": "hdrunet_pl.data.ntire",
    "RandomPatches": "hdrunet_pl.data.datasets",
    "SyntheticHDRDataset": "hdrunet_pl.data.synthetic",
    "augment_pair": "hdrunet_pl.data.datasets",
    "find_hdr_files": "hdrunet_pl.data.hdr_folder",
    "find_ntire_pairs": "hdrunet_pl.data.ntire",
    "folder_dataset": "hdrunet_pl.data.hdr_folder",
    "random_patch": "hdrunet_pl.data.datasets",
    "render_scene": "hdrunet_pl.data.synthetic",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
