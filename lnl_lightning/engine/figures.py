"""Figures written into run folders: the class x bias accuracy matrix and sample grids."""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from lnl_lightning.engine.metrics import cell_accuracy  # noqa: E402
from lnl_lightning.records.files import write_atomic, write_text_atomic  # noqa: E402


def save_png(fig: plt.Figure, path: Path, dpi: int = 120) -> Path:
    """Lay out, write atomically as PNG, and close a figure."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return path


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
    acc = cell_accuracy(correct, total).cpu()
    total = total.cpu()
    num_classes, num_groups = acc.shape
    class_names = class_names or tuple(str(c) for c in range(num_classes))
    group_names = group_names or tuple(str(g) for g in range(num_groups))
    out_dir.mkdir(parents=True, exist_ok=True)

    csv_path = out_dir / f"{stem}.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "bias_group", "accuracy", "count"])
    for c in range(num_classes):
        for g in range(num_groups):
            value = "" if total[c, g] == 0 else f"{acc[c, g].item():.6f}"
            writer.writerow([class_names[c], group_names[g], value, int(total[c, g])])
    write_text_atomic(csv_path, buffer.getvalue())

    # small matrices (2 x 2, 2 x 12) get room for their title and colour bar
    fig, ax = plt.subplots(
        figsize=(max(4.0, 2.0 + 0.55 * num_groups), max(3.0, 1.4 + 0.5 * num_classes)),
        layout="constrained",
    )
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
    ax.set_title(
        textwrap.fill(title or "accuracy per (label, bias group); blank = no images", 40),
        fontsize=9,
    )
    fig.colorbar(image, ax=ax, label="accuracy")
    png_path = save_png(fig, out_dir / f"{stem}.png")
    return csv_path, png_path


def as_displayed(
    images: torch.Tensor, normalization: tuple[Sequence[float], Sequence[float]] | None
) -> torch.Tensor:
    """``images`` in [0, 1] for display: un-normalised with the data's mean and std."""
    images = images.detach().float().cpu()
    if normalization is not None:
        mean, std = (torch.tensor(v, dtype=images.dtype).view(1, -1, 1, 1) for v in normalization)
        images = images * std + mean
    return images.clamp(0.0, 1.0)


def save_sample_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    path: Path,
    title: str,
    class_names: tuple[str, ...] | None = None,
    group_names: tuple[str, ...] | None = None,
    columns: int = 8,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Path:
    """Save images with "label / bias group" captions, shown as the data has them: a
    normalised batch (``normalization``: its per-channel mean and std) is mapped back with
    the data's own statistics, never stretched image by image, so dark images stay dark."""
    images = as_displayed(images, normalization)
    count = len(images)
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label, group in zip(axes.flat, images, labels, groups, strict=False):
        shown = image.permute(1, 2, 0).cpu().numpy()
        ax.imshow(shown, interpolation="nearest")
        name = class_names[label] if class_names else str(int(label))
        bias = group_names[group] if group_names else str(int(group))
        ax.set_title(f"{name} / {bias}", fontsize=7)
    fig.suptitle(f"{title} (label / bias group)", fontsize=9)
    return save_png(fig, path, dpi=100)
