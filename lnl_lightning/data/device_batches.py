"""Batches gathered on the device from in-memory images: no per-step host work or copy.

A DataLoader over in-memory tensors still indexes, converts and copies every batch on the
host, and the colour target is computed there; for a network as small as the Colored MNIST
one that host work is most of a GPU step. :class:`DeviceBatches` keeps the uint8 images,
labels and groups on the device, draws the epoch's order as one index tensor, and builds each
batch (float image, colour target) there with a few tensor operations.

It serves one run (the batch contract of :mod:`.contract`) or a pack of K runs
(:mod:`lnl_lightning.nets.packing`): member k reads its own data in its own order, and
the batch holds the members side by side: ``image (N, K*3, H, W)``, ``label (N, K)``,
``bias_target (N, K, 3, h, w)``, ``bias_group (N, K)``, ``index (N, K)``.

The order of member k in epoch e is that of :class:`~.sampling.ResumableSampler` with the
member's seed (``randperm`` seeded ``seed + e``), so a run trains on the same batches, in
the same order, whichever loader serves it; like :class:`~.sampling.ResumableLoader`, the
loader saves its position and a checkpoint taken mid-epoch resumes after the batches seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from lnl_lightning.data.contract import (
    BIAS_GROUP,
    BIAS_TARGET,
    IMAGE,
    INDEX,
    LABEL,
    color_bin_target,
    to_grey,
)


class MemberOrder:
    """Each member's shuffled order of ``size`` indices from ``(seed, epoch)``; None: in order."""

    def __init__(self, size: int, seeds: Sequence[int] | None, members: int) -> None:
        self.size, self.seeds, self.members = size, seeds, members
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """``(members, size)`` int64 indices."""
        if self.seeds is None:
            return torch.arange(self.size).expand(self.members, -1)
        orders = []
        for seed in self.seeds:
            generator = torch.Generator().manual_seed(seed + self.epoch)
            orders.append(torch.randperm(self.size, generator=generator))
        return torch.stack(orders)


class DeviceBatches:
    """Batches of ``batch_size`` from in-memory coloured images, built on ``device``.

    Args:
        images: uint8 ``(D, n, 3, H, W)``: D distinct datasets of equal size.
        labels: int64 ``(D, n)``.
        groups: int64 ``(D, n)``.
        member_data: which dataset each of the K members reads, ``(K,)``.
        batch_size: images per member per batch; the last batch may be smaller.
        seeds: each member's run seed (shuffled order); None keeps the stored order.
        target_size, num_bins: the per-pixel colour target (:func:`color_bin_target`).
        packed: the packed contract above; False (one member): the ordinary contract.
        grayscale: images as their luminance (``data.grayscale``); the target keeps the colour.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        member_data: Sequence[int],
        batch_size: int,
        seeds: Sequence[int] | None,
        target_size: int,
        num_bins: int,
        packed: bool = True,
        grayscale: bool = False,
    ) -> None:
        if not packed and len(member_data) != 1:
            raise ValueError("the ordinary batch contract holds one member")
        self.images, self.labels, self.groups = images, labels, groups
        self.member_data = torch.as_tensor(list(member_data), dtype=torch.long)
        self.batch_size = batch_size
        self.target_size, self.num_bins, self.packed = target_size, num_bins, packed
        self.grayscale = grayscale
        self.sampler = MemberOrder(labels.shape[1], seeds, len(member_data))
        self.batch_sampler = None  # Lightning looks for one on every loader
        self.served = 0
        self._resume: tuple[int, int] | None = None

    def to(self, device: torch.device | str) -> DeviceBatches:
        """Move the stored data to ``device`` (once; batches are then built there)."""
        self.images, self.labels, self.groups, self.member_data = (
            t.to(device) for t in (self.images, self.labels, self.groups, self.member_data)
        )
        return self

    def __len__(self) -> int:
        return math.ceil(self.labels.shape[1] / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.served = 0
        if self._resume is not None and self._resume[0] == self.sampler.epoch:
            self.served = self._resume[1]
        self._resume = None
        order = self.sampler.indices().to(self.images.device)
        for start in range(self.served * self.batch_size, order.shape[1], self.batch_size):
            batch = self._gather(order[:, start : start + self.batch_size])
            self.served += 1
            yield batch

    def _gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        data = self.member_data[:, None]
        images = self.images[data, index]  # (K, N, 3, H, W)
        members, n = index.shape
        target = color_bin_target(images.flatten(0, 1), self.target_size, self.num_bins)
        target = target.view(members, n, *target.shape[1:])
        image = images.float().div_(255.0)
        batch = {
            IMAGE: to_grey(image) if self.grayscale else image,
            LABEL: self.labels[data, index],
            BIAS_TARGET: target,
            BIAS_GROUP: self.groups[data, index],
            INDEX: index,
        }
        if not self.packed:
            return {key: value[0] for key, value in batch.items()}
        image = batch[IMAGE]
        batch[IMAGE] = image.transpose(0, 1).reshape(n, members * image.shape[2], *image.shape[3:])
        for key in (LABEL, BIAS_TARGET, BIAS_GROUP, INDEX):
            batch[key] = batch[key].transpose(0, 1)
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches"]))
        self.sampler.set_epoch(self._resume[0])
