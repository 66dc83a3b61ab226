"""A literal port of the official Learning Not to Learn trainer, the reference of the tests.

Ported from feidfoe/learning-not-to-learn (``models.py``, ``trainer.py``, ``data_loader.py``)
as that code computes on PyTorch 0.4, written to run on today's PyTorch: the network and the
three colour predictors, ``_weights_init``, the colour target, ``_train_step`` and
``_train_step_baseline``. Two things of PyTorch 0.4 are spelled out because today's PyTorch
behaves differently: ``zero_grad()`` fills gradients with zeros instead of dropping them, and
``Variable`` wrapping is gone. Nothing here is imported by the package.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch import nn, optim

LAMBDA = 0.01  # hard-coded in the official _train_step
REVERSAL = 0.1  # hard-coded in the official GradReverse


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.neg() * REVERSAL


class convnet(nn.Module):  # lower case as there: _weights_init matches "Conv" in names
    """``models.convnet``: returns the 14x14 feature map and the label logits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(3)
        self.conv1 = nn.Conv2d(3, 32, kernel_size=5, stride=1, padding=2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, 32, kernel_size=3, stride=1, padding=1)
        self.conv3 = nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1)
        self.conv4 = nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1)
        self.avgpool = nn.AvgPool2d(7, stride=1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.relu(self.conv1(self.bn0(x)))
        x = self.maxpool(x)
        feat_out = x = self.relu(self.conv2(x))
        x = self.relu(self.conv3(x))
        x = self.relu(self.conv4(x))
        return feat_out, self.fc(self.avgpool(x).view(x.size(0), -1))


class Predictor(nn.Module):
    """``models.Predictor``: returns logits and softmax probabilities."""

    def __init__(self, input_ch: int = 32, num_classes: int = 8) -> None:
        super().__init__()
        self.pred_conv1 = nn.Conv2d(input_ch, input_ch, kernel_size=3, stride=1, padding=1)
        self.pred_bn1 = nn.BatchNorm2d(input_ch)
        self.relu = nn.ReLU(inplace=True)
        self.pred_conv2 = nn.Conv2d(input_ch, num_classes, kernel_size=3, stride=1, padding=1)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        x = self.pred_conv2(self.relu(self.pred_bn1(self.pred_conv1(x))))
        return x, self.softmax(x)


def weights_init(m: nn.Module) -> None:
    """``Trainer._weights_init``, applied to the main network only."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        m.weight.data.normal_(0, math.sqrt(2.0 / n))
    elif classname.find("BatchNorm") != -1:
        m.weight.data.fill_(1.0)
        m.bias.data.zero_()


def color_target(image: np.ndarray) -> torch.Tensor:
    """``WholeDataLoader.__getitem__``'s colour labels of one uint8 HxWx3 image."""
    label_image = Image.fromarray(image).resize((14, 14), Image.NEAREST)
    label_image = torch.from_numpy(np.transpose(np.asarray(label_image), (2, 0, 1)).copy())
    mask_image = torch.lt(label_image.float() - 0.00001, 0.0) * 255
    label_image = torch.div(label_image, 32, rounding_mode="floor")  # uint8 division in 0.4
    return (label_image + mask_image).long()


def zero_grad_04(optimizer: optim.Optimizer) -> None:
    """PyTorch 0.4's ``Optimizer.zero_grad``: existing gradients become zeros, not None."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                p.grad.detach_()
                p.grad.zero_()


class OfficialTrainer:
    """``trainer.Trainer``'s networks, optimizers and training steps."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4):
        self.net = convnet(10)
        self.pred_net_r = Predictor(32, 8)
        self.pred_net_g = Predictor(32, 8)
        self.pred_net_b = Predictor(32, 8)
        self.net.apply(weights_init)
        self.loss = nn.CrossEntropyLoss(ignore_index=255)
        self.color_loss = nn.CrossEntropyLoss(ignore_index=255)
        kwargs = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        self.optim = optim.SGD(self.net.parameters(), **kwargs)
        self.optim_r = optim.SGD(self.pred_net_r.parameters(), **kwargs)
        self.optim_g = optim.SGD(self.pred_net_g.parameters(), **kwargs)
        self.optim_b = optim.SGD(self.pred_net_b.parameters(), **kwargs)
        for module in self.modules():
            module.train()

    def modules(self) -> list[nn.Module]:
        return [self.net, self.pred_net_r, self.pred_net_g, self.pred_net_b]

    def optimizers(self) -> list[optim.Optimizer]:
        return [self.optim, self.optim_r, self.optim_g, self.optim_b]

    def _zero_all(self) -> None:
        for optimizer in self.optimizers():
            zero_grad_04(optimizer)

    def train_step(self, images, color_labels, labels) -> None:
        """One iteration of ``_train_step``."""
        self._zero_all()
        feat_label, pred_label = self.net(images)
        _, pseudo_pred_r = self.pred_net_r(feat_label)
        _, pseudo_pred_g = self.pred_net_g(feat_label)
        _, pseudo_pred_b = self.pred_net_b(feat_label)
        loss_pred = self.loss(pred_label, torch.squeeze(labels))
        loss_pseudo_pred_r = torch.mean(torch.sum(pseudo_pred_r * torch.log(pseudo_pred_r), 1))
        loss_pseudo_pred_g = torch.mean(torch.sum(pseudo_pred_g * torch.log(pseudo_pred_g), 1))
        loss_pseudo_pred_b = torch.mean(torch.sum(pseudo_pred_b * torch.log(pseudo_pred_b), 1))
        loss_pred_ps_color = (loss_pseudo_pred_r + loss_pseudo_pred_g + loss_pseudo_pred_b) / 3.0
        loss = loss_pred + loss_pred_ps_color * LAMBDA
        loss.backward()
        self.optim.step()

        self._zero_all()
        feat_label, pred_label = self.net(images)
        feat_color = GradReverse.apply(feat_label)
        pred_r, _ = self.pred_net_r(feat_color)
        pred_g, _ = self.pred_net_g(feat_color)
        pred_b, _ = self.pred_net_b(feat_color)
        loss_pred_r = self.color_loss(pred_r, color_labels[:, 0])
        loss_pred_g = self.color_loss(pred_g, color_labels[:, 1])
        loss_pred_b = self.color_loss(pred_b, color_labels[:, 2])
        loss_pred_color = loss_pred_r + loss_pred_g + loss_pred_b
        loss_pred_color.backward()
        self.optim.step()
        self.optim_r.step()
        self.optim_g.step()
        self.optim_b.step()

    def train_step_baseline(self, images, labels) -> None:
        """One iteration of ``_train_step_baseline``."""
        zero_grad_04(self.optim)
        _, pred_label = self.net(images)
        loss_pred = self.loss(pred_label, torch.squeeze(labels))
        loss_pred.backward()
        self.optim.step()
