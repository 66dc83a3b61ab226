"""Gradient all-reduce for the manual optimisation of :class:`LNLModule` under DDP."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


def all_reduce_gradients(modules: Iterable[nn.Module]) -> None:
    """Average the gradients of ``modules`` over all processes with one coalesced all-reduce.

    Only parameters that received a gradient are reduced; every process runs the same
    code path, so the set is the same on all ranks. A no-op without a process group.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_buffers(modules: Iterable[nn.Module]) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over all processes.

    Without SyncBatchNorm (e.g. on CPU, where it is unavailable) each process updates its
    running statistics from its own part of the batch; averaging them before evaluation
    makes every process evaluate the same model. A no-op without a process group.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for b in buffers:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()
