"""Streaming shards written by ``hdrunet-prepare stream``, read with litdata.

``input_dir`` (a local folder or an ``s3://...`` URL) holds ``train/`` and ``val/``.
litdata shards the training stream across DDP ranks and DataLoader workers, and its
``StreamingDataLoader`` state is saved in Lightning checkpoints, so a resumed run
continues mid-epoch.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset

from hdrunet_pl.data.datasets import random_patch
from hdrunet_pl.data.shards import check_shards
from hdrunet_pl.data.workers import init_worker
from hdrunet_pl.errors import HDRUNetError


def record_to_pair(record: dict) -> dict[str, torch.Tensor | str]:
    """A shard record (RGB uint8 or uint16 LDR codes, uint16 GT codes, align ratio) -> a
    float pair item: LDR in [0, 1] (codes / 255 or / 65535), HDR = GT codes / align ratio."""
    codes = record["ldr"]
    ldr = np.ascontiguousarray(codes.transpose(2, 0, 1)).astype(np.float32)
    ldr /= np.float32(np.iinfo(codes.dtype).max)
    gt = torch.from_numpy(np.ascontiguousarray(record["gt"].transpose(2, 0, 1)))
    ratio = torch.tensor(record["alignratio"], dtype=torch.float32)
    return {"ldr": torch.from_numpy(ldr), "hdr": gt.float() / ratio, "name": record["name"]}


class _RandomPatchTransform:
    def __init__(self, patch_size: int, augment: bool) -> None:
        self.patch_size = patch_size
        self.augment = augment

    def __call__(self, record: dict) -> dict[str, torch.Tensor | str]:
        return random_patch(record_to_pair(record), self.patch_size, self.augment)


def _url_join(base: str, part: str) -> str:
    return base.rstrip("/") + "/" + part


class StreamingDataModule(L.LightningDataModule):
    """Random patches streamed from ``input_dir/train``, whole images from ``input_dir/val``."""

    def __init__(
        self,
        input_dir: str,
        patch_size: int = 160,
        batch_size: int = 16,
        num_workers: int = 2,
        augment: bool = True,
        seed: int = 42,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.input_dir = input_dir
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.seed = seed
        self.cache_dir = cache_dir
        self._train: StreamingDataLoader | None = None
        if "://" not in input_dir:  # local shards: checked before anything is read
            root = Path(input_dir)
            if (root / "train").is_dir() and not (root / "val").exists():
                raise HDRUNetError(
                    f"{root}: training shards only (written with --val-count 0); data=stream "
                    "validates on val/: write the shards again with --val-count 1 or more"
                )
            for part in ("train", "val"):
                check_shards(root / part)

    @staticmethod
    def _checked(dataset: StreamingDataset) -> StreamingDataset:
        """``dataset`` once its index (fetched by now, for remote shards) has passed
        :func:`check_shards`: no field is stored in a form that runs code when read."""
        check_shards(Path(dataset.input_dir.path), chunks=False)
        return dataset

    def train_dataloader(self) -> StreamingDataLoader:
        if self._train is None:  # one loader, so that its state can be saved and restored
            dataset = self._checked(
                StreamingDataset(
                    _url_join(self.input_dir, "train"),
                    cache_dir=self.cache_dir,
                    shuffle=True,
                    drop_last=True,
                    seed=self.seed,
                    transform=_RandomPatchTransform(self.patch_size, self.augment),
                )
            )
            self._train = StreamingDataLoader(
                dataset,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                drop_last=True,
                worker_init_fn=init_worker,
            )
        return self._train

    def val_dataloader(self) -> StreamingDataLoader:
        dataset = self._checked(
            StreamingDataset(
                _url_join(self.input_dir, "val"),
                cache_dir=self.cache_dir,
                transform=record_to_pair,
            )
        )
        return StreamingDataLoader(
            dataset, batch_size=1, num_workers=self.num_workers, worker_init_fn=init_worker
        )

    def state_dict(self) -> dict:
        return {"train_loader": self._train.state_dict()} if self._train is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if "train_loader" in state_dict:
            self.train_dataloader().load_state_dict(state_dict["train_loader"])
