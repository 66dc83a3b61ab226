"""Learning from Failure (Nam et al., NeurIPS 2020): a biased twin, and per-sample weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lnl_lightning.data.contract import IMAGE, INDEX, LABEL
from lnl_lightning.engine.module import Backward, DebiasModule, NetworkFactory, StepResult
from lnl_lightning.errors import ConfigError


def generalized_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, q: float) -> torch.Tensor:
    """Per-sample GCE as LfF trains its biased twin: ``CE * q * p_y^q`` (p_y not
    differentiated), whose gradient is that of ``(1 - p_y^q) / q`` times q: the easy
    samples, those the bias explains, dominate."""
    p_label = F.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1).detach()
    return F.cross_entropy(logits, labels, reduction="none") * p_label.pow(q) * q


class LfFModule(DebiasModule):
    """Nam et al.'s Learning from Failure, over the same f, g, h and recipe as LNL.

    A biased twin (f_b, g_b: a second copy of f and g from the same ``net`` config, its own
    initialisation) learns the label with the generalized cross-entropy (``q``), which
    makes it lean on what is easy: the bias. f and g, the debiased model that is evaluated,
    learn the label with each sample's cross-entropy weighted by how much harder it is for
    the twin: ``w = L_b / (L_b + L_d)``, where L_b and L_d are per-sample moving averages
    (``ema``) of the twin's and f+g's losses, each divided by its class's largest. Both
    step together each batch, as in the official code; h learns the bias on f's detached
    features as a probe. Needs the batch's ``index`` and the training labels by position.

    Args:
        q: the GCE exponent (0.7 in the paper).
        ema: the moving average's weight on the old value (0.7 in the paper).
        make_networks: builds the twin (given by the trainer from the run's ``net``).
        method: the run's label ("lff").
        The others: see :class:`~lnl_lightning.engine.module.DebiasModule`.
    """

    def __init__(
        self,
        *args: Any,
        q: float = 0.7,
        ema: float = 0.7,
        method: str = "lff",
        make_networks: NetworkFactory | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(q, (int, float)) or not 0 < q <= 1:
            raise ConfigError(f"model.q must be in (0, 1], got {q}")
        if not isinstance(ema, (int, float)) or not 0 <= ema < 1:
            raise ConfigError(f"model.ema must be in [0, 1), got {ema}")
        if make_networks is None:
            raise ConfigError("model=lff builds a biased twin of f and g: give make_networks")
        super().__init__(*args, method=method, **kwargs)
        self.save_method_hyperparameters(q=q, ema=ema)
        self.q, self.ema = float(q), float(ema)
        twin = make_networks()
        self.biased_feature_extractor: nn.Module = twin["feature_extractor"]
        self.biased_label_head: nn.Module = twin["label_head"]
        # per training image, by its index: label, moving-average losses, seen yet
        for name, dtype in (
            ("sample_labels", torch.long),
            ("loss_ema_biased", torch.float32),
            ("loss_ema_debiased", torch.float32),
            ("sample_seen", torch.bool),
        ):
            self.register_buffer(name, torch.zeros(0, dtype=dtype))

    def networks(self) -> list[nn.Module]:
        return [*super().networks(), self.biased_feature_extractor, self.biased_label_head]

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        twin = [*self.biased_feature_extractor.parameters(), *self.biased_label_head.parameters()]
        return [*super().parameter_groups(), twin]

    def on_fit_start(self) -> None:
        if len(self.sample_labels):
            return  # resumed: the tables came with the checkpoint
        self.set_sample_labels(self.train_label_groups()[0])

    def set_sample_labels(self, labels: torch.Tensor) -> None:
        """Size the per-sample tables for a training split with these labels (by position)."""
        n, device = len(labels), self.device
        self.sample_labels = labels.long().to(device)
        self.loss_ema_biased = torch.zeros(n, device=device)
        self.loss_ema_debiased = torch.zeros(n, device=device)
        self.sample_seen = torch.zeros(n, dtype=torch.bool, device=device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint["state_dict"].get("sample_labels")
        if saved is not None:  # the tables' size is the training split's: make room first
            self.set_sample_labels(saved)

    @torch.no_grad()
    def sample_weights(
        self, index: torch.Tensor, labels: torch.Tensor, loss_b: torch.Tensor, loss_d: torch.Tensor
    ) -> torch.Tensor:
        """Update the moving averages at ``index``; return ``w = L_b / (L_b + L_d)`` there."""
        for table, loss in ((self.loss_ema_biased, loss_b), (self.loss_ema_debiased, loss_d)):
            old = table[index]
            keep = self.ema * self.sample_seen[index].float()  # a first sight takes the loss
            table[index] = self.ema * old + (1 - keep) * loss
        self.sample_seen[index] = True
        normalised = []
        for table in (self.loss_ema_biased, self.loss_ema_debiased):
            class_max = table.new_zeros(self.bias_spec.num_classes).scatter_reduce(
                0, self.sample_labels, table, reduce="amax"
            )
            normalised.append(table[index] / class_max[labels])
        ema_b, ema_d = normalised
        return ema_b / (ema_b + ema_d + 1e-8)

    def update(
        self, batch: dict[str, torch.Tensor], optimizers: Sequence[Any], backward: Backward
    ) -> StepResult:
        opt_main, opt_bias, opt_biased = optimizers
        images, labels = batch[IMAGE], batch[LABEL]
        biased_logits = self.biased_label_head(self.biased_feature_extractor(images))
        features = self.feature_extractor(images)
        label_logits = self.label_head(features)
        ce_debiased = F.cross_entropy(label_logits, labels, reduction="none")
        ce_biased = F.cross_entropy(biased_logits, labels, reduction="none")
        # every process updates the whole tables, with the losses of every process's batch
        index, all_labels, loss_b, loss_d = (
            self.all_gather(t).reshape(-1)
            for t in (batch[INDEX], labels, ce_biased.detach(), ce_debiased.detach())
        )
        weights = self.sample_weights(index, all_labels, loss_b, loss_d)
        if self.trainer.world_size > 1:  # this process's share of the gathered batch
            weights = weights.view(self.trainer.world_size, -1)[self.global_rank]
        loss = (
            generalized_cross_entropy(biased_logits, labels, self.q).mean()
            + (ce_debiased * weights).mean()
        )
        opt_main.zero_grad()
        opt_biased.zero_grad()
        backward(
            loss,
            [
                self.feature_extractor,
                self.label_head,
                self.biased_feature_extractor,
                self.biased_label_head,
            ],
        )
        opt_main.step()
        opt_biased.step()
        bias_loss = self.train_bias_probe(batch, features, opt_bias, backward)
        logged = {
            "train/biased_label_loss": ce_biased.detach().mean().view(1),
            "train/mean_sample_weight": weights.mean().view(1),
        }
        label_loss = ce_debiased.detach().mean().view(1)
        return StepResult(label_loss, self.by_member(label_logits), bias_loss, logged)
