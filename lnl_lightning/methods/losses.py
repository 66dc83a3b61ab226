"""Losses shared by the methods: h's bias loss, and what f is pushed with to make h fail.

Each is written once, over the member axis of the engine (:mod:`.module`): logits
``(N, K, classes, ...)`` and targets ``(N, K, ...)`` give one loss per member, ``(K,)``.
The plain forms (logits ``(N, classes, ...)``, one scalar) are that with K = 1.

With one member the per-image cross-entropies are the plain call: over the member layout
PyTorch sums in another order (last-bit differences, which a float32 training run amplifies),
and a run of one member must train bit for bit as it always did. The per-pixel forms are
bit-identical either way (checked).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lnl_lightning.data.contract import IGNORE_INDEX


def member_label_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy: logits ``(N, K, C)``, labels ``(N, K)`` -> ``(K,)``."""
    if logits.shape[1] == 1:  # one member: the plain call, bit for bit (module docstring)
        return F.cross_entropy(logits[:, 0], labels[:, 0]).unsqueeze(0)
    return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(0)


def member_negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Each member's mean over positions of sum_c p_c log p_c (along dim 2) -> ``(K,)``.

    For per-pixel colour logits ``(N, K, bins, 3, H, W)`` this is the official term: each
    channel's mean over pixels, averaged over the three channels.
    """
    log_p = F.log_softmax(logits, dim=2)
    return (log_p.exp() * log_p).sum(dim=2).transpose(0, 1).flatten(1).mean(1)


def member_uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Each member's mean over positions of -sum_c (1/C) log p_c: the cross-entropy from the
    uniform distribution to the prediction (BlindEye's confusion loss) -> ``(K,)``; minimal
    (log C) when the prediction is uniform."""
    per_position = -F.log_softmax(logits, dim=2).mean(dim=2)
    return per_position.transpose(0, 1).flatten(1).mean(1)


def member_bias_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """h's loss of each member: cross-entropy, *summed* over the RGB channels of a per-pixel
    target -> ``(K,)``.

    A per-pixel target ``(N, K, 3, H, W)`` gives the official ``CE_r + CE_g + CE_b``, each the
    mean over that channel's non-ignored pixels (a channel with none adds 0, where the
    official code would give NaN). A per-image target ``(N, K)`` gives the plain
    cross-entropy over the images not ignored.
    """
    per_position = F.cross_entropy(
        logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (N, K, ...): ignored positions contribute 0
    valid = target != IGNORE_INDEX
    if target.dim() == 2:
        if logits.shape[1] == 1:  # one member: the plain call, bit for bit (module docstring)
            return F.cross_entropy(logits[:, 0], target[:, 0], ignore_index=IGNORE_INDEX)[None]
        return per_position.sum(0) / valid.sum(0).clamp(min=1)
    channel_sums = per_position.flatten(3).sum(3).sum(0)  # (K, 3)
    return (channel_sums / valid.flatten(3).sum(3).sum(0).clamp(min=1)).sum(1)


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """:func:`member_negative_entropy` of one network's logits ``(N, classes, ...)``."""
    return member_negative_entropy(logits.unsqueeze(1))[0]


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """:func:`member_uniform_cross_entropy` of one network's logits ``(N, classes, ...)``."""
    return member_uniform_cross_entropy(logits.unsqueeze(1))[0]


def bias_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`member_bias_cross_entropy` of one network: logits ``(N, classes, ...)``, target
    ``(N, 3, H, W)`` (per pixel) or ``(N,)`` (per image)."""
    return member_bias_cross_entropy(logits.unsqueeze(1), target.unsqueeze(1))[0]
