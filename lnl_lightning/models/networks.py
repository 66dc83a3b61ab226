"""Plain ``nn.Module`` builders for f (features), g (label head) and h (bias head).

The Colored MNIST networks follow the official Learning Not to Learn code: f maps a
28x28 image to a 32x14x14 feature map; g classifies it; h predicts the colour bin of
every pixel of that map for each RGB channel.
"""

from __future__ import annotations

import torch
from torch import nn


def mnist_feature_extractor() -> nn.Module:
    """f: BN(3) -> conv5x5 3->32 -> ReLU -> maxpool(3, 2) -> conv3x3 32->32 -> ReLU (32x14x14)."""
    return nn.Sequential(
        nn.BatchNorm2d(3),
        nn.Conv2d(3, 32, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        nn.Conv2d(32, 32, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
    )


def mnist_label_head(num_classes: int = 10) -> nn.Module:
    """g: conv3x3/2 32->64 -> ReLU -> conv3x3 64->64 -> ReLU -> global average pool -> linear."""
    return nn.Sequential(
        nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


class PixelColorHead(nn.Module):
    """h for colour bias: conv-BN-ReLU-conv giving ``num_classes`` colour bins per RGB channel.

    Output logits are shaped ``(N, num_classes, 3, H, W)`` so that plain cross-entropy with
    an ignore index applies against a ``(N, 3, H, W)`` colour-bin target.
    """

    def __init__(
        self, in_channels: int = 32, hidden_channels: int = 32, num_classes: int = 8
    ) -> None:
        super().__init__()
        self.num_bins = num_classes
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, 3 * num_classes, kernel_size=3, padding=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.layers(features)
        n, _, h, w = logits.shape
        return logits.view(n, 3, self.num_bins, h, w).transpose(1, 2)
