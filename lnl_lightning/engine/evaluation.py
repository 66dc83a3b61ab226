"""The engine's evaluation: group accuracies and the label x bias matrix counts, per member.

Validation runs the validation splits (``val_names``: ``val``, and ``val_random`` where the data
gives it) and, with ``data.test_each_epoch``, the test splits (the loaders after them, logged
under ``test_names`` for learning curves; only validation selects anything); testing runs the
test splits. A run logs its metrics through Lightning; a pack keeps
each member's in ``member_results`` (its members' records are written from there) and logs
their mean.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lnl_lightning.data.contract import (
    BIAS_GROUP,
    BIAS_TARGET,
    IGNORE_INDEX,
    IMAGE,
    LABEL,
    BiasSpec,
)
from lnl_lightning.engine.distributed import all_reduce_buffers
from lnl_lightning.engine.metrics import GroupAccuracy, group_summary

log = logging.getLogger(__name__)


class MemberEvaluation:
    """Evaluation hooks of :class:`~.module.DebiasModule` (a mixin of it)."""

    num_members: int
    packed: bool
    test_names: tuple[str, ...]
    val_names: tuple[str, ...]

    def _init_evaluation(self, bias_spec: BiasSpec, stages: Sequence[str]) -> None:
        self.eval_metrics = nn.ModuleList(
            nn.ModuleDict(
                {
                    "group_acc": nn.ModuleDict(
                        {
                            stage: GroupAccuracy(
                                bias_spec.aligned_mask(), bias_spec.conflicting_mask()
                            )
                            for stage in stages
                        }
                    ),
                    "bias_acc": nn.ModuleDict(
                        {
                            stage: MulticlassAccuracy(
                                num_classes=bias_spec.num_bias_classes,
                                average="micro",
                                ignore_index=IGNORE_INDEX,
                                validate_args=False,  # its checks wait for the GPU every batch
                            )
                            for stage in stages
                        }
                    ),
                }
            )
            for _ in range(self.num_members)
        )
        # Filled by evaluation, per member: {metric: value} of the last val/test epoch, and
        # {stage: (correct, total)} counts (summed over processes) for the run folder.
        self.member_results: list[dict[str, float]] = [{} for _ in range(self.num_members)]
        self.member_counts: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [
            {} for _ in range(self.num_members)
        ]
        self.results_epoch = -1  # the training epoch member_results were measured after
        self._stages_evaluated: set[str] = set()

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        stage = (*self.val_names, *self.test_names)[dataloader_idx]
        self._stages_evaluated.add(stage)
        self._evaluate(batch, stage)

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluate(batch, self.test_names[dataloader_idx])

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()
        self._stages_evaluated = set()

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def on_validation_epoch_end(self) -> None:
        for stage in (*self.val_names, *self.test_names):
            if stage in self._stages_evaluated:  # data.val_fraction=0: no validation metrics
                self._finish_stage(stage)
        if self.packed and not self.trainer.sanity_checking:
            self.results_epoch = self.current_epoch
            results = self.member_results
            mean = {
                f"members_mean/{name}": sum(r[name] for r in results) / self.num_members
                for name in results[0]
            }
            self.log_dict(mean)  # what the pack's own checkpoint callback and logs see

    def on_test_epoch_end(self) -> None:
        for name in self.test_names:
            self._finish_stage(name)

    def _start_evaluation(self) -> None:
        all_reduce_buffers(self.networks())  # BatchNorm statistics shared over processes
        self.member_results = [{} for _ in range(self.num_members)]

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        features = self.feature_extractor(batch[IMAGE])
        label_logits = self.by_member(self.label_head(features))
        bias_logits = self.by_member(self.bias_head(features))
        labels, groups = self.by_member(batch[LABEL]), self.by_member(batch[BIAS_GROUP])
        targets = self.by_member(batch[BIAS_TARGET])
        for k, metrics in enumerate(self.eval_metrics):
            metrics["group_acc"][stage].update(label_logits[:, k], labels[:, k], groups[:, k])
            metrics["bias_acc"][stage].update(bias_logits[:, k], targets[:, k])

    def _finish_stage(self, stage: str) -> None:
        for k, metrics in enumerate(self.eval_metrics):
            group_acc, bias_acc = metrics["group_acc"][stage], metrics["bias_acc"][stage]
            with group_acc.sync_context():  # counts summed over processes, once
                correct, total = group_acc.correct.cpu().clone(), group_acc.total.cpu().clone()
            self.member_counts[k][stage] = (correct, total)
            summary = group_summary(
                correct, total, group_acc.aligned_mask, group_acc.conflicting_mask
            )
            values = {f"{stage}/{name}": value.to(self.device) for name, value in summary.items()}
            values[f"{stage}/bias_acc"] = bias_acc.compute()
            self.member_results[k].update({name: float(v) for name, v in values.items()})
            if not self.packed:
                self._log_stage(values, stage)
            group_acc.reset()
            bias_acc.reset()

    def _log_stage(self, values: dict[str, torch.Tensor], stage: str) -> None:
        self.log_dict(values, prog_bar=False)
        fn = self.trainer.state.fn
        # the test call reports the test splits
        repeated = fn == "validate" and stage not in self.val_names
        if not self.trainer.sanity_checking and self.trainer.is_global_zero and not repeated:
            summary = ", ".join(f"{k} {v.item():.4f}" for k, v in values.items())
            when = f"epoch {self.current_epoch}" if fn == "fit" else "final"
            log.info("%s  %s", when, summary)

    @property
    def group_counts(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """A run's (correct, total) counts of its last val/test epoch, by stage."""
        return self.member_counts[0]
