"""Dataset wrappers shared by every data source: random patches with flips and transposes.

A pair item is ``{"ldr": (3, H, W), "hdr": (3, H, W), "name": str}``; the wrappers keep
that form and apply the same geometry to LDR and HDR.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from hdrunet_pl.data.sampling import SampleKey, item_generator, split_key

Pair = dict[str, torch.Tensor | str]


def augment_pair(
    ldr: torch.Tensor, hdr: torch.Tensor, code: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one of the 8 flip/transpose combinations (bits: h-flip, v-flip, transpose) to both."""
    if not 0 <= code < 8:
        raise ValueError(f"augmentation code must be in [0, 8), got {code}")

    def apply(x: torch.Tensor) -> torch.Tensor:
        if code & 1:
            x = x.flip(-1)
        if code & 2:
            x = x.flip(-2)
        if code & 4:
            x = x.transpose(-1, -2)
        return x.contiguous()

    return apply(ldr), apply(hdr)


def random_patch(
    item: Pair, patch_size: int, augment: bool = True, generator: torch.Generator | None = None
) -> Pair:
    """A random ``patch_size`` crop of a pair item, with a random flip/transpose if ``augment``.

    Randomness comes from ``generator`` (a per-sample seed), else torch's global generator.
    """
    ldr, hdr = item["ldr"], item["hdr"]
    h, w = ldr.shape[-2:]
    p = patch_size
    if h < p or w < p:
        raise ValueError(f"{item['name']}: image {h}x{w} is smaller than the {p}x{p} patch")
    top = int(torch.randint(0, h - p + 1, (), generator=generator))
    left = int(torch.randint(0, w - p + 1, (), generator=generator))
    ldr = ldr[:, top : top + p, left : left + p]
    hdr = hdr[:, top : top + p, left : left + p]
    code = int(torch.randint(0, 8, (), generator=generator)) if augment else 0
    ldr, hdr = augment_pair(ldr, hdr, code)
    return {"ldr": ldr, "hdr": hdr, "name": item["name"]}


def check_patch_size(patch_size: int) -> int:
    """Return ``patch_size`` if it is a positive multiple of 4 (HDRUNet's two 2x downsamplings),
    else raise ``ValueError`` saying how to choose one."""
    if not isinstance(patch_size, int) or patch_size < 4 or patch_size % 4:
        raise ValueError(
            f"data.patch_size must be a positive multiple of 4, got {patch_size!r}; "
            "pick a `patch` group (e.g. patch=160px) or set data.patch_size=160"
        )
    return patch_size


class RandomPatches(Dataset):
    """Random ``patch_size`` crops of a pair dataset (see :func:`random_patch`)."""

    def __init__(self, dataset: Dataset, patch_size: int, augment: bool = True) -> None:
        self.dataset = dataset
        self.patch_size = check_patch_size(patch_size)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> Pair:
        index, seed = split_key(key)
        generator = item_generator(seed)
        # the inner data set gets a seed of its own for its randomness (e.g. camera settings)
        inner = (index, int(torch.randint(0, 2**62, (), generator=generator)))
        return random_patch(self.dataset[inner], self.patch_size, self.augment, generator)
