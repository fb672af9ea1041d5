"""Data sources, dataset wrappers and the LightningDataModule."""

from hdrunet_pl.data.datamodule import HDRDataModule
from hdrunet_pl.data.datasets import RandomPatches, augment_pair
from hdrunet_pl.data.synthetic import SyntheticHDRDataset, render_scene

__all__ = ["HDRDataModule", "RandomPatches", "SyntheticHDRDataset", "augment_pair", "render_scene"]
