"""Plain ``nn.Module`` builders for f (features), g (label head) and h (bias head).

The Colored MNIST networks follow the official Learning Not to Learn code: f maps a
28x28 image to a 32x14x14 feature map; g classifies it; h predicts the colour bin of
every pixel of that map for each RGB channel. For real images, ResNet-18 is split after
layer2 (f) as in the paper; h is a colour head on f's map or one linear layer on its
pooled features.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lnl_lightning.errors import DataNotFoundError
from lnl_lightning.schemas import check_choice


def he_normal_init(module: nn.Module) -> nn.Module:
    """The official ``_weights_init``: conv weights N(0, 2 / (k*k*out)), BatchNorm 1 and 0.

    Conv biases and linear layers keep PyTorch's default initialisation, as there.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            fan_out = layer.kernel_size[0] * layer.kernel_size[1] * layer.out_channels
            nn.init.normal_(layer.weight, 0.0, (2.0 / fan_out) ** 0.5)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


def mnist_feature_extractor(init: Init = "official") -> nn.Module:
    """f: BN(3) -> conv5x5 3->32 -> ReLU -> maxpool(3, 2) -> conv3x3 32->32 -> ReLU (32x14x14).

    ``init="official"`` applies :func:`he_normal_init`; ``"default"`` keeps PyTorch's.
    """
    return _initialised(
        init,
        nn.Sequential(
            nn.BatchNorm2d(3),
            nn.Conv2d(3, 32, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        ),
    )


def mnist_label_head(num_classes: int = 10, init: Init = "official") -> nn.Module:
    """g: conv3x3/2 32->64 -> ReLU -> conv3x3 64->64 -> ReLU -> global average pool -> linear.

    ``init`` as for :func:`mnist_feature_extractor`.
    """
    return _initialised(
        init,
        nn.Sequential(
            nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, num_classes),
        ),
    )


Init = Literal["official", "default"]  # He-normal as the official code, or PyTorch's


def _initialised(init: Init, module: nn.Module) -> nn.Module:
    init = check_choice("net.*.init", init, Init)
    return he_normal_init(module) if init == "official" else module


def _color_predictor(in_channels: int, hidden_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(hidden_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden_channels, out_channels, kernel_size=3, padding=1),
    )


class PixelColorHead(nn.Module):
    """h for colour bias: ``num_classes`` colour bins per pixel for each RGB channel.

    Official (``shared=False``): three independent predictors, one per channel, each
    conv3x3 -> BN -> ReLU -> conv3x3 to ``num_classes`` (the official ``pred_net_r/g/b``).
    ``shared=True`` is a weaker variant: one hidden layer shared by the three channels.
    Output logits are shaped ``(N, num_classes, 3, H, W)`` against a ``(N, 3, H, W)``
    colour-bin target.
    """

    target_kind = "pixel"  # BiasSpec.target_kind it fits

    def __init__(
        self,
        in_channels: int = 32,
        hidden_channels: int = 32,
        num_classes: int = 8,
        shared: bool = False,
    ) -> None:
        super().__init__()
        self.num_bins, self.shared = num_classes, shared
        if shared:
            self.layers = _color_predictor(in_channels, hidden_channels, 3 * num_classes)
        else:
            self.channels = nn.ModuleList(
                _color_predictor(in_channels, hidden_channels, num_classes) for _ in range(3)
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.shared:
            return torch.stack([head(features) for head in self.channels], dim=2)
        logits = self.layers(features)
        n, _, h, w = logits.shape
        return logits.view(n, 3, self.num_bins, h, w).transpose(1, 2)


class CategoricalBiasHead(nn.Module):
    """h for a categorical bias (age bins, gender): global average pool -> one linear layer."""

    target_kind = "image"  # BiasSpec.target_kind it fits

    def __init__(self, in_channels: int = 128, num_classes: int = 2) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pool(features).flatten(1))


def _resnet18(pretrained: bool) -> nn.Module:
    """torchvision ResNet-18, with ImageNet weights if asked; a clear error if unavailable."""
    from torchvision.models import ResNet18_Weights, resnet18

    if not pretrained:
        return resnet18(weights=None)
    try:
        return resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad cache a RuntimeError
        raise DataNotFoundError(
            f"net.pretrained=true needs torchvision's ImageNet weights for ResNet-18, which could "
            f"not be loaded ({err}). Put resnet18-f37072fd.pth in "
            f"{torch.hub.get_dir()}/checkpoints/ (or set TORCH_HOME), or run with "
            f"net.pretrained=false to train from scratch."
        ) from err


def resnet18_feature_extractor(pretrained: bool = True) -> nn.Module:
    """f: ResNet-18 stem + layer1 + layer2 (128 channels at 1/8 of the input size)."""
    net = _resnet18(pretrained)
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)


def resnet18_label_head(num_classes: int, pretrained: bool = True) -> nn.Module:
    """g: ResNet-18 layer3 + layer4 + global average pool + a new linear layer."""
    net = _resnet18(pretrained)
    return nn.Sequential(
        net.layer3, net.layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)
    )
