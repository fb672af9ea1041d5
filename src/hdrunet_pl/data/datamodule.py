"""The LightningDataModule: random patches for training, whole images for validation."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from hdrunet_pl.data.datasets import RandomPatches
from hdrunet_pl.data.sampling import ResumableRandomSampler


class HDRDataModule(L.LightningDataModule):
    """Serves random ``patch_size`` crops of ``train_set`` and whole ``val_set`` images.

    Args:
        train_set: pair dataset (items ``{"ldr", "hdr", "name"}``) to crop patches from.
        val_set: pair dataset scored image by image (batch size 1, whole images).
        patch_size: side of the square training crop (multiple of 4).
        batch_size: training batch size.
        num_workers: DataLoader worker processes (items are made/decoded in workers).
        augment: random flips and transposes of training patches.
        seed: fixes the order of training samples and their crops, flips and camera draws.
    """

    def __init__(
        self,
        train_set: Dataset,
        val_set: Dataset,
        patch_size: int = 160,
        batch_size: int = 16,
        num_workers: int = 2,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1 or num_workers < 0:
            raise ValueError(
                f"need batch_size >= 1, num_workers >= 0; got {batch_size}, {num_workers}"
            )
        self.train_set = RandomPatches(train_set, patch_size, augment)
        self.val_set = val_set
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        sampler = None
        if train:
            # The order and every sample's randomness follow from (seed, position): a resumed
            # run continues the stream at its step. An epoch is at least one full batch.
            step = self.trainer.global_step if self.trainer is not None else 0
            num_samples = max(len(dataset), batch_size)
            epoch, batch = divmod(step, num_samples // batch_size)  # incomplete batches dropped
            sampler = ResumableRandomSampler(
                len(dataset),
                num_samples=num_samples,
                seed=self.seed,
                start=epoch * num_samples + batch * batch_size,
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=train,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, 1, train=False)
