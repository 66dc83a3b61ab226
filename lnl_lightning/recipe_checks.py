"""Checks of the training recipe and the seeds, made before any work.

A value that cannot train (a learning rate of 0, a scheduler step of 0 epochs, a momentum of
2) would otherwise be accepted, or fail only after the first epoch, or end in a traceback of
the optimizer's own; here it ends with the key and what is expected.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from lnl_lightning.errors import ConfigError

MAX_SEED = 2**32 - 1  # numpy's and Lightning's limit


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive(key: str, value: Any, what: str = "a positive number") -> None:
    if not _number(value) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} must be {what}, got {value!r}")


def check_seed(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{key} must be an integer from 0 to {MAX_SEED}, got {value!r}")


def check_optimizer(key: str, node: Any) -> None:
    """An optimizer node (``_partial_`` torch.optim class): lr, momentum, weight decay."""
    if not isinstance(node, DictConfig):
        return
    check_positive(f"{key}.lr", node.get("lr"))
    momentum = node.get("momentum")
    if momentum is not None and (not _number(momentum) or not 0 <= momentum < 1):
        raise ConfigError(f"{key}.momentum must be in [0, 1), got {momentum!r}")
    decay = node.get("weight_decay")
    if decay is not None and (not _number(decay) or not math.isfinite(decay) or decay < 0):
        raise ConfigError(f"{key}.weight_decay must be a number >= 0, got {decay!r}")


def check_scheduler(key: str, node: Any) -> None:
    """A StepLR-like scheduler node: a whole number of epochs per step, a finite factor."""
    if not isinstance(node, DictConfig):
        return
    step = node.get("step_size")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 1):
        raise ConfigError(f"{key}.step_size must be a whole number of epochs >= 1, got {step!r}")
    if node.get("gamma") is not None:
        check_positive(f"{key}.gamma", node.get("gamma"), "a finite number > 0 (e.g. 0.1)")


def check_recipe(cfg: DictConfig) -> None:
    """The model's optimizers, scheduler and warm-start learning rate, and both seeds."""
    check_seed("seed", cfg.get("seed"))
    if cfg.get("data") is not None and "seed" in cfg.data:
        check_seed("data.seed", cfg.data.seed)
    model = cfg.get("model") or {}
    for name, node in model.items():
        if name.endswith("optimizer"):
            check_optimizer(f"model.{name}", node)
        elif name.endswith("scheduler"):
            check_scheduler(f"model.{name}", node)
    trainer = cfg.get("trainer") or {}
    for key, off in (("gradient_clip_val", None), ("accumulate_grad_batches", 1)):
        if trainer.get(key, off) not in (off, 0 if off is None else off):
            raise ConfigError(
                f"trainer.{key} cannot apply: the methods step their own optimizers (Lightning's "
                f"manual optimization), which Lightning does not clip or accumulate; remove it"
            )
    if model.get("warm_start_lr") is not None:
        check_positive("model.warm_start_lr", model.warm_start_lr)
