"""Gradient and buffer all-reduce for the manual optimisation of :class:`LNLModule` under DDP."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _average_in_place(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its mean over all processes, with one coalesced all-reduce."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def all_reduce_gradients(modules: Iterable[nn.Module]) -> None:
    """Average the gradients of ``modules`` over all processes (no-op in one process).

    Only parameters that received a gradient are reduced; every process runs the same
    code path, so the set is the same on all ranks.
    """
    if _distributed():
        _average_in_place([p.grad for m in modules for p in m.parameters() if p.grad is not None])


def all_reduce_buffers(modules: Iterable[nn.Module]) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over all processes.

    Without SyncBatchNorm (e.g. on CPU, where it is unavailable) each process updates its
    running statistics from its own part of the batch; averaging them before evaluation
    makes every process evaluate the same model. A no-op in one process.
    """
    if _distributed():
        _average_in_place([b for m in modules for b in m.buffers() if b.is_floating_point()])
