"""K independent networks as one: the members' channels side by side in grouped layers.

The Colored MNIST network is so small that a GPU step is bound by kernel launches, not by
arithmetic: one run of it leaves the device idle most of the time. Packing K runs makes every
layer K times wider without more launches: a convolution becomes a grouped one (``groups=K``)
whose group k holds member k's filters, a BatchNorm over K x C channels keeps each member's own
statistics, a linear layer becomes a batched product. No layer mixes members, so member k's
outputs and gradients are exactly those of its own network; with an element-wise optimizer
(SGD) its updates are too.

Layout: member k's copy of every parameter and buffer is the k-th of K equal slices along
dim 0. Activations are ``(N, K * C, ...)``, member k's channels in the k-th slice. Each packed
layer reads and writes one member's state under the names of the layer it was packed from
(:meth:`member_state_dict`, :meth:`load_member_state_dict`), so a member's weights go in and
come out as an ordinary run's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lnl_lightning.errors import ConfigError
from lnl_lightning.nets.builders import PixelColorHead


class Packed(nn.Module):
    """A layer holding K members; each member's state is the k-th slice along dim 0."""

    members: int

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s parameters and buffers, named as in the layer it was packed from."""
        state = {}
        for name, tensor in self.state_dict(keep_vars=False).items():
            if name.endswith("num_batches_tracked"):  # one counter: every member counts alike
                state[name] = tensor.clone()
            else:
                state[name] = tensor.chunk(self.members)[k].clone()
        return state

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Copy ``state`` (an unpacked layer's state, or part of it) into member ``k``'s slice."""
        own = self.state_dict(keep_vars=True)
        for name, value in state.items():
            if name not in own:
                raise KeyError(f"packed {type(self).__name__} has no '{name}'")
            if name.endswith("num_batches_tracked"):
                own[name].copy_(value)
            else:
                part = own[name].chunk(self.members)[k]
                part.copy_(value.reshape(part.shape))


class PackedConv2d(nn.Conv2d, Packed):
    """K convolutions side by side: ``groups`` times K groups."""

    def __init__(self, like: nn.Conv2d, members: int) -> None:
        nn.Conv2d.__init__(
            self,
            members * like.in_channels,
            members * like.out_channels,
            like.kernel_size,
            like.stride,
            like.padding,
            like.dilation,
            groups=members * like.groups,
            bias=like.bias is not None,
            padding_mode=like.padding_mode,
        )
        self.members = members


class PackedBatchNorm2d(nn.BatchNorm2d, Packed):
    """K BatchNorms over C channels as one over K x C: statistics stay per member and channel."""

    def __init__(self, like: nn.BatchNorm2d, members: int) -> None:
        nn.BatchNorm2d.__init__(
            self,
            members * like.num_features,
            like.eps,
            like.momentum,
            like.affine,
            like.track_running_stats,
        )
        self.members = members


class PackedLinear(Packed):
    """K linear layers on ``(N, K * in)``: one batched matrix product, ``(N, K * out)`` out."""

    def __init__(self, like: nn.Linear, members: int) -> None:
        super().__init__()
        self.members = members
        self.weight = nn.Parameter(torch.empty(members, like.out_features, like.in_features))
        self.bias = nn.Parameter(torch.empty(members, like.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = x.view(n, self.members, -1).transpose(0, 1)  # (K, N, in)
        out = torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))
        return out.transpose(0, 1).reshape(n, -1)

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return {name: value.squeeze(0) for name, value in super().member_state_dict(k).items()}


class PackedSequential(nn.Sequential, Packed):
    """An ``nn.Sequential`` of packed layers; members' states keep the Sequential's names."""

    def __init__(self, layers: Sequence[nn.Module], members: int) -> None:
        nn.Sequential.__init__(self, *layers)
        self.members = members

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return {
            f"{name}.{key}": value
            for name, layer in self.named_children()
            if isinstance(layer, Packed)
            for key, value in layer.member_state_dict(k).items()
        }

    def load_member_state_dict(self, k: int, state: dict[str, torch.Tensor]) -> None:
        for name, layer in self.named_children():
            prefix = f"{name}."
            part = {key[len(prefix) :]: v for key, v in state.items() if key.startswith(prefix)}
            if part:
                layer.load_member_state_dict(k, part)


class PackedPixelColorHead(Packed):
    """K official colour heads (three per-channel predictors each) as three grouped layers.

    Each member's three first convolutions read the same features, so they are stacked as one
    convolution of 3 x hidden outputs per member; the second convolutions are one group per
    (member, RGB channel). Logits come out ``(N, K, num_bins, 3, H, W)``.
    """

    def __init__(self, like: PixelColorHead, members: int) -> None:
        super().__init__()
        if like.shared:
            raise ConfigError("packing needs the official colour head: net.bias_head.shared=false")
        first, norm, _, second = like.channels[0]
        self.members, self.num_bins = members, like.num_bins
        hidden = first.out_channels
        self.conv1 = nn.Conv2d(
            members * first.in_channels,
            members * 3 * hidden,
            first.kernel_size,
            padding=first.padding,
            groups=members,
        )
        self.norm = nn.BatchNorm2d(members * 3 * hidden, norm.eps, norm.momentum)
        self.conv2 = nn.Conv2d(
            members * 3 * hidden,
            members * 3 * like.num_bins,
            second.kernel_size,
            padding=second.padding,
            groups=members * 3,
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.conv2(F.relu(self.norm(self.conv1(features))))
        n, _, h, w = logits.shape
        return logits.view(n, self.members, 3, self.num_bins, h, w).transpose(2, 3)

    # standalone names: channels.<c>.0 (conv), .1 (BatchNorm), .3 (conv)
    _LAYERS = (("conv1", "0"), ("norm", "1"), ("conv2", "3"))

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        state = {}
        for packed_name, index in self._LAYERS:
            for key, value in getattr(self, packed_name).state_dict().items():
                if key == "num_batches_tracked":
                    for c in range(3):
                        state[f"channels.{c}.{index}.{key}"] = value.clone()
                    continue
                for c, part in enumerate(value.chunk(self.members)[k].chunk(3)):
                    state[f"channels.{c}.{index}.{key}"] = part.clone()
        return state

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, torch.Tensor]) -> None:
        for packed_name, index in self._LAYERS:
            for key, tensor in getattr(self, packed_name).state_dict(keep_vars=True).items():
                for c in range(3):
                    value = state.get(f"channels.{c}.{index}.{key}")
                    if value is None:
                        continue
                    if key == "num_batches_tracked":
                        tensor.copy_(value)
                    else:
                        tensor.chunk(self.members)[k].chunk(3)[c].copy_(value)


_STATELESS = (nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity)


def _empty_packed(like: nn.Module, members: int) -> nn.Module:
    if isinstance(like, nn.Sequential):
        return PackedSequential([_empty_packed(layer, members) for layer in like], members)
    if isinstance(like, nn.Conv2d):
        return PackedConv2d(like, members)
    if isinstance(like, nn.BatchNorm2d):
        return PackedBatchNorm2d(like, members)
    if isinstance(like, nn.Linear):
        return PackedLinear(like, members)
    if isinstance(like, PixelColorHead):
        return PackedPixelColorHead(like, members)
    if isinstance(like, _STATELESS):
        return type(like)(**{k: getattr(like, k) for k in _stateless_args(like)})
    raise ConfigError(
        f"cannot pack a {type(like).__name__}: packing knows Sequential, Conv2d, BatchNorm2d, "
        f"Linear, ReLU, pooling and the official colour head (the Colored MNIST networks)"
    )


def _stateless_args(layer: nn.Module) -> tuple[str, ...]:
    if isinstance(layer, nn.MaxPool2d):
        return ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return ("output_size",)
    if isinstance(layer, nn.Flatten):
        return ("start_dim", "end_dim")
    return ()  # ReLU's inplace is irrelevant to the result; Identity has none


def pack(networks: Sequence[nn.Module]) -> nn.Module:
    """One packed network holding ``networks`` (same architecture) as members 0..K-1."""
    packed = _empty_packed(networks[0], len(networks))
    for k, network in enumerate(networks):
        packed.load_member_state_dict(k, network.state_dict())
    return packed


def pack_parameter_values(
    packed: nn.Module, member_values: Sequence[dict[str, torch.Tensor]]
) -> list[torch.Tensor]:
    """Per-parameter tensors of K members (e.g. SGD momentum buffers) laid out like the packed
    parameters: one tensor per ``packed.parameters()`` entry.

    ``member_values[k]`` maps each parameter name of member k's own network to its tensor;
    every parameter must have one.
    """
    names = [name for name, _ in packed.named_parameters()]
    shadow = copy.deepcopy(packed)
    with torch.no_grad():
        for p in shadow.parameters():
            p.fill_(float("nan"))  # a member without a value shows up, not a stale weight
        for k, values in enumerate(member_values):
            shadow.load_member_state_dict(k, values)
    packed_values = [p.detach().clone() for p in shadow.parameters()]
    for name, value in zip(names, packed_values, strict=True):
        if value.isnan().any():
            raise KeyError(f"a member has no value for the packed parameter '{name}'")
    return packed_values


def unpack_parameter_values(
    packed: nn.Module, packed_values: Sequence[torch.Tensor], k: int, names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Member ``k``'s part of per-parameter tensors, named as its own network's ``names``."""
    shadow = copy.deepcopy(packed)
    with torch.no_grad():
        for p, value in zip(shadow.parameters(), packed_values, strict=True):
            p.copy_(value)
    state = shadow.member_state_dict(k)
    return {name: state[name] for name in names}
