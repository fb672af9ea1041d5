"""The LightningDataModule: random patches for training, whole images for validation."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset, Sampler

from hdrunet_pl.data.datasets import RandomPatches
from hdrunet_pl.data.sampling import ResumableRandomSampler, ShardSampler
from hdrunet_pl.data.workers import init_worker
from hdrunet_pl.errors import DatasetError


def check_validation_split(images: int, processes: int) -> None:
    """Refuse fewer validation images than DDP processes: each process scores its share,
    and Lightning stops (with a traceback) on one that has none."""
    if images < processes:
        raise DatasetError(
            f"{images} validation image(s) for {processes} processes: each process scores at "
            f"least one; give {processes} or more validation images, or fewer devices"
        )


def check_held_out(train_files: Iterable[Path], val_files: Iterable[Path], why: str) -> None:
    """Refuse validation files that are training files too (the same file: by its device and
    inode, so links to it count): validation, the best checkpoint and the run's scores would
    be measured on images the network trains on. ``why``: how that came about and what to
    give instead."""

    def identity(path: Path) -> tuple[int, int]:
        stat = Path(path).stat()
        return stat.st_dev, stat.st_ino

    train = {identity(p) for p in train_files}
    shared = sorted(Path(p) for p in val_files if identity(p) in train)
    if shared:
        names = ", ".join(p.name for p in shared[:3]) + (" ..." if len(shared) > 3 else "")
        raise DatasetError(
            f"{len(shared)} validation file(s) are training files too ({names}): {why}"
        )


class StepResumableDataLoader(DataLoader):
    """A training DataLoader whose sampler starts at the trainer's step (see
    :class:`ResumableRandomSampler`): it resumes exactly, mid-epoch too. Its state is
    therefore the step itself, which the checkpoint already holds; ``state_dict`` and
    ``load_state_dict`` tell Lightning that it is resumable (Lightning warns otherwise)."""

    def state_dict(self) -> dict[str, str]:
        return {"resumes_from": "trainer.global_step"}

    def load_state_dict(self, state_dict: dict[str, str]) -> None:
        """Nothing to restore: the sampler was built from the restored step."""


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
        # training files, validation files and what to say when they share files (set by
        # data modules that read files; see check_split)
        self.split: tuple[list[Path], list[Path], str] | None = None
        # the data sets of files read whole at a run's start (see check_files)
        self.file_sets: list[Dataset] = []
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def check_split(self) -> None:
        """Refuse validation files that are training files too (:func:`check_held_out`).
        Training calls it; evaluation, which reads the validation files only (``data.root``
        and ``data.val_root`` may then be one folder), does not."""
        if self.split is not None:
            check_held_out(*self.split)

    def check_files(self) -> None:
        """Read every file of :attr:`file_sets` once (their ``content_problems``): broken
        files stop training at its start, all named at once, not when first drawn."""
        problems = [p for dataset in self.file_sets for p in dataset.content_problems()]
        DatasetError.check("reading every HDR file before training", problems)

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if train:
            # The order and every sample's randomness follow from (seed, position): a resumed
            # run continues the stream at its step, also with several processes (each takes
            # its share of every step). An epoch is at least one full step.
            step = trainer.global_step if trainer is not None else 0
            per_step = batch_size * world
            num_samples = max(len(dataset), per_step) // per_step * per_step
            epoch, batch = divmod(step, num_samples // per_step)
            sampler: Sampler = ResumableRandomSampler(
                len(dataset),
                num_samples=num_samples,
                seed=self.seed,
                start=epoch * num_samples + batch * per_step,
                rank=rank,
                world_size=world,
                batch_size=batch_size,
            )
        else:
            check_validation_split(len(dataset), world)
            sampler = ShardSampler(len(dataset), rank, world)  # every image once, no repeats
        return (StepResumableDataLoader if train else DataLoader)(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=init_worker,  # a job's signals are for the run, not its workers
            # page-locked batches: Lightning's copies to a GPU are then truly asynchronous
            pin_memory=trainer is not None and trainer.strategy.root_device.type == "cuda",
            drop_last=train,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, 1, train=False)
