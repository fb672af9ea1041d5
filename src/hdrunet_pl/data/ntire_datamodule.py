"""The LightningDataModule of NTIRE 2021 pairs (kept apart from :mod:`.ntire`, so that
tools that only read pairs, such as ``hdrunet-prepare``, start without Lightning)."""

from __future__ import annotations

from hdrunet_pl.data.datamodule import HDRDataModule
from hdrunet_pl.data.ntire import NTIREDataset, find_ntire_pairs, split_pairs


class NTIREDataModule(HDRDataModule):
    """NTIRE pairs under ``root``: random patches for training, whole frames for validation.

    Validation uses the pairs under ``val_root`` or, without one, the last ``val_count``
    pairs of ``root`` (held out of training). Works on full frames and on sub-images made
    by ``hdrunet-prepare crop``.
    """

    def __init__(
        self,
        root: str,
        val_root: str | None = None,
        val_count: int = 16,
        patch_size: int = 160,
        batch_size: int = 16,
        num_workers: int = 2,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        pairs = find_ntire_pairs(root)
        if val_root:
            train_pairs, val_pairs = pairs, find_ntire_pairs(val_root, "data.val_root")
        else:
            train_pairs, val_pairs = split_pairs(pairs, val_count)
        super().__init__(
            train_set=NTIREDataset(train_pairs, min_size=patch_size),
            val_set=NTIREDataset(val_pairs),
            patch_size=patch_size,
            batch_size=batch_size,
            num_workers=num_workers,
            augment=augment,
            seed=seed,
        )
        self.split = (
            [p.gt for p in train_pairs],
            [p.gt for p in val_pairs],
            f"data.val_root={val_root} and data.root={root} share them (the same folder, "
            "one inside the other: subfolders are searched too; or links); give a "
            "validation folder of pairs of its own (or no data.val_root: the last "
            "data.val_count pairs are held out)"
            if val_root
            else f"the last data.val_count pairs of data.root={root}, held out, are links to "
            "training pairs (or hard links); remove the duplicates",
        )
