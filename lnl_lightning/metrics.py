"""Group metrics: accuracy per (label, bias group) cell and the summaries the paper reports."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torchmetrics import Metric


class GroupAccuracy(Metric):
    """Counts correct predictions in every (label, bias group) cell.

    ``compute()`` returns:

    - ``acc``: plain accuracy over all images,
    - ``acc_aligned`` / ``acc_conflicting``: accuracy on images in bias-aligned /
      bias-conflicting cells (absent when no such image was seen),
    - ``acc_unbiased``: mean of the per-cell accuracies over the populated cells.

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
        num_groups = self.total.shape[1]
        cell = labels * num_groups + groups
        size = self.total.numel()
        self.total += torch.bincount(cell, minlength=size).view_as(self.total)
        self.correct += torch.bincount(cell[preds == labels], minlength=size).view_as(self.correct)

    def cell_accuracy(self) -> torch.Tensor:
        """``(num_classes, num_groups)`` accuracy per cell, NaN where the cell is empty."""
        return cell_accuracy(self.correct, self.total)

    def compute(self) -> dict[str, torch.Tensor]:
        aligned = self.aligned_mask.to(self.total.device)
        conflicting = self.conflicting_mask.to(self.total.device)
        result = {"acc": self.correct.sum() / self.total.sum().clamp(min=1)}
        for name, cells in (("acc_aligned", aligned), ("acc_conflicting", conflicting)):
            total = self.total[cells].sum()
            if total > 0:
                result[name] = self.correct[cells].sum() / total
        populated = self.total > 0
        result["acc_unbiased"] = self.cell_accuracy()[populated].mean().float()
        return {k: v.float() for k, v in result.items()}


def cell_accuracy(correct: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Accuracy per cell from counts, NaN where a cell is empty."""
    return correct.double() / total.double()


def save_group_matrix(
    correct: torch.Tensor,
    total: torch.Tensor,
    out_dir: Path,
    stem: str,
    class_names: tuple[str, ...] | None = None,
    group_names: tuple[str, ...] | None = None,
    title: str = "",
) -> tuple[Path, Path]:
    """Write the class x bias-group accuracy matrix as ``stem.csv`` and ``stem.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = cell_accuracy(correct, total).cpu()
    total = total.cpu()
    num_classes, num_groups = acc.shape
    class_names = class_names or tuple(str(c) for c in range(num_classes))
    group_names = group_names or tuple(str(g) for g in range(num_groups))
    out_dir.mkdir(parents=True, exist_ok=True)

    csv_path = out_dir / f"{stem}.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "bias_group", "accuracy", "count"])
        for c in range(num_classes):
            for g in range(num_groups):
                value = "" if total[c, g] == 0 else f"{acc[c, g].item():.6f}"
                writer.writerow([class_names[c], group_names[g], value, int(total[c, g])])

    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * num_groups, 1.0 + 0.5 * num_classes))
    image = ax.imshow(acc.numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
    for c in range(num_classes):
        for g in range(num_groups):
            if total[c, g] > 0:
                value = acc[c, g].item()
                ax.text(
                    g,
                    c,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value < 0.6 else "black",
                )
    ax.set_xticks(range(num_groups), group_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(num_classes), class_names, fontsize=8)
    ax.set_xlabel("bias group")
    ax.set_ylabel("label")
    ax.set_title(title or "accuracy per (label, bias group); blank = no images")
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    png_path = out_dir / f"{stem}.png"
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return csv_path, png_path
