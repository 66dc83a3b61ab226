"""The engine: one LightningModule for every method, training K >= 1 runs at once.

:class:`DebiasModule` owns everything but a method's update rule: the member axis, evaluation
(group accuracies, the label x bias matrix counts, the bias head's accuracy), the training
sums, the non-finite guard, the backward pass followed by an all-reduce of exactly the
gradients it produced, the CUDA-graph replay, RNG state in checkpoints, warm start, and
optimizers and schedulers from config. A method subclasses it and writes only ``update``
(and builds its own extra networks or state): see ``methods/lnl.py``, ``blind_eye.py``,
``group_dro.py``, ``lff.py``.

Members: an ordinary run is one member (K = 1) over plain networks. A pack
(:func:`~lnl_lightning.engine.packed.pack_runs`) is the same class over K-wide networks
(:mod:`.packing`), each member an ordinary run's f, g, h side by side; batches then carry
the member axis (``label (N, K)``, ...). A method's ``update`` is written once over that
axis: :meth:`DebiasModule.by_member` puts batch fields and network outputs in the layout
``(N, K, ...)``, the losses of :mod:`.losses` give one value per member, ``(K,)``.

Every method trains the three networks f (``feature_extractor``), g (``label_head``) and h
(``bias_head``): h learns the bias on f's features in each of them (a probe on detached
features where the method does not use it), so the bias head's accuracy is comparable across
methods.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lnl_lightning.data.contract import BIAS_TARGET, LABEL, BiasSpec
from lnl_lightning.engine.cuda_graph import GraphedStep
from lnl_lightning.engine.distributed import all_reduce_gradients
from lnl_lightning.engine.evaluation import MemberEvaluation
from lnl_lightning.engine.rng import rng_states, set_rng_states
from lnl_lightning.engine.warm_start import WarmStartOptimizers
from lnl_lightning.errors import ConfigError, TrainingDiverged
from lnl_lightning.methods.losses import member_bias_cross_entropy, member_label_cross_entropy
from lnl_lightning.records.checkpoints import upgrade_checkpoint

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
NetworkFactory = Callable[[], dict[str, nn.Module]]
Backward = Callable[[torch.Tensor, list[nn.Module]], None]
LOSS_TERMS = ("the label loss (train/label_loss)", "the bias loss (train/bias_loss)")
TRAIN_SUMS = ("label loss x images", "bias loss x images", "correct labels", "images")


def check_weight(key: str, value: Any) -> float:
    """A method's weight or step size: a finite number >= 0, else an error naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ConfigError(f"model.{key} must be a finite number >= 0, got {value!r}")
    return float(value)


def member_values(key: str, value: Any) -> list[float]:
    """A method's weight for each member: one number (a run) or one per member (a pack)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return [check_weight(key, v) for v in values]


class StepResult(NamedTuple):
    """What a method's update gives back, per member, for the epoch sums, guard and log."""

    label_loss: torch.Tensor  # (K,) the loss g is judged by (train/label_loss)
    label_logits: torch.Tensor  # (N, K, classes), for the training accuracy
    bias_loss: torch.Tensor  # (K,) h's loss (train/bias_loss)
    logged: dict[str, torch.Tensor] | None = None  # more (K,) values to log, by name


class DebiasModule(MemberEvaluation, WarmStartOptimizers, GraphedStep, pl.LightningModule):
    """The engine of every method: f, g, h of K >= 1 members, evaluation, guard, optimizers.

    A method implements :meth:`update` (the training step on one batch, with manual
    optimization: one optimizer per entry of :meth:`parameter_groups`, in that order, and
    ``backward(loss, modules)`` for each backward pass) and returns a :class:`StepResult`.
    Validation runs the validation splits (``val_names``) and, with ``data.test_each_epoch``,
    the test splits (the loaders after them, logged under ``test_names`` for learning curves;
    only validation selects anything); testing runs the test splits.

    A method whose update is written over the member axis sets ``packable`` (and lists in
    ``member_settings`` the settings members of one pack may differ in); one that does no
    host sync and writes its state in place sets ``graph_safe``.

    Args:
        feature_extractor: f.
        label_head: g.
        bias_head: h; its logits have the bias classes on dim 1 (dim 2 for packed heads).
        bias_spec: the datamodule's description of labels and bias.
        method: the run's method label (each ``conf/model/<method>.yaml`` sets it): what the
            report, W&B groups and metrics.json call this run.
        optimizer: factory ``params -> optimizer`` (a Hydra partial); one optimizer is
            built per entry of :meth:`parameter_groups` (f+g, h, then a method's own).
        scheduler: factory ``optimizer -> LR scheduler`` stepped once per epoch, or None.
        test_names: metric prefix of each test dataloader, in order (``test/acc``,
            ``test_tb2/acc``, ...).
        val_names: metric prefix of each validation dataloader, in order: ``val`` (held out,
            distributed like training) and, where the data gives it, ``val_random`` (held
            out, its bias drawn at random as in test).
        init_from: Lightning checkpoint whose f and g weights, and the f+g optimizer's
            state (momentum buffers), warm-start this run, as the official ``_load_model``
            does; h (and a method's own networks) start afresh.
        warm_start_lr: learning rate used instead of the optimizer's when ``init_from``
            is set (the official code fine-tunes at 0.001); None keeps the optimizer's.
        make_networks: builds a fresh, independently initialised ``{feature_extractor,
            label_head, bias_head}`` from the run's ``net`` config, for methods that train a
            second network (LfF's biased twin).
    """

    packable = False
    graph_safe = False
    member_settings: tuple[str, ...] = ()

    @classmethod
    def can_pack(cls, settings: Any) -> bool:
        """Whether runs with these ``model`` settings can train as members of one pack."""
        return cls.packable

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
        val_names: Sequence[str] = ("val",),
    ) -> None:
        super().__init__()
        if not method or not isinstance(method, str):
            raise ConfigError(f"model.method must name the method (a string), got {method!r}")
        self.automatic_optimization = False
        self.method = method
        self.feature_extractor = feature_extractor
        self.label_head = label_head
        self.bias_head = bias_head
        # K-wide networks (packing.pack) carry their member count: this module is a pack
        self.packed = hasattr(feature_extractor, "members")
        self.num_members = int(getattr(feature_extractor, "members", 1))
        self.members: list[DebiasModule] = []  # the runs a pack trains (packed.pack_runs)
        self.bias_spec = bias_spec
        self.optimizer_factory = optimizer or (lambda params: torch.optim.SGD(params, lr=0.01))
        self.scheduler_factory = scheduler
        self.init_from = init_from
        self.warm_start_lr = warm_start_lr
        # make_networks is for a method's own __init__ (not kept: the module must pickle)
        self.test_names, self.val_names = tuple(test_names), tuple(val_names)
        self._init_graph(cuda_graph=False)
        stages = (*self.val_names, *self.test_names)
        k = self.num_members

        # Per member, persistent (a mid-epoch checkpoint carries them), written in place (a
        # CUDA graph replays the writes): the epoch's sums (TRAIN_SUMS), the first batch whose
        # loss terms (LOSS_TERMS) were not finite (-1: none yet), the batches trained.
        self.register_buffer("train_sums", torch.zeros(k, len(TRAIN_SUMS), dtype=torch.float64))
        self._sums_are_global = False  # True from an epoch's end to the next one's start
        self.register_buffer("first_bad", torch.full((k, len(LOSS_TERMS)), -1, dtype=torch.long))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._init_evaluation(bias_spec, stages)
        self._member_constants: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}
        self._warm_optimizer_state: dict[str, Any] | None = None
        if init_from:
            self.warm_start(init_from)

    # ------------------------------------------------------------ for methods
    def update(
        self, batch: dict[str, torch.Tensor], optimizers: Sequence[Any], backward: Backward
    ) -> StepResult:
        """The method's training step on ``batch``; see the class docstring."""
        raise NotImplementedError

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

    def by_member(self, x: torch.Tensor) -> torch.Tensor:
        """A batch field or a network's output in the member layout ``(N, K, ...)``.

        A run: a plain batch field or output gains the axis. A pack: its batch fields and
        packed bias head have it already; a packed label head's ``(N, K * C)`` is split.
        """
        if not self.packed:
            return x.unsqueeze(1)
        return x.view(len(x), self.num_members, -1) if x.dim() == 2 and x.is_floating_point() else x

    def member_constant(self, name: str, values: Sequence[float], like: torch.Tensor) -> Any:
        """Per-member weights as a multiplier of ``(K,)`` losses: the number itself for one
        member (exactly a run's product), else a ``(K,)`` tensor like ``like`` (cached, so a
        captured step creates none)."""
        if self.num_members == 1:
            return values[0]
        key = (name, like.device, like.dtype)
        if key not in self._member_constants:
            self._member_constants[key] = torch.tensor(values, dtype=like.dtype, device=like.device)
        return self._member_constants[key]

    def channel_scale(self, name: str, values: Sequence[float], features: torch.Tensor) -> Any:
        """Per-member numbers spread over f's channels (member k's are the k-th slice)."""
        if self.num_members == 1:
            return values[0]
        per_member = self.member_constant(name, values, features)
        per_channel = per_member.repeat_interleave(features.shape[1] // self.num_members)
        return per_channel.view(1, -1, *[1] * (features.dim() - 2))

    def label_loss(
        self, label_logits: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Each member's mean cross-entropy of g's logits, ``(K,)``."""
        return member_label_cross_entropy(
            self.by_member(label_logits), self.by_member(batch[LABEL])
        )

    def bias_loss(self, bias_logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each member's bias loss of h's logits (:func:`member_bias_cross_entropy`), ``(K,)``."""
        return member_bias_cross_entropy(
            self.by_member(bias_logits), self.by_member(batch[BIAS_TARGET])
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
        self,
        batch: dict[str, torch.Tensor],
        features: torch.Tensor,
        opt_bias: Any,
        backward: Backward,
    ) -> torch.Tensor:
        """h learns the bias on detached features (moves nothing but h); returns its loss."""
        bias_loss = self.bias_loss(self.bias_head(features.detach()), batch)
        opt_bias.zero_grad()
        backward(bias_loss.sum(), [self.bias_head])
        opt_bias.step()
        return bias_loss

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

    def networks(self) -> list[nn.Module]:
        """The trained networks: f, g, h, and a method's own (their BatchNorm is shared)."""
        return [self.feature_extractor, self.label_head, self.bias_head]

    def describe_member(self, k: int) -> str:
        """Member ``k``'s own settings, for messages (a pack's members differ in these)."""
        own = {name: self.hparams[name] for name in self.member_settings}
        if self.packed:  # a pack's hyperparameters hold one value per member
            own = {name: values[k] for name, values in own.items()}
        return ", ".join(f"{name} {value}" for name, value in own.items())

    # --------------------------------------------------------------- training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        if self.cuda_graph:
            result = self._graph_step(batch, optimizers, self._raw_step)
        else:
            result = self._step(batch, optimizers, self.backward_and_reduce)
        if not self.packed:  # a pack's members log per epoch, each to its own run
            self.log("train/label_loss", result.label_loss[0].detach(), prog_bar=True)
            self.log("train/bias_loss", result.bias_loss[0].detach(), prog_bar=True)
            for name, value in (result.logged or {}).items():
                self.log(name, value[0].detach())
        if (batch_idx + 1) % 50 == 0:
            self._stop_if_diverged()  # one host sync every 50 batches

    def _step(
        self, batch: dict[str, torch.Tensor], optimizers: Sequence[Any], backward: Backward
    ) -> StepResult:
        """The method's update and the engine's bookkeeping: what a CUDA graph captures."""
        result = self.update(batch, optimizers, backward)
        self._record(batch, result)
        return result

    def _raw_step(
        self, batch: dict[str, torch.Tensor], optimizers: Sequence[torch.optim.Optimizer]
    ) -> StepResult:
        """:meth:`_step` on the raw optimizers, with a plain backward (as a graph captures)."""
        return self._step(batch, optimizers, lambda loss, modules: loss.backward())

    @torch.no_grad()
    def _record(self, batch: dict[str, torch.Tensor], result: StepResult) -> None:
        """Epoch sums per member and the first non-finite batch, without a host sync."""
        label_loss, bias_loss = result.label_loss.detach(), result.bias_loss.detach()
        labels = self.by_member(batch[LABEL])
        n = len(labels)
        correct = (result.label_logits.detach().argmax(2) == labels).sum(0)
        step = torch.stack([label_loss * n, bias_loss * n, correct, torch.full_like(correct, n)])
        self.train_sums += step.t().double()
        self._watch(label_loss, bias_loss)

    def _watch(self, label_loss: torch.Tensor, bias_loss: torch.Tensor) -> None:
        """Count the batch; remember each member's first batch with a non-finite loss term."""
        self.steps_done += 1
        bad = ~torch.isfinite(torch.stack([label_loss, bias_loss], dim=1))
        self.first_bad.copy_(
            torch.where(bad & (self.first_bad < 0), self.steps_done, self.first_bad)
        )

    def _stop_if_diverged(self) -> None:
        bad = self.first_bad.tolist()
        for k, steps in enumerate(bad):
            for term, step in zip(LOSS_TERMS, steps, strict=True):
                if step < 0:
                    continue
                where = (
                    "of this run"
                    if not self.packed
                    else f"of member {k} of the pack ({self.describe_member(k)})"
                )
                raise TrainingDiverged(
                    f"training diverged: {term} became NaN or infinite at training batch "
                    f"{step} {where} (epoch {self.current_epoch}); stopped before saving "
                    f"those weights, earlier checkpoints are kept. Lower model.optimizer.lr "
                    f"or the loss weights."
                )

    def reset_train_sums(self) -> None:
        """Zero the epoch sums in place (a captured step keeps adding into the same memory)."""
        self.train_sums.zero_()

    def train_metrics(self, sums: torch.Tensor | None = None) -> list[dict[str, float]]:
        """Each member's means over this training epoch, from ``sums`` (default: the sums
        over all processes, one sync)."""
        sums = self._global_train_sums() if sums is None else sums
        metrics = []
        for label_loss, bias_loss, correct, images in sums.cpu().tolist():
            images = max(images, 1.0)
            metrics.append(
                {
                    "train/label_loss_epoch": label_loss / images,
                    "train/bias_loss_epoch": bias_loss / images,
                    "train/acc": correct / images,
                }
            )
        return metrics

    def _global_train_sums(self) -> torch.Tensor:
        sums = self.train_sums.clone()
        if self._trainer is not None and self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        return sums

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> DebiasModule:
        super()._apply(fn, recurse)
        if self.train_sums.dtype != torch.float64:  # trainer.precision=bf16-true, 16-true
            self.train_sums = self.train_sums.double()  # epoch sums of ~470 batches stay exact
        self._member_constants = {}
        return self

    def on_train_epoch_start(self) -> None:
        self.reset_train_sums()  # not called in an epoch resumed mid-way: its sums come back
        self._sums_are_global = False

    def on_train_epoch_end(self) -> None:
        self._stop_if_diverged()  # before the checkpoint callbacks run
        # the epoch's sums over every process: what its checkpoint holds, equal on all ranks
        self.train_sums.copy_(self._global_train_sums())
        self._sums_are_global = True
        if (
            not self.packed
        ):  # a pack's members' means go to their own runs (lnl_lightning.records.members)
            self.log_dict(self.train_metrics(self.train_sums)[0])
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._stop_if_diverged()  # whoever saves: never NaN weights over a good checkpoint
        checkpoint["rng_states"] = rng_states()
        if self._trainer is not None and self.trainer.world_size > 1:
            # every rank saves (rank 0 writes): mid-epoch, the sums so far over all processes
            state = checkpoint["state_dict"]
            if not self._sums_are_global and "train_sums" in state:
                state["train_sums"] = self._global_train_sums().to(state["train_sums"].device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        upgrade_checkpoint(checkpoint)  # one written before the engine's per-member sums
        state = checkpoint.get("state_dict", {})
        if self._trainer is not None and self.trainer.global_rank > 0 and "train_sums" in state:
            # the saved sums are every process's: rank 0 carries them on, the others add theirs
            state["train_sums"] = torch.zeros_like(state["train_sums"])
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
