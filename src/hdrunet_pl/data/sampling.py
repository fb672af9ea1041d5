"""Training-sample order that is a function of (seed, position), so that runs resume exactly.

:class:`ResumableRandomSampler` walks through epochs of shuffled indices; item ``p`` of the
whole stream is ``(index, sample_seed)`` with both fixed by ``seed`` and ``p``. Random crops,
flips and camera settings are drawn from ``sample_seed`` (see :func:`item_generator`), not
from worker RNG streams, so the batch at any step is the same in every run, with any number
of workers, and a resumed run can start the stream at the step it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

SampleKey = int | tuple[int, int]
"""A dataset key: an index, or (index, sample seed) from :class:`ResumableRandomSampler`."""


def split_key(key: SampleKey) -> tuple[int, int | None]:
    """``index`` or ``(index, seed)`` -> ``(index, seed or None)``."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), None


def item_generator(seed: int | None) -> torch.Generator:
    """A generator for one sample: seeded by ``seed``, or from torch's global RNG if None."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()))
    return torch.Generator().manual_seed(seed)


class ResumableRandomSampler(Sampler[tuple[int, int]]):
    """Shuffled ``(index, sample_seed)`` pairs, ``num_samples`` per epoch, from ``start``.

    With ``world_size`` processes (DDP), the stream is one global order: each block of
    ``world_size * batch_size`` consecutive positions is one training step, and process
    ``rank`` takes the ``rank``-th ``batch_size`` items of it. The order therefore depends
    on ``(seed, position)`` only, and a resumed DDP run continues exactly where it stopped.

    Args:
        dataset_len: number of items in the data set.
        num_samples: samples per epoch over all processes (a multiple of
            ``world_size * batch_size``; may exceed ``dataset_len``).
        seed: fixes every epoch's order and every sample seed.
        start: global position to start from (when resuming: the position of the next
            step's first sample); later epochs continue from there.
        rank, world_size, batch_size: this process's share of each step.
    """

    def __init__(
        self,
        dataset_len: int,
        num_samples: int,
        seed: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
    ):
        if dataset_len < 1 or num_samples < 1 or start < 0:
            raise ValueError("need dataset_len >= 1, num_samples >= 1, start >= 0")
        if not 0 <= rank < world_size or batch_size < 1:
            raise ValueError(
                f"need 0 <= rank < world_size, batch_size >= 1; got {rank}, "
                f"{world_size}, {batch_size}"
            )
        if world_size > 1 and num_samples % (world_size * batch_size):
            raise ValueError(
                "with several processes, num_samples must be a multiple of world_size * batch_size"
            )
        self.dataset_len = dataset_len
        self.num_samples = num_samples
        self.seed = seed
        self.position = start
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size

    def __len__(self) -> int:
        # constant: loops read it at any time; after a resume, the first epoch just ends early
        return self.num_samples // self.world_size

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        repeats = -(-self.num_samples // self.dataset_len)
        order = np.concatenate([rng.permutation(self.dataset_len) for _ in range(repeats)])
        seeds = rng.integers(0, 2**62, size=self.num_samples)
        return order[: self.num_samples], seeds

    def _mine(self, offset: int) -> bool:
        """Whether the item at ``offset`` in its epoch belongs to this process."""
        return (offset // self.batch_size) % self.world_size == self.rank

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.position, self.num_samples)
        order, seeds = self._epoch(epoch)
        for i in range(offset, self.num_samples):
            self.position += 1
            if self.world_size == 1 or self._mine(i):
                yield int(order[i]), int(seeds[i])


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of a data set: each item on exactly one
    process, none repeated (validation; processes may get one item more or less)."""

    def __init__(self, dataset_len: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, dataset_len, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
