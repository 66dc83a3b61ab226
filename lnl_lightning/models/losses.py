"""Losses shared by the methods: h's bias loss, and what f is pushed with to make h fail."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lnl_lightning.data.contract import IGNORE_INDEX


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of sum_k p_k log p_k along dim 1 (numerically safe: log-softmax).

    For per-pixel colour logits ``(N, K, 3, H, W)`` this is the official term: each channel's
    mean over pixels, averaged over the three channels.
    """
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * log_p).sum(dim=1).mean()


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of -sum_k (1/K) log p_k: the cross-entropy from the uniform
    distribution to the prediction along dim 1 (BlindEye's confusion loss), minimal (log K)
    when the prediction is uniform."""
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean()


def bias_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """h's loss: cross-entropy, *summed* over the RGB channels of a per-pixel target.

    A per-pixel target ``(N, 3, H, W)`` gives the official ``CE_r + CE_g + CE_b``, each the
    mean over that channel's non-ignored pixels (a channel with none adds 0, where the
    official code would give NaN). A per-image target ``(N,)`` gives the plain cross-entropy.
    """
    if target.dim() < 2:
        return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (target != IGNORE_INDEX).flatten(2).sum(2)  # (N, C)
    channel_sums = per_pixel.flatten(2).sum(2).sum(0)  # ignored pixels contribute 0
    return (channel_sums / valid.sum(0).clamp(min=1)).sum()
