"""The report's plots: accuracy against lambda and sigma^2, and the learning curves."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lnl_lightning.engine.figures import save_png  # noqa: E402
from lnl_lightning.report.curves import CURVE_METRICS, CurveSeries  # noqa: E402
from lnl_lightning.report.methods import Methods  # noqa: E402
from lnl_lightning.report.published import PUBLISHED_COLORED_MNIST  # noqa: E402
from lnl_lightning.report.records import Row  # noqa: E402
from lnl_lightning.schemas import Display  # noqa: E402


def _errorbar(ax: Any, rows: list[Row], x_key: str, metric: str, **style: Any) -> None:
    rows = sorted(rows, key=lambda r: r.fields[x_key])
    xs = [r.fields[x_key] for r in rows]
    ax.errorbar(
        xs, [r.mean(metric) for r in rows], yerr=[r.std(metric) for r in rows], capsize=3, **style
    )


def plot_vs_lambda(rows: list[Row], metric: str, ylabel: str, path: Path) -> str | None:
    """``metric`` against lambda for LNL runs, a line per (study, sigma^2, mu); baselines dashed."""
    lnl = [r for r in rows if r.fields["method"] == "lnl" and r.values.get(metric)]
    if not lnl:
        return "no LNL runs"
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series: dict[tuple, list[Row]] = defaultdict(list)
    for row in lnl:
        series[(row.fields["task_name"], row.fields["color_var"], row.fields["mu"])].append(row)
    for (task, color_var, mu), group in sorted(series.items(), key=str):
        label = f"LNL μ={mu}" + (f", σ²={color_var}" if color_var is not None else "")
        if len(series) > 1 and len({k[0] for k in series}) > 1:
            label = f"{task}: {label}"
        _errorbar(ax, group, "lambda", metric, marker="s", label=label)
    for row in rows:
        if row.fields["method"] == "baseline" and row.values.get(metric):
            mean, std = row.mean(metric), row.std(metric)
            label = "baseline" + (
                f", σ²={row.fields['color_var']}" if row.fields["color_var"] is not None else ""
            )
            line = ax.axhline(mean, linestyle="--", color="tab:gray", label=label)
            ax.axhspan(mean - std, mean + std, color=line.get_color(), alpha=0.15)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(left=-2e-4)  # nothing lives below lambda = 0
    ax.set_xlabel("λ (weight of the entropy term; symlog scale)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)
    return None


def plot_vs_color_var(rows: list[Row], path: Path, methods: Methods) -> str | None:
    """Test accuracy against sigma^2 per method, with the published numbers (Fig. 4 layout)."""
    cm = [r for r in rows if r.fields["color_var"] is not None and r.values.get("test/acc")]
    if not cm:
        return "no Colored MNIST runs"
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    by_method: dict[str, list[Row]] = defaultdict(list)
    for row in cm:
        key = row.fields["method"]
        if key == "lnl" and (row.fields["lambda"], row.fields["mu"]) != (0.01, 0.1):
            key = f"lnl λ={row.fields['lambda']} μ={row.fields['mu']}"
        by_method[key].append(row)
    others = iter(plt.cm.tab10.colors[6:])  # colours the known methods do not use
    for method, group in sorted(by_method.items()):
        style = methods.style(method)
        color = (style.color if style else None) or next(others, None)
        marker = style.marker if style else "^"
        name = style.label if style else method
        schedules = schedules_of(group)
        longest = max(schedules, key=lambda s: s[1] or 0)
        for (start, epochs), rows_of in schedules.items():
            label = f"{name} (this repo)"
            if len(schedules) > 1:  # one series per schedule, the longest drawn solid
                warm = " warm-started" if start == "warm" else ""
                label = f"{name}{warm}, {epochs} epochs (this repo)"
            line = "-" if (start, epochs) == longest else "--"
            _errorbar(
                ax,
                rows_of,
                "color_var",
                "test/acc",
                marker=marker,
                color=color,
                label=label,
                linestyle=line,
                markerfacecolor=None if line == "-" else "white",
            )
    for method, values in PUBLISHED_COLORED_MNIST.items():
        if by_method and method not in by_method:
            continue  # published rows of the methods this report holds
        style = methods.style(method) or Display(method)
        color, marker = style.color, style.marker
        ax.plot(
            list(values),
            list(values.values()),
            linestyle=":",
            marker=marker,
            color=color,
            alpha=0.6,
            markerfacecolor="none",
            label=f"{methods.label(method)} (published)",
        )
    ax.set_xlabel("σ² (colour variance of the training set)")
    ax.set_ylabel("unbiased test accuracy (test/acc)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)
    return None


def schedules_of(rows: list[Row]) -> dict[tuple[Any, Any], list[Row]]:
    """Rows by how they trained: (start, epochs)."""
    found: dict[tuple[Any, Any], list[Row]] = defaultdict(list)
    for row in rows:
        found[(row.fields.get("start"), row.fields.get("epochs"))].append(row)
    return dict(found)


def plot_curves(series: CurveSeries, path: Path) -> str | None:
    """Test accuracy and bias accuracy after every epoch, mean over seeds per configuration."""
    if not series:
        return "no run logged test metrics after each epoch (data.test_each_epoch=true)"
    fig, (*axes, legend_ax) = plt.subplots(
        1, 3, figsize=(14, 4.4), gridspec_kw={"width_ratios": [1, 1, 0.42]}
    )
    # colour: sigma^2 (what follows the method in the name); line: method and start
    tails = sorted({name.partition(", ")[2] for name in series})
    colors = plt.cm.viridis([i / max(len(tails) - 1, 1) for i in range(len(tails))])
    for name, curve in series.items():
        head, _, tail = name.partition(", ")
        style = "--" if head == "baseline" else ":" if "warm" in head else "-"
        color = colors[tails.index(tail)] if len(tails) > 1 else None
        for ax, metric in zip(axes, CURVE_METRICS, strict=True):
            points = [
                (epoch, values[metric]) for epoch, values in curve.items() if metric in values
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                marker = "." if len(xs) < 40 else None
                ax.plot(xs, ys, style, color=color, marker=marker, label=name)
    for ax, label in zip(
        axes,
        ("unbiased test accuracy (test/acc)", "bias predictability (test/bias_acc)"),
        strict=True,
    ):
        ax.set_xlabel("epochs trained (a warm-started run continues its source's count)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    legend_ax.axis("off")
    legend_ax.legend(*axes[0].get_legend_handles_labels(), loc="center left", fontsize=7)
    save_png(fig, path)
    return None
