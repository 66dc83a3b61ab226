"""K runs of one method trained as one: the packing adapter of the engine.

Each member is an ordinary run's module, built from its own config and seed, so it starts
exactly as its own run would (initial weights, warm start, optimizer settings).
:func:`pack_runs` builds the same method's module over K-wide copies of their networks
(:mod:`.packing`), with each member's own settings (an LNL member's lambda and mu) and its
warm-start momentum; the engine then trains them on batches that hold one batch of each
member's data side by side (member k sees its own images, in its own order).
:func:`unpack_runs` writes each member's weights and optimizer state back into its own
module, ready to be saved as an ordinary run's checkpoint; :func:`load_member_weights` puts
such a checkpoint's weights back into the pack (testing each member's best).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lnl_lightning.engine.module import DebiasModule
from lnl_lightning.errors import ConfigError
from lnl_lightning.nets.packing import pack, pack_parameter_values, unpack_parameter_values

# the engine's own arguments: the members' are taken as they are, or must agree
ENGINE_SETTINGS = ("method", "init_from", "warm_start_lr")
MAIN_NETWORKS, BIAS_NETWORKS = ("feature_extractor", "label_head"), ("bias_head",)


def pack_runs(members: Sequence[DebiasModule], cuda_graph: bool = False) -> DebiasModule:
    """One module of the members' method training them all, each exactly as alone.

    The members must share everything but their seed (initial weights, data order), data and
    the method's ``member_settings``; either all are warm-started or none is. A method that
    cannot train as a pack (``packable`` false) is refused by name.
    """
    members = list(members)
    first = members[0]
    method = type(first)
    for member in members:
        if not type(member).packable:
            raise ConfigError(
                f"packed runs hold methods whose step runs over several members (model=lnl, "
                f"baseline); {member.method} ({type(member).__name__}) trains alone: drop "
                f"hydra/launcher=packed or perf=fast"
            )
        if type(member) is not method:
            raise ConfigError(
                f"a pack holds runs of one method, got {first.method} and {member.method}"
            )
    if cuda_graph and not method.graph_safe:
        raise ConfigError(f"perf.cuda_graph: model={first.method} cannot be replayed")
    if len({bool(m.init_from) for m in members}) > 1:
        raise ConfigError("in a pack, either every member is warm-started or none is")
    shared = {
        key: value
        for key, value in first.hparams.items()
        if key not in ENGINE_SETTINGS and key not in method.member_settings
    }
    for member in members[1:]:
        for key, value in shared.items():
            if member.hparams.get(key) != value:
                raise ConfigError(
                    f"runs in one pack share model.{key}: {value!r} and {member.hparams.get(key)!r}"
                )
    own = {key: [m.hparams[key] for m in members] for key in method.member_settings}
    packed = method(
        *(pack([getattr(m, name) for m in members]) for name in (*MAIN_NETWORKS, *BIAS_NETWORKS)),
        first.bias_spec,
        method=first.method,
        optimizer=first.optimizer_factory,
        scheduler=first.scheduler_factory,
        test_names=first.test_names,
        val_names=first.val_names,
        warm_start_lr=first.warm_start_lr,
        **shared,
        **own,
    )
    packed.members = members  # a plain list: their networks are not trained, the pack's are
    packed.init_from = first.init_from  # the members warm-started themselves; the lr follows
    packed.cuda_graph = cuda_graph
    if first._warm_optimizer_state is not None:
        packed._warm_optimizer_state = _packed_warm_state(packed, members)
    return packed


def _packed_warm_state(packed: DebiasModule, members: list[DebiasModule]) -> dict[str, Any]:
    """The members' warm-start f+g optimizer states (momentum buffers) as one state of the
    pack's f+g optimizer."""
    values: dict[str, list[dict[str, torch.Tensor]]] = {name: [] for name in MAIN_NETWORKS}
    for member in members:
        own = member.optimizer_factory(_parameters(member, MAIN_NETWORKS))
        member._load_warm_optimizer_state(own)
        for name in MAIN_NETWORKS:
            net = getattr(member, name)
            values[name].append(
                {n: own.state[p]["momentum_buffer"] for n, p in net.named_parameters()}
            )
    buffers = [
        buffer
        for name in MAIN_NETWORKS
        for buffer in pack_parameter_values(getattr(packed, name), values[name])
    ]
    state = copy.deepcopy(members[0]._warm_optimizer_state)
    state["state"] = {index: {"momentum_buffer": b} for index, b in enumerate(buffers)}
    for group in state["param_groups"]:  # one group: f+g
        group["params"] = list(range(len(buffers)))
    return state


def _parameters(module: nn.Module, names: Sequence[str]) -> list[nn.Parameter]:
    return [p for name in names for p in getattr(module, name).parameters()]


@torch.no_grad()
def unpack_runs(packed: DebiasModule) -> list[DebiasModule]:
    """Copy each member's trained weights back into its own module; return the members.

    Each member also gets ``packed_optimizer_states``: its f+g and h optimizer states in the
    layout of its own optimizers, as an ordinary run's checkpoint holds them.
    """
    optimizers = packed.trainer.optimizers if packed._trainer is not None else []
    for k, member in enumerate(packed.members):
        member.to(dtype=packed.dtype)  # e.g. float64 under trainer.precision=64-true
        for name in (*MAIN_NETWORKS, *BIAS_NETWORKS):
            getattr(member, name).load_state_dict(
                {n: v.cpu() for n, v in getattr(packed, name).member_state_dict(k).items()}
            )
        member.packed_optimizer_states = [
            _member_optimizer_state(packed, optimizer, k, member, names)
            for optimizer, names in zip(optimizers, (MAIN_NETWORKS, BIAS_NETWORKS), strict=False)
        ]
    return packed.members


@torch.no_grad()
def load_member_weights(packed: DebiasModule, k: int, state_dict: dict[str, torch.Tensor]) -> None:
    """Put an ordinary checkpoint's weights (``state_dict`` of member ``k``'s own module, as
    :func:`unpack_runs` saves it) into member ``k``'s slice of the pack, e.g. its best."""
    member = packed.members[k]
    member.load_state_dict(state_dict)  # strict: the member's own names and shapes
    for name in (*MAIN_NETWORKS, *BIAS_NETWORKS):
        getattr(packed, name).load_member_state_dict(k, getattr(member, name).state_dict())


def _member_optimizer_state(
    packed: DebiasModule,
    optimizer: torch.optim.Optimizer,
    k: int,
    member: DebiasModule,
    names: tuple[str, ...],
) -> dict[str, Any]:
    own = member.optimizer_factory(_parameters(member, names))
    for group, packed_group in zip(own.param_groups, optimizer.param_groups, strict=True):
        for key, value in packed_group.items():
            if key != "params":
                group[key] = value
    for name in names:
        packed_net, net = getattr(packed, name), getattr(member, name)
        packed_params = list(packed_net.parameters())
        if any("momentum_buffer" not in optimizer.state.get(p, {}) for p in packed_params):
            continue  # never stepped: no momentum yet
        values = [optimizer.state[p]["momentum_buffer"] for p in packed_params]
        net_names = [n for n, _ in net.named_parameters()]
        member_values = unpack_parameter_values(packed_net, values, k, net_names)
        for n, p in net.named_parameters():
            own.state[p]["momentum_buffer"] = member_values[n].cpu().clone()
    return own.state_dict()
