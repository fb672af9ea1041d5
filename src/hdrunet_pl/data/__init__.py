"""Data sources, dataset wrappers and the LightningDataModules."""

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
from hdrunet_pl.data.ntire import NTIREDataModule, NTIREDataset, NTIREPair, find_ntire_pairs
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
