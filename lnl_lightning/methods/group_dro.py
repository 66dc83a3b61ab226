"""Group DRO (Sagawa et al., ICLR 2020): minimise the worst label x bias group's loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lnl_lightning.data.contract import BIAS_GROUP, IMAGE, LABEL
from lnl_lightning.engine.module import Backward, DebiasModule, StepResult, check_weight


class GroupDROModule(DebiasModule):
    """Online group DRO over the label x bias groups, with h as a probe.

    The groups are the cells of the label x bias matrix (``label * num_bias_groups +
    bias_group``). Each step, as Sagawa et al.'s Algorithm 1 and code:

    1. the mean label loss of each group in the batch, ``L_g`` (0 for a group absent from it);
    2. the group weights move towards the worst groups:
       ``q_g <- q_g * exp(step_size * (L_g + group_adjustment / sqrt(n_g)))``, normalised to
       sum 1, where ``n_g`` is the group's size in the training split;
    3. f and g step on ``sum_g q_g L_g``; h learns the bias on f's detached features.

    The weights start uniform over the groups the training split holds; a group it does not
    hold (e.g. every bias-conflicting cell of Colored MNIST's sigma^2 protocol, where each
    digit has its own colour) has weight 0, so there group DRO weighs the digits.

    Args:
        step_size: eta, the step size of the group weights.
        group_adjustment: C of the generalisation adjustment ``C / sqrt(n_g)`` (0: none).
        method: the run's label ("group_dro").
        The others: see :class:`~lnl_lightning.engine.module.DebiasModule`.
    """

    def __init__(
        self,
        *args: Any,
        step_size: float = 0.01,
        group_adjustment: float = 0.0,
        method: str = "group_dro",
        **kwargs: Any,
    ) -> None:
        step_size = check_weight("step_size", step_size)
        group_adjustment = check_weight("group_adjustment", group_adjustment)
        super().__init__(*args, method=method, **kwargs)
        self.save_method_hyperparameters(step_size=step_size, group_adjustment=group_adjustment)
        self.step_size = float(step_size)
        self.group_adjustment = float(group_adjustment)
        spec = self.bias_spec
        self.num_groups = spec.num_classes * spec.num_bias_groups
        # q and n_g: set at the start of training (a resumed run has them from its checkpoint)
        self.register_buffer("group_weights", torch.zeros(self.num_groups))
        self.register_buffer("group_sizes", torch.zeros(self.num_groups))

    def on_fit_start(self) -> None:
        if self.group_sizes.sum() > 0:
            return  # resumed
        self.set_group_sizes(*self.train_label_groups())

    @torch.no_grad()
    def set_group_sizes(self, labels: torch.Tensor, groups: torch.Tensor) -> None:
        """n_g from the training split's labels and bias groups; q uniform over n_g > 0."""
        cells = labels.long() * self.bias_spec.num_bias_groups + groups.long()
        sizes = torch.bincount(cells.cpu(), minlength=self.num_groups).float()
        self.group_sizes.copy_(sizes)
        present = (sizes > 0).float()
        self.group_weights.copy_(present / present.sum())

    def group_losses(self, per_sample: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Mean of ``per_sample`` over each group's samples in the batch (0 where none)."""
        sums, counts = self.group_sums(per_sample, cells)
        return sums / counts.clamp(min=1)

    def group_sums(
        self, per_sample: torch.Tensor, cells: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of ``per_sample`` and number of samples, per group, in the batch."""
        sums = per_sample.new_zeros(self.num_groups).index_add(0, cells, per_sample)
        counts = torch.bincount(cells, minlength=self.num_groups).to(sums)
        return sums, counts

    @torch.no_grad()
    def update_group_weights(self, group_losses: torch.Tensor) -> None:
        adjusted = group_losses
        if self.group_adjustment > 0:
            adjusted = adjusted + self.group_adjustment / self.group_sizes.clamp(min=1).sqrt()
        weights = self.group_weights * torch.exp(self.step_size * adjusted)
        self.group_weights.copy_(weights / weights.sum())

    def update(
        self, batch: dict[str, torch.Tensor], optimizers: Sequence[Any], backward: Backward
    ) -> StepResult:
        opt_main, opt_bias = optimizers
        features = self.feature_extractor(batch[IMAGE])
        label_logits = self.label_head(features)
        per_sample = F.cross_entropy(label_logits, batch[LABEL], reduction="none")
        cells = batch[LABEL] * self.bias_spec.num_bias_groups + batch[BIAS_GROUP]
        # L_g over the whole (global) batch: every process moves q alike, and each
        # contributes its samples' share of sum_g q_g L_g (the gradient all-reduce averages
        # the processes' gradients, hence the world size), so N processes step as one does
        sums, counts = self.group_sums(per_sample, cells)
        global_sums, global_counts = sums.detach(), counts
        world = self.trainer.world_size
        if world > 1:  # the all-reduce works in place: on copies
            reduce = self.trainer.strategy.reduce
            global_sums, global_counts = (
                reduce(t.clone(), reduce_op="sum") for t in (global_sums, counts)
            )
        global_counts = global_counts.clamp(min=1)
        group_losses = global_sums / global_counts
        self.update_group_weights(group_losses)
        robust_loss = world * (self.group_weights * (sums / global_counts)).sum()
        opt_main.zero_grad()
        backward(robust_loss, [self.feature_extractor, self.label_head])
        opt_main.step()
        bias_loss = self.train_bias_probe(batch, features, opt_bias, backward)
        logged = {"train/robust_loss": (self.group_weights * group_losses).sum().view(1)}
        label_loss = per_sample.detach().mean().view(1)
        return StepResult(label_loss, self.by_member(label_logits), bias_loss, logged)
