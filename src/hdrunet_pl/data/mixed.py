"""Training on several sources at once: synthetic scenes and any number of HDR folders.

:class:`MixedSources` draws each training item from one of its sources, chosen by weight,
and an item of that source at random, both from the item's seed: the mixture is a function
of ``(seed, position)`` like every other source, so runs resume exactly. Its length (an
epoch) is set by ``samples_per_epoch``, not by how many files a folder holds: a folder of
ten panoramas gives as many random crops per epoch as a folder of ten thousand photos.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, Dataset

from hdrunet_pl.camera import CameraModel
from hdrunet_pl.data.datamodule import HDRDataModule
from hdrunet_pl.data.hdr_folder import HDRFolderDataset, folder_dataset, rows_setting
from hdrunet_pl.data.sampling import SampleKey, item_generator, split_key
from hdrunet_pl.data.synthetic import SyntheticHDRDataset
from hdrunet_pl.errors import DatasetError, HDRUNetError

DEMO_FOLDER = "photos"
"""The key of ``experiment=demo``'s folder (the fetched Poly Haven photographs)."""


class MixedSources(Dataset):
    """Pair items drawn from ``sources`` with probabilities proportional to ``weights``.

    Args:
        sources: pair data sets (items ``{"ldr", "hdr", "name"}``) that take
            ``(index, seed)`` keys.
        weights: one non-negative weight per source (default: equal), not all zero.
        length: items per epoch.

    Key ``(index, seed)``: the seed picks the source, the item and that item's own seed;
    a plain ``index`` does the same with the index as seed (deterministic).
    """

    def __init__(
        self,
        sources: Sequence[Dataset],
        weights: Sequence[float] | None = None,
        length: int = 10_000,
    ) -> None:
        if not sources:
            raise ValueError("MixedSources needs at least one source")
        weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
        if len(weights) != len(sources):
            raise ValueError(f"{len(sources)} sources but {len(weights)} weights")
        if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {weights}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.sources = list(sources)
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor | str]:
        index, seed = split_key(key)
        generator = item_generator(index if seed is None else seed)
        source = self.sources[int(torch.multinomial(self.weights, 1, generator=generator))]
        item = int(torch.randint(0, len(source), (), generator=generator))
        return source[(item, int(torch.randint(0, 2**62, (), generator=generator)))]


class MixedDataModule(HDRDataModule):
    """Random patches from synthetic scenes and any number of HDR folders, mixed by weight;
    validation on synthetic scenes and each folder's held-out files, in turn.

    Args:
        folders: name -> ``{"root": folder, "weight": float, "val_count": int, "rows":
            [top, bottom] or None, "negative": "fill" or "clip"}``; each folder holds out its
            last ``val_count`` files (0: none) for validation (``rows`` and ``negative`` as
            :class:`~hdrunet_pl.data.hdr_folder.HDRFolderDataset`).
        synthetic_weight: weight of synthetic scenes (0: folders only).
        synthetic_val_images: synthetic validation scenes (256 x 384; 0: none).
        camera: the camera model that makes every LDR input.
        samples_per_epoch: training items per epoch (independent of the folders' sizes).
        val_seed: fixes the validation camera settings.
        patch_size, batch_size, num_workers, augment, seed: as :class:`HDRDataModule`.
    """

    def __init__(
        self,
        folders: Mapping[str, Mapping] | None = None,
        synthetic_weight: float = 1.0,
        synthetic_val_images: int = 8,
        camera: CameraModel | None = None,
        samples_per_epoch: int = 10_000,
        val_seed: int = 1,
        patch_size: int = 160,
        batch_size: int = 16,
        num_workers: int = 2,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        camera = camera or CameraModel()
        _check_settings(synthetic_weight, synthetic_val_images, samples_per_epoch, folders or {})
        sources, weights, val_sets = [], [], []
        val_names: list[str] = []  # data.folders.<name> of each folder validation set
        if synthetic_weight > 0:
            sources.append(SyntheticHDRDataset(100_000, patch_size, seed=0, camera=camera))
            weights.append(synthetic_weight)
        if synthetic_val_images > 0:
            val_sets.append(
                SyntheticHDRDataset(synthetic_val_images, 256, 384, seed=val_seed, camera=camera)
            )
        for name, folder in (folders or {}).items():
            unknown = sorted(set(folder) - {"root", "weight", "val_count", "rows", "negative"})
            if "root" not in folder or unknown:
                problem = f"unknown setting(s) {unknown}" if unknown else "no root"
                raise ValueError(
                    f"data.folders.{name}: {problem}; a folder takes root (required), weight, "
                    "val_count, rows and negative"
                )
            val_count = int(folder.get("val_count", 0))
            rows_name = f"data.folders.{name}.rows"
            rows = rows_setting(folder.get("rows"), rows_name)
            negative = folder.get("negative", "fill")
            part = "train" if val_count else "all"
            if not Path(folder["root"]).is_dir():
                # the fetch hint for the demo's folder only: fetched into a second folder,
                # the same photographs would be trained on twice (its validation ones too)
                hint = (
                    "; give the folder of your HDR photographs (experiment=demo reads "
                    "paths.samples_dir, or $HDRUNET_SAMPLES_DIR), or `python -m "
                    f"hdrunet_pl.samples {folder['root']}` fetches openly licensed ones there"
                    if name == DEMO_FOLDER
                    else ""
                )
                raise DatasetError(
                    f"data.folders.{name}.root={folder['root']}: no such folder (from "
                    f"{Path.cwd()}){hint}"
                )
            sources.append(
                folder_dataset(
                    folder["root"],
                    camera,
                    part,
                    val_count,
                    rows,
                    patch_size,
                    negative=negative,
                    rows_name=rows_name,
                )
            )
            weights.append(float(folder.get("weight", 1.0)))
            if val_count:
                val_names.append(name)
                val_sets.append(
                    folder_dataset(
                        folder["root"],
                        camera,
                        "val",
                        val_count,
                        rows,
                        seed=val_seed,
                        negative=negative,
                        rows_name=rows_name,
                    )
                )
        if not sources:
            raise ValueError("data=mixed needs synthetic_weight > 0 or at least one folder")
        if not val_sets:
            raise ValueError(
                "data=mixed validates on nothing: set synthetic_val_images > 0 or a folder's "
                "val_count > 0"
            )
        _name_apart([d for d in val_sets if isinstance(d, HDRFolderDataset)], val_names)
        super().__init__(
            train_set=MixedSources(sources, weights, samples_per_epoch),
            val_set=val_sets[0] if len(val_sets) == 1 else ConcatDataset(val_sets),
            patch_size=patch_size,
            batch_size=batch_size,
            num_workers=num_workers,
            augment=augment,
            seed=seed,
        )
        self.file_sets = [d for d in (*sources, *val_sets) if isinstance(d, HDRFolderDataset)]
        self.split = (
            [f for d in sources if isinstance(d, HDRFolderDataset) for f in d.files],
            [f for d in val_sets if isinstance(d, HDRFolderDataset) for f in d.files],
            "a folder's held-out files (its last val_count) lie under another folder's root, "
            "whose subfolders are searched too; give data.folders whose roots do not contain "
            "each other",
        )


MAX_SAMPLES_PER_EPOCH = 100_000_000
"""The most training items an epoch may have: the sampler draws an epoch's order at once
(16 bytes an item: 1.6 GB here)."""


def _check_settings(
    synthetic_weight: float,
    synthetic_val_images: int,
    samples_per_epoch: int,
    folders: Mapping[str, Mapping],
) -> None:
    """One line for a setting out of its range (a typo, not 0: a negative or NaN weight
    trained on the folders alone, a negative image count validated on none)."""
    problems = []
    if not (isinstance(synthetic_weight, int | float) and math.isfinite(synthetic_weight)):
        problems.append(f"data.synthetic_weight={synthetic_weight} is no finite number")
    elif synthetic_weight < 0:
        problems.append(f"data.synthetic_weight={synthetic_weight} < 0 (0: folders only)")
    if not isinstance(synthetic_val_images, int) or synthetic_val_images < 0:
        problems.append(f"data.synthetic_val_images={synthetic_val_images}: give a count >= 0")
    if not isinstance(samples_per_epoch, int) or samples_per_epoch > MAX_SAMPLES_PER_EPOCH:
        problems.append(
            f"data.samples_per_epoch={samples_per_epoch}: give a count of at most "
            f"{MAX_SAMPLES_PER_EPOCH:,} (an epoch's order is drawn at once; an epoch's length "
            "only sets how often validation-by-epoch and the order's redraw come)"
        )
    for name, folder in folders.items():
        if not isinstance(folder, Mapping):
            continue  # named by the folder check that follows
        weight = folder.get("weight", 1.0)
        if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            problems.append(f"data.folders.{name}.weight={weight}: give a finite number >= 0")
        count = folder.get("val_count", 0)
        if not isinstance(count, int) or isinstance(count, bool):
            problems.append(f"data.folders.{name}.val_count={count}: give a whole number")
        if folder.get("root", "") is None:
            problems.append(f"data.folders.{name}.root is null: give the folder")
    if problems:
        raise HDRUNetError("; ".join(problems))


def _name_apart(val_sets: list[HDRFolderDataset], keys: list[str]) -> None:
    """Validation images of several folders that share a name (``a/p4.exr``, ``b/p4.exr``)
    would write one preview over the other and give two ``p4`` rows in a score table: each
    folder's names then start with its key (``photos__p4``). The same file held out by two
    folders (one root given twice) would count twice in the mean: refused."""
    seen: dict[tuple[int, int], str] = {}
    for key, dataset in zip(keys, val_sets, strict=True):
        for path in dataset.files:
            stat = path.stat()
            other = seen.setdefault((stat.st_dev, stat.st_ino), key)
            if other != key:
                raise DatasetError(
                    f"{path}: held out for validation by data.folders.{other} and "
                    f"data.folders.{key} (one folder given twice?); it would count twice"
                )
    names = Counter(n for d in val_sets for n in d.names)
    if any(count > 1 for count in names.values()):
        for key, dataset in zip(keys, val_sets, strict=True):
            dataset.names = [f"{key}__{n}" for n in dataset.names]
