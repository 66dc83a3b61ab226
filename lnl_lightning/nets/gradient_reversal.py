"""Gradient reversal layer (Ganin & Lempitsky, 2015): identity forward, -scale x gradient back."""

from __future__ import annotations

import torch


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output.neg() * ctx.scale, None


def grad_reverse(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Return ``x`` unchanged; in backward, multiply the incoming gradient by ``-scale``."""
    return _GradReverse.apply(x, scale)
