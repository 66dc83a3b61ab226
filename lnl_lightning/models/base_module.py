"""What every debiasing method shares: everything but its update rule.

:class:`DebiasModule` owns evaluation (group accuracies, the label x bias matrix counts, the
bias head's accuracy), the training metrics, the non-finite guard, the backward pass followed
by an all-reduce of exactly the gradients it produced, RNG state in checkpoints, warm start,
and optimizers and schedulers from config. A method subclasses it and writes only
``training_step`` (and builds its own extra networks or state): see ``lnl_module.py``,
``blind_eye.py``, ``group_dro.py``, ``lff.py``. Its evaluation and checkpoint hooks live in
:class:`RunModule`, which the packed engine (``packed_module.py``) shares.

Every method trains the three networks f (``feature_extractor``), g (``label_head``) and h
(``bias_head``): h learns the bias on f's features in each of them (a probe on detached
features where the method does not use it), so the bias head's accuracy is comparable across
methods.
"""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lnl_lightning.checkpoints import load_checkpoint, state_dict_differences
from lnl_lightning.data.contract import (
    BIAS_GROUP,
    BIAS_TARGET,
    IGNORE_INDEX,
    IMAGE,
    LABEL,
    BiasSpec,
)
from lnl_lightning.errors import ConfigError, TrainingDiverged
from lnl_lightning.metrics import GroupAccuracy, group_summary
from lnl_lightning.models.distributed import all_reduce_buffers, all_reduce_gradients
from lnl_lightning.models.losses import bias_cross_entropy

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
NetworkFactory = Callable[[], dict[str, nn.Module]]
LOSS_TERMS = ("the label loss (train/label_loss)", "the bias loss (train/bias_loss)")


def rng_states() -> dict[str, Any]:
    """Python's, NumPy's and torch's generator states, as plain data and tensors."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` saved."""
    random.setstate(states["python"])
    name, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    saved = states["cuda"]
    if saved and torch.cuda.is_available():
        # one state per GPU of the saving machine: restore those this machine has
        count = torch.cuda.device_count()
        if len(saved) != count:
            log.warning(
                "the checkpoint holds the CUDA generator states of %d GPU(s), this machine "
                "has %d: restoring the first %d",
                len(saved),
                count,
                min(len(saved), count),
            )
        for index, state in enumerate(saved[:count]):
            torch.cuda.set_rng_state(state, index)


def check_weight(key: str, value: Any) -> float:
    """A method's weight or step size: a finite number >= 0, else an error naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ConfigError(f"model.{key} must be a finite number >= 0, got {value!r}")
    return float(value)


class RunModule(pl.LightningModule):
    """What every run's module shares, a method's or a pack's: evaluation and checkpoints.

    Validation runs the ``val`` split and, with ``data.test_each_epoch``, the test splits
    (loaders after the first, logged under ``test_names`` for learning curves; only ``val/``
    selects anything); testing runs the test splits. A subclass says how to evaluate a batch
    (:meth:`_evaluate`), what to do before an evaluation epoch (:meth:`_start_evaluation`)
    and how to close a stage (:meth:`_finish_stage`). Checkpoints carry the generator
    states, and are refused while a loss is non-finite (:meth:`_stop_if_diverged`).
    """

    test_names: tuple[str, ...]
    _stages_evaluated: set[str]

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        raise NotImplementedError

    def _start_evaluation(self) -> None:
        """Before each validation or test epoch."""

    def _finish_stage(self, stage: str) -> None:
        raise NotImplementedError

    def _stop_if_diverged(self) -> None:
        raise NotImplementedError

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._stop_if_diverged()  # whoever saves: never NaN weights over a good checkpoint
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        stage = ("val", *self.test_names)[dataloader_idx]
        self._stages_evaluated.add(stage)
        self._evaluate(batch, stage)

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()
        self._stages_evaluated = set()

    def on_validation_epoch_end(self) -> None:
        for stage in ("val", *self.test_names):
            if stage in self._stages_evaluated:  # data.val_fraction=0: no validation metrics
                self._finish_stage(stage)

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluate(batch, self.test_names[dataloader_idx])

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def on_test_epoch_end(self) -> None:
        for name in self.test_names:
            self._finish_stage(name)


class DebiasModule(RunModule):
    """Base of every method: f, g, h, evaluation, guard, checkpoints, optimizers.

    Subclasses implement ``training_step`` with manual optimization: take their
    optimizers from ``self.optimizers()`` (one per entry of :meth:`parameter_groups`, in
    that order), call :meth:`backward_and_reduce` for each backward pass and
    :meth:`record_step` once per batch.

    Args:
        feature_extractor: f.
        label_head: g.
        bias_head: h; its logits have the bias classes on dim 1.
        bias_spec: the datamodule's description of labels and bias.
        method: the run's method label (each ``conf/model/<method>.yaml`` sets it): what the
            report, W&B groups and metrics.json call this run.
        optimizer: factory ``params -> optimizer`` (a Hydra partial); one optimizer is
            built per entry of :meth:`parameter_groups` (f+g, h, then a method's own).
        scheduler: factory ``optimizer -> LR scheduler`` stepped once per epoch, or None.
        test_names: metric prefix of each test dataloader, in order (``test/acc``,
            ``test_tb2/acc``, ...).
        init_from: Lightning checkpoint whose f and g weights, and the f+g optimizer's
            state (momentum buffers), warm-start this run, as the official ``_load_model``
            does; h (and a method's own networks) start afresh.
        warm_start_lr: learning rate used instead of the optimizer's when ``init_from``
            is set (the official code fine-tunes at 0.001); None keeps the optimizer's.
        make_networks: builds a fresh, independently initialised ``{feature_extractor,
            label_head, bias_head}`` from the run's ``net`` config, for methods that train a
            second network (LfF's biased twin).
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        label_head: nn.Module,
        bias_head: nn.Module,
        bias_spec: BiasSpec,
        method: str,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        test_names: Sequence[str] = ("test",),
        init_from: str | None = None,
        warm_start_lr: float | None = 0.001,
        make_networks: NetworkFactory | None = None,
    ) -> None:
        super().__init__()
        if not method or not isinstance(method, str):
            raise ConfigError(f"model.method must name the method (a string), got {method!r}")
        self.automatic_optimization = False
        self.method = method
        self.feature_extractor = feature_extractor
        self.label_head = label_head
        self.bias_head = bias_head
        self.bias_spec = bias_spec
        self.optimizer_factory = optimizer or (lambda params: torch.optim.SGD(params, lr=0.01))
        self.scheduler_factory = scheduler
        self.init_from = init_from
        self.warm_start_lr = warm_start_lr
        # make_networks is for a method's own __init__ (not kept: the module must pickle)
        self.test_names = tuple(test_names)
        stages = ("val", *self.test_names)

        # persistent: a checkpoint taken mid-epoch carries the epoch's running means
        self.train_label_loss = MeanMetric()
        self.train_bias_loss = MeanMetric()
        self.train_acc = MeanMetric()
        for metric in (self.train_label_loss, self.train_bias_loss, self.train_acc):
            metric.persistent(True)
        self.group_acc = nn.ModuleDict(
            {
                stage: GroupAccuracy(bias_spec.aligned_mask(), bias_spec.conflicting_mask())
                for stage in stages
            }
        )
        self.bias_acc = nn.ModuleDict(
            {
                stage: MulticlassAccuracy(
                    num_classes=bias_spec.num_bias_classes,
                    average="micro",
                    ignore_index=IGNORE_INDEX,
                    validate_args=False,  # its checks wait for the GPU on every batch
                )
                for stage in stages
            }
        )
        # Synced (correct, total) counts of the last val/test epoch, for the run folder.
        self.group_counts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._first_bad: torch.Tensor | None = None  # first non-finite batch of each loss term
        self._batches_seen = 0
        self._warm_optimizer_state: dict[str, Any] | None = None
        self._stages_evaluated: set[str] = set()
        if init_from:
            self.warm_start(init_from)

    # ------------------------------------------------------------ for methods
    def save_method_hyperparameters(self, **settings: Any) -> None:
        """Checkpoint the method's own settings beside its label and warm start."""
        self.save_hyperparameters(
            {
                "method": self.method,
                **settings,
                "init_from": self.init_from,
                "warm_start_lr": self.warm_start_lr,
            }
        )

    def backward_and_reduce(self, loss: torch.Tensor, modules: list[nn.Module]) -> None:
        """Backward; with several processes, then one all-reduce of ``modules``' gradients.

        DDP's own reducer expects one backward per step reaching every parameter; methods
        with several passes per step reach only some. So each backward runs in ``no_sync()``
        and the gradients it produced (those of ``modules``) are averaged in one call.
        """
        model = self.trainer.model
        with model.no_sync() if isinstance(model, DistributedDataParallel) else nullcontext():
            self.manual_backward(loss)
        all_reduce_gradients(modules)

    def train_bias_probe(
        self, batch: dict[str, torch.Tensor], features: torch.Tensor, opt_bias: Any
    ) -> torch.Tensor:
        """h learns the bias on detached features (moves nothing but h); returns its loss."""
        bias_loss = bias_cross_entropy(self.bias_head(features.detach()), batch[BIAS_TARGET])
        opt_bias.zero_grad()
        self.backward_and_reduce(bias_loss, [self.bias_head])
        opt_bias.step()
        return bias_loss

    def record_step(
        self,
        batch: dict[str, torch.Tensor],
        batch_idx: int,
        label_loss: torch.Tensor,
        label_logits: torch.Tensor,
        bias_loss: torch.Tensor,
    ) -> None:
        """The step's losses and accuracy into the epoch means, the log and the guard."""
        self._watch_losses(label_loss, bias_loss, batch_idx)
        n = len(batch[LABEL])
        self.train_label_loss.update(label_loss.detach(), n)
        self.train_bias_loss.update(bias_loss.detach(), n)
        self.train_acc.update((label_logits.argmax(1) == batch[LABEL]).float().mean(), n)
        self.log("train/label_loss", label_loss.detach(), prog_bar=True)
        self.log("train/bias_loss", bias_loss.detach(), prog_bar=True)

    def train_label_groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split's labels and bias groups by position, from the datamodule."""
        datamodule = self.trainer.datamodule
        if not hasattr(datamodule, "train_label_groups"):
            raise ConfigError(
                f"model={self.method} needs the training split's labels and groups by "
                f"position, but {type(datamodule).__name__} has no train_label_groups()"
            )
        return datamodule.train_label_groups()

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        """One optimizer per entry: f+g first (the one warm start restores), then h."""
        return [
            [*self.feature_extractor.parameters(), *self.label_head.parameters()],
            list(self.bias_head.parameters()),
        ]

    # ------------------------------------------------------------------ guard
    def _watch_losses(
        self, label_loss: torch.Tensor, bias_loss: torch.Tensor, batch_idx: int
    ) -> None:
        """Remember the first step with a non-finite loss; look (one sync) every 50 steps."""
        bad = ~torch.isfinite(torch.stack([label_loss.detach(), bias_loss.detach()]))
        first = (
            self._first_bad
            if self._first_bad is not None
            else torch.full_like(bad, -1, dtype=torch.long)
        )
        self._batches_seen += 1
        self._first_bad = torch.where(bad & (first < 0), self._batches_seen, first)
        if (batch_idx + 1) % 50 == 0:
            self._stop_if_diverged()

    def _stop_if_diverged(self) -> None:
        if self._first_bad is None or not (self._first_bad >= 0).any():
            return
        term, step = next(
            (n, int(s)) for n, s in zip(LOSS_TERMS, self._first_bad.tolist(), strict=True) if s >= 0
        )
        raise TrainingDiverged(
            f"training diverged: {term} became NaN or infinite at training batch {step} of this "
            f"run (epoch {self.current_epoch}); stopped before saving those weights, earlier "
            f"checkpoints are kept. Lower model.optimizer.lr or the loss weights."
        )

    def on_train_epoch_end(self) -> None:
        self._stop_if_diverged()  # before the checkpoint callbacks run
        self.log("train/label_loss_epoch", self.train_label_loss.compute())
        self.log("train/bias_loss_epoch", self.train_bias_loss.compute())
        self.log("train/acc", self.train_acc.compute())
        for metric in (self.train_label_loss, self.train_bias_loss, self.train_acc):
            metric.reset()
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    # ---------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        features = self.feature_extractor(batch[IMAGE])
        label_logits = self.label_head(features)
        self.group_acc[stage].update(label_logits, batch[LABEL], batch[BIAS_GROUP])
        self.bias_acc[stage].update(self.bias_head(features), batch[BIAS_TARGET])

    def _finish_stage(self, stage: str) -> None:
        group_acc = self.group_acc[stage]
        with group_acc.sync_context():  # counts summed over processes, once
            correct, total = group_acc.correct.cpu().clone(), group_acc.total.cpu().clone()
        self.group_counts[stage] = (correct, total)
        summary = group_summary(correct, total, group_acc.aligned_mask, group_acc.conflicting_mask)
        values = {f"{stage}/{name}": value.to(self.device) for name, value in summary.items()}
        values[f"{stage}/bias_acc"] = self.bias_acc[stage].compute()
        self.log_dict(values, prog_bar=False)
        fn = self.trainer.state.fn
        repeated = fn == "validate" and stage != "val"  # the test call reports the test splits
        if not self.trainer.sanity_checking and self.trainer.is_global_zero and not repeated:
            summary = ", ".join(f"{k} {v.item():.4f}" for k, v in values.items())
            when = f"epoch {self.current_epoch}" if self.trainer.state.fn == "fit" else "final"
            log.info("%s  %s", when, summary)
        group_acc.reset()
        self.bias_acc[stage].reset()

    def networks(self) -> list[nn.Module]:
        """The trained networks: f, g, h, and a method's own (their BatchNorm is shared)."""
        return [self.feature_extractor, self.label_head, self.bias_head]

    def _start_evaluation(self) -> None:
        all_reduce_buffers(self.networks())  # BatchNorm statistics shared over processes

    # ----------------------------------------------------------------- set-up
    def configure_optimizers(self) -> Any:
        return self.make_optimizers(self.parameter_groups())

    def make_optimizers(
        self,
        parameter_groups: Sequence[Iterable[nn.Parameter]],
        load_warm_state: Callable[[torch.optim.Optimizer], None] | None = None,
    ) -> Any:
        """One optimizer (and scheduler) per parameter group from config, warm start applied.

        ``load_warm_state`` puts the warm-start checkpoint's f+g state into the first
        optimizer (default: :meth:`_load_warm_optimizer_state`; a pack packs its members').
        """
        optimizers = [self.optimizer_factory(params) for params in parameter_groups]
        if self._warm_optimizer_state is not None:
            (load_warm_state or self._load_warm_optimizer_state)(optimizers[0])
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
