"""Group metrics: accuracy per (label, bias group) cell and the summaries the paper reports."""

from __future__ import annotations

import torch
from torchmetrics import Metric

WORST_GROUP_FLOOR = 10
"""``acc_worst_group`` is the lowest accuracy over the (label, bias group) cells holding at least
this many images: a cell of one or two images says little about a group."""


class GroupAccuracy(Metric):
    """Counts correct predictions in every (label, bias group) cell.

    ``compute()`` returns:

    - ``acc``: plain accuracy over all images,
    - ``acc_aligned`` / ``acc_conflicting``: accuracy on images in bias-aligned /
      bias-conflicting cells (absent when no such image was seen),
    - ``acc_unbiased``: mean of the per-cell accuracies over the populated cells,
    - ``acc_worst_group``: the lowest per-cell accuracy over the cells holding at least
      :data:`WORST_GROUP_FLOOR` images (absent when none does).

    The matrix itself is :meth:`cell_accuracy`. States are sums, so they reduce
    correctly across processes.
    """

    full_state_update = False

    def __init__(
        self, aligned_mask: torch.Tensor, conflicting_mask: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        num_classes, num_groups = aligned_mask.shape
        self.aligned_mask = aligned_mask.bool()
        self.conflicting_mask = (
            ~self.aligned_mask if conflicting_mask is None else conflicting_mask.bool()
        )
        self.add_state("correct", torch.zeros(num_classes, num_groups, dtype=torch.long), "sum")
        self.add_state("total", torch.zeros(num_classes, num_groups, dtype=torch.long), "sum")

    def update(self, preds: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> None:
        """Add a batch: ``preds`` are class indices or logits ``(N, C)``."""
        if preds.dim() == 2:
            preds = preds.argmax(dim=1)
        cell = labels * self.total.shape[1] + groups
        # index_add_, not bincount: on a GPU bincount waits for the host to size its output
        self.total.view(-1).index_add_(0, cell, torch.ones_like(cell))
        self.correct.view(-1).index_add_(0, cell, (preds == labels).long())

    def cell_accuracy(self) -> torch.Tensor:
        """``(num_classes, num_groups)`` accuracy per cell, NaN where the cell is empty."""
        return cell_accuracy(self.correct, self.total)

    def compute(self) -> dict[str, torch.Tensor]:
        return group_summary(self.correct, self.total, self.aligned_mask, self.conflicting_mask)


def group_summary(
    correct: torch.Tensor, total: torch.Tensor, aligned: torch.Tensor, conflicting: torch.Tensor
) -> dict[str, torch.Tensor]:
    """acc, acc_aligned, acc_conflicting (when populated), acc_unbiased and acc_worst_group
    (over the cells of at least :data:`WORST_GROUP_FLOOR` images) from cell counts."""
    aligned, conflicting = aligned.to(total.device), conflicting.to(total.device)
    result = {"acc": correct.sum() / total.sum().clamp(min=1)}
    for name, cells in (("acc_aligned", aligned), ("acc_conflicting", conflicting)):
        cell_total = total[cells].sum()
        if cell_total > 0:
            result[name] = correct[cells].sum() / cell_total
    populated = total > 0
    per_cell = cell_accuracy(correct, total)
    result["acc_unbiased"] = per_cell[populated].mean().float()
    counted = total >= WORST_GROUP_FLOOR
    if counted.any():
        result["acc_worst_group"] = per_cell[counted].min()
    return {k: v.float() for k, v in result.items()}


def cell_accuracy(correct: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Accuracy per cell from counts, NaN where a cell is empty."""
    return correct.double() / total.double()
