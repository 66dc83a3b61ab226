"""A training order that a checkpoint resumes exactly, mid-epoch included.

The order of an epoch is a function of the run's seed and the epoch number alone, and the
loader counts the batches it has handed out. Lightning stores that count in its checkpoints
(the loader has ``state_dict``/``load_state_dict``), so a resumed run skips exactly the batches
the interrupted one trained on and sees the rest in the same order.

With ``with_seeds`` the sampler hands out ``(index, seed)`` pairs: the seed fixes the random
augmentation of that image in that epoch, whichever worker loads it and whatever ran before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def run_seed() -> int:
    """The seed ``pl.seed_everything`` set for this run (0 when none was set)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class ResumableSampler(DistributedSampler):
    """Shuffled indices from ``(seed, epoch)``; the first ``skip`` are left out once.

    A ``DistributedSampler``, so Lightning keeps it under DDP instead of replacing it; each
    process takes its own shard when a process group exists.
    """

    def __init__(self, dataset: Dataset, seed: int | None = None, with_seeds: bool = False):
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0,
            shuffle=True,
            seed=run_seed() if seed is None else seed,
        )
        self.with_seeds = with_seeds
        self.skip = 0  # indices of this process's shard to leave out at the next iteration

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())[self.skip :]
        self.skip = 0
        if not self.with_seeds:
            return iter(indices)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 1)
        seeds = torch.randint(2**62, (len(self.dataset),), generator=generator).tolist()
        return iter([(i, seeds[i]) for i in indices])


class ResumableLoader(DataLoader):
    """A shuffling DataLoader over a :class:`ResumableSampler` that saves its position.

    ``state_dict()`` is the epoch and the number of batches handed out in it; after
    ``load_state_dict`` the next iteration of that epoch starts after those batches. Lightning
    fetches batches of a sized loader one at a time, so the count is the batches trained on.
    """

    def __init__(self, dataset: Dataset, *, with_seeds: bool = False, **kwargs: Any):
        sampler = ResumableSampler(dataset, with_seeds=with_seeds)
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.served = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches) from a checkpoint

    def __iter__(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler
        self.served = 0
        if self._resume is not None and self._resume[0] == sampler.epoch:
            self.served = self._resume[1]
            sampler.skip = self.served * self.batch_size
        self._resume = None
        for batch in super().__iter__():
            self.served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches"]))
        self.sampler.set_epoch(self._resume[0])
