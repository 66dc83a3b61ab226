"""The engine's optimizers and schedulers from config, and warm start from an earlier run."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lnl_lightning.errors import ConfigError
from lnl_lightning.records.checkpoints import load_checkpoint, state_dict_differences

log = logging.getLogger(__name__)


class WarmStartOptimizers:
    """Optimizer and warm-start hooks of :class:`~.module.DebiasModule` (a mixin of it)."""

    init_from: str | None
    warm_start_lr: float | None
    _warm_optimizer_state: dict[str, Any] | None

    def configure_optimizers(self) -> Any:
        return self.make_optimizers(self.parameter_groups())

    def make_optimizers(self, parameter_groups: Sequence[Iterable[nn.Parameter]]) -> Any:
        """One optimizer (and scheduler) per parameter group from config, warm start applied:
        the warm-start checkpoint's f+g state goes into the first (a pack's is its members',
        packed by :func:`~lnl_lightning.engine.packed.pack_runs`)."""
        optimizers = [self.optimizer_factory(params) for params in parameter_groups]
        if self._warm_optimizer_state is not None:
            self._load_warm_optimizer_state(optimizers[0])
        if self.init_from and self.warm_start_lr is not None:
            for optimizer in optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] = self.warm_start_lr
        if self.scheduler_factory is None:
            return optimizers
        return optimizers, [self.scheduler_factory(optimizer) for optimizer in optimizers]

    def _load_warm_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        saved = copy.deepcopy(self._warm_optimizer_state)  # own tensors, not the mmap'd file's
        try:
            optimizer.load_state_dict(saved)
        except (ValueError, KeyError) as err:
            raise ConfigError(
                f"model.init_from: {self.init_from} holds an f+g optimizer state that does not "
                f"fit this run's optimizer and networks ({err})"
            ) from err
        log.info("Warm-started the f+g optimizer state (momentum buffers) from %s", self.init_from)

    def warm_start(self, path: str) -> None:
        """Load f and g (not h), and the f+g optimizer's state, from an earlier run's checkpoint.

        The optimizer state is applied when the optimizers are built; a checkpoint without
        one (weights only) warm-starts the weights alone.
        """
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError(
                f"model.init_from: there is no checkpoint {file}; warm-starting needs the run "
                f"that writes it (in make reproduce, the baseline of the same sigma^2 and seed) "
                f"to have finished"
            )
        checkpoint = load_checkpoint(file, "model.init_from")
        state = checkpoint["state_dict"]
        optimizer_states = checkpoint.get("optimizer_states") or []
        self._warm_optimizer_state = optimizer_states[0] if optimizer_states else None
        for prefix, module in (
            ("feature_extractor.", self.feature_extractor),
            ("label_head.", self.label_head),
        ):
            part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not part:
                raise ConfigError(f"model.init_from: {file} holds no '{prefix}*' weights")
            differences = state_dict_differences(part, module.state_dict())
            if differences:
                raise ConfigError(
                    f"model.init_from: {file} holds another {prefix.rstrip('.')} than this "
                    f"config builds ({differences}): warm-start from a run of the same net"
                )
            module.load_state_dict(part)
        log.info("Warm-started f and g from %s", file)
