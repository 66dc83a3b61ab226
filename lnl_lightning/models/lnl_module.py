"""The one LightningModule: Learning Not to Learn, with the baseline as its lambda = mu = 0 case."""

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
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.parallel import DistributedDataParallel
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lnl_lightning.data.contract import (
    BIAS_GROUP,
    BIAS_TARGET,
    IGNORE_INDEX,
    IMAGE,
    LABEL,
    BiasSpec,
)
from lnl_lightning.errors import ConfigError, TrainingDiverged
from lnl_lightning.files import load_checkpoint
from lnl_lightning.metrics import GroupAccuracy, group_summary
from lnl_lightning.models.distributed import all_reduce_buffers, all_reduce_gradients
from lnl_lightning.models.gradient_reversal import grad_reverse

log = logging.getLogger(__name__)


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
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


STEPS = ("official", "fused")
LOSS_TERMS = ("the label loss (train/label_loss)", "the bias loss (train/bias_loss)")
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of sum_k p_k log p_k along dim 1 (numerically safe: log-softmax).

    For per-pixel colour logits ``(N, K, 3, H, W)`` this is the official term: each channel's
    mean over pixels, averaged over the three channels.
    """
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * log_p).sum(dim=1).mean()


def bias_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """h's loss: cross-entropy, *summed* over the RGB channels of a per-pixel target.

    A per-pixel target ``(N, 3, H, W)`` gives the official ``CE_r + CE_g + CE_b``, each the
    mean over that channel's non-ignored pixels (a channel with none adds 0, where the
    official code would give NaN). A per-image target ``(N,)`` gives the plain cross-entropy.
    """
    if target.dim() < 2:
        return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (target != IGNORE_INDEX).flatten(2).sum(2)  # (N, C)
    channel_sums = per_pixel.flatten(2).sum(2).sum(0)  # ignored pixels contribute 0
    return (channel_sums / valid.sum(0).clamp(min=1)).sum()


class LNLModule(pl.LightningModule):
    """Learning Not to Learn (Kim et al., CVPR 2019).

    A feature extractor f feeds a label head g and a bias head h. Each training step
    runs the official algorithm:

    1. f and g step on ``CE(g(f(x)), label) + lambda_ * negative_entropy(h(f(x)))``:
       f learns the label and makes h's prediction uniform; h is frozen in this step.
    2. h steps on ``CE(h(GradReverse_mu(f(x))), bias_target)`` (for a per-pixel colour
       target the sum of the three channels' losses, :func:`bias_cross_entropy`): h learns
       to predict the bias while the reversal pushes f by ``-mu`` times that gradient. The
       f+g optimizer steps again, f with its gradient and g with a zero one, so g moves by
       momentum and weight decay: the official code's PyTorch 0.4 ``zero_grad()`` filled
       gradients with zeros rather than dropping them.

    ``step="fused"`` computes both updates from one forward and one backward pass of f
    (less time on a CPU): the gradients are those of the two steps, except that step 2
    sees f as it was before step 1's update, and f and g take one optimizer step per
    batch (f with the summed gradient) instead of two.

    With ``lambda_ = mu = 0`` (``model=baseline``) f and g learn the label alone and h
    is trained on detached features as a probe, so bias predictability is measured
    for both methods.

    Several processes (DDP): each step has two backward passes, and each reaches only
    part of the parameters (h nothing in step 1, g nothing in step 2), which DDP's own
    reducer cannot handle without ``find_unused_parameters`` and a sync of every bucket on
    every pass. So each backward runs inside DDP's ``no_sync()`` and is followed by one
    coalesced all-reduce of exactly the gradients that pass produced: f+g after step 1,
    h (and f when mu > 0) after step 2. BatchNorm statistics are shared by SyncBatchNorm
    (``trainer.sync_batchnorm``, GPU) or, without it, averaged before each evaluation;
    metrics are summed across processes by torchmetrics.

    Args:
        feature_extractor: f.
        label_head: g.
        bias_head: h; its logits have the bias classes on dim 1.
        bias_spec: the datamodule's description of labels and bias.
        lambda_: weight of the negative-entropy term (lambda).
        mu: scale of the gradient reversal into f (mu).
        optimizer: factory ``params -> optimizer`` (a Hydra partial); one optimizer is
            built for f+g and one for h.
        scheduler: factory ``optimizer -> LR scheduler`` stepped once per epoch, or None.
        step: "official" (the two steps above) or "fused" (one pass, see above).
        test_names: metric prefix of each test dataloader, in order (``test/acc``,
            ``test_tb2/acc``, ...).
        init_from: Lightning checkpoint whose f and g weights, and the f+g optimizer's
            state (momentum buffers), warm-start this run, as the official ``_load_model``
            does; h starts afresh.
        warm_start_lr: learning rate used instead of the optimizer's when ``init_from``
            is set (the official code fine-tunes at 0.001); None keeps the optimizer's.
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        label_head: nn.Module,
        bias_head: nn.Module,
        bias_spec: BiasSpec,
        lambda_: float = 0.01,
        mu: float = 0.1,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        step: str = "official",
        test_names: Sequence[str] = ("test",),
        init_from: str | None = None,
        warm_start_lr: float | None = 0.001,
    ) -> None:
        super().__init__()
        for key, value in (("lambda_", lambda_), ("mu", mu)):
            if not 0 <= value < math.inf:  # also refuses NaN
                raise ConfigError(f"model.{key} must be a finite number >= 0, got {value}")
        if step not in STEPS:
            raise ConfigError(f"model.step must be one of {STEPS}, got '{step}'")
        self.automatic_optimization = False
        self.save_hyperparameters("lambda_", "mu", "step", "init_from", "warm_start_lr")
        self.step = step
        self.feature_extractor = feature_extractor
        self.label_head = label_head
        self.bias_head = bias_head
        self.bias_spec = bias_spec
        self.lambda_ = float(lambda_)
        self.mu = float(mu)
        self.optimizer_factory = optimizer or (lambda params: torch.optim.SGD(params, lr=0.01))
        self.scheduler_factory = scheduler
        self.init_from = init_from
        self.warm_start_lr = warm_start_lr
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

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_main, opt_bias = self.optimizers()
        if self.step == "fused":
            label_loss, label_logits, bias_loss = self.fused_step(batch, opt_main, opt_bias)
        else:
            label_loss, label_logits, features = self.label_step(batch, opt_main)
            bias_loss = self.bias_step(batch, features, opt_main, opt_bias)

        self._watch_losses(label_loss, bias_loss, batch_idx)
        n = len(batch[LABEL])
        self.train_label_loss.update(label_loss.detach(), n)
        self.train_bias_loss.update(bias_loss.detach(), n)
        self.train_acc.update((label_logits.argmax(1) == batch[LABEL]).float().mean(), n)
        self.log("train/label_loss", label_loss.detach(), prog_bar=True)
        self.log("train/bias_loss", bias_loss.detach(), prog_bar=True)

    def label_step(
        self, batch: dict[str, torch.Tensor], opt_main: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step 1: f and g learn the label and, with weight lambda_, to make h uncertain.

        Returns the label loss, the label logits and f's (detached) features.
        """
        self.toggle_optimizer(opt_main)  # h gets no gradient, hence no update, here
        try:
            features = self.feature_extractor(batch[IMAGE])
            label_logits = self.label_head(features)
            label_loss = F.cross_entropy(label_logits, batch[LABEL])
            loss = label_loss
            if self.lambda_ > 0:
                neg_entropy = negative_entropy(self.bias_head(features))
                loss = loss + self.lambda_ * neg_entropy
                self.log("train/neg_entropy", neg_entropy.detach())
            opt_main.zero_grad()
            self._backward(loss, [self.feature_extractor, self.label_head])
            opt_main.step()
        finally:
            self.untoggle_optimizer(opt_main)
        return label_loss, label_logits, features.detach()

    def bias_step(
        self, batch: dict[str, torch.Tensor], features: torch.Tensor, opt_main: Any, opt_bias: Any
    ) -> torch.Tensor:
        """Step 2: h learns the bias; through the reversal layer f is pushed to un-learn it."""
        if self.mu > 0:
            # f changed in step 1: recompute its features, as the official code does.
            bias_input = grad_reverse(self.feature_extractor(batch[IMAGE]), self.mu)
        else:
            bias_input = features  # step 1's, detached: the baseline probe moves no f
        bias_loss = bias_cross_entropy(self.bias_head(bias_input), batch[BIAS_TARGET])
        # Zero-filled, not dropped: g's zero gradient still gets momentum and weight decay.
        opt_main.zero_grad(set_to_none=False)
        opt_bias.zero_grad()
        self._backward(
            bias_loss, [self.bias_head, self.feature_extractor] if self.mu > 0 else [self.bias_head]
        )
        opt_bias.step()
        if self.mu > 0:
            opt_main.step()  # f: reversed bias gradient; g: momentum and weight decay only
        return bias_loss

    def fused_step(
        self, batch: dict[str, torch.Tensor], opt_main: Any, opt_bias: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1 and 2 from one forward and one backward pass of f."""
        features = self.feature_extractor(batch[IMAGE])
        label_logits = self.label_head(features)
        label_loss = F.cross_entropy(label_logits, batch[LABEL])
        loss = label_loss
        if self.lambda_ > 0:
            # h with detached parameters: the entropy term moves f only, as in step 1
            frozen = {name: p.detach() for name, p in self.bias_head.named_parameters()}
            neg_entropy = negative_entropy(functional_call(self.bias_head, frozen, (features,)))
            loss = loss + self.lambda_ * neg_entropy
            self.log("train/neg_entropy", neg_entropy.detach())
        bias_input = grad_reverse(features, self.mu) if self.mu > 0 else features.detach()
        bias_loss = bias_cross_entropy(self.bias_head(bias_input), batch[BIAS_TARGET])
        opt_main.zero_grad()
        opt_bias.zero_grad()
        self._backward(loss + bias_loss, [self.feature_extractor, self.label_head, self.bias_head])
        opt_main.step()
        opt_bias.step()
        return label_loss, label_logits, bias_loss

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

    def _backward(self, loss: torch.Tensor, modules: list[nn.Module]) -> None:
        """Backward; with several processes, then one all-reduce of ``modules``' gradients."""
        model = self.trainer.model
        with model.no_sync() if isinstance(model, DistributedDataParallel) else nullcontext():
            self.manual_backward(loss)
        all_reduce_gradients(modules)

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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._stop_if_diverged()  # whoever saves: never NaN weights over a good checkpoint
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])

    # ---------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        features = self.feature_extractor(batch[IMAGE])
        label_logits = self.label_head(features)
        self.group_acc[stage].update(label_logits, batch[LABEL], batch[BIAS_GROUP])
        self.bias_acc[stage].update(self.bias_head(features), batch[BIAS_TARGET])

    def _log_stage(self, stage: str) -> None:
        group_acc = self.group_acc[stage]
        with group_acc.sync_context():  # counts summed over processes, once
            correct, total = group_acc.correct.cpu().clone(), group_acc.total.cpu().clone()
        self.group_counts[stage] = (correct, total)
        summary = group_summary(correct, total, group_acc.aligned_mask, group_acc.conflicting_mask)
        values = {f"{stage}/{name}": value.to(self.device) for name, value in summary.items()}
        values[f"{stage}/bias_acc"] = self.bias_acc[stage].compute()
        self.log_dict(values, prog_bar=False)
        if not self.trainer.sanity_checking and self.trainer.is_global_zero:
            summary = ", ".join(f"{k} {v.item():.4f}" for k, v in values.items())
            when = f"epoch {self.current_epoch}" if self.trainer.state.fn == "fit" else "final"
            log.info("%s  %s", when, summary)
        group_acc.reset()
        self.bias_acc[stage].reset()

    def _share_batchnorm_statistics(self) -> None:
        all_reduce_buffers([self.feature_extractor, self.label_head, self.bias_head])

    def on_test_epoch_start(self) -> None:
        self._share_batchnorm_statistics()

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # Loaders after the first are the test splits (data.test_each_epoch): learning
        # curves only, logged as test/...; model selection monitors val/ alone.
        stage = ("val", *self.test_names)[dataloader_idx]
        self._stages_evaluated.add(stage)
        self._evaluate(batch, stage)

    def on_validation_epoch_start(self) -> None:
        self._share_batchnorm_statistics()
        self._stages_evaluated = set()

    def on_validation_epoch_end(self) -> None:
        for stage in ("val", *self.test_names):
            if stage in self._stages_evaluated:  # data.val_fraction=0: no validation metrics
                self._log_stage(stage)

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluate(batch, self.test_names[dataloader_idx])

    def on_test_epoch_end(self) -> None:
        for name in self.test_names:
            self._log_stage(name)

    # ----------------------------------------------------------------- set-up
    def configure_optimizers(self) -> Any:
        main_params = [*self.feature_extractor.parameters(), *self.label_head.parameters()]
        return self.make_optimizers(main_params, self.bias_head.parameters())

    def make_optimizers(
        self,
        main_params: Iterable[nn.Parameter],
        bias_params: Iterable[nn.Parameter],
        load_warm_state: Callable[[torch.optim.Optimizer], None] | None = None,
    ) -> Any:
        """The f+g and h optimizers (and schedulers) from config, warm start applied.

        ``load_warm_state`` puts the warm-start checkpoint's f+g state into the f+g
        optimizer (default: :meth:`_load_warm_optimizer_state`; a pack packs its members').
        """
        optimizers = [self.optimizer_factory(main_params), self.optimizer_factory(bias_params)]
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
            module.load_state_dict(part)
        log.info("Warm-started f and g from %s", file)
