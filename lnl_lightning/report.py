"""Compare runs: ``python -m lnl_lightning.report <multirun or runs folder> [--out DIR]``.

Collects every ``metrics.json`` below the folder, groups the runs by configuration (all
but the seed) and writes ``report.md`` (mean ± std over seeds, runs counted, unfinished and
failed jobs listed) and PNG plots:

- ``acc_vs_lambda.png``: unbiased test accuracy against lambda, one line per mu, the
  baseline as a reference line;
- ``acc_vs_color_var.png``: test accuracy against sigma^2 per method (the paper's Fig. 4
  layout) with the published numbers as reference series (Colored MNIST runs only);
- ``bias_acc_vs_lambda.png``: bias predictability (``test/bias_acc``) against lambda;
- ``curves.png``: test accuracy and ``test/bias_acc`` after every epoch (runs with
  ``data.test_each_epoch``), mean over seeds per configuration; a run warm-started from
  another (``model.init_from``) continues that run's epoch count.

A run is identified by its method, weights, the method's own settings (``model.*`` keys
beyond the shared recipe, e.g. BlindEye's ``confusion_weight``), data settings, how it
started (``scratch`` or ``warm`` from another run's checkpoint) and its number of epochs;
runs that agree on these but differ in any other setting that changes a result (every key of
the resolved config but paths, logging and speed options: ``lnl_lightning/identity.py``, e.g.
the learning rate, ``data.seed``, ``trainer.limit_train_batches``) are kept apart too, the
differing settings shown in the ``settings`` column. Evaluations (``lnl_lightning.eval``
folders) are not runs and are left out.
``--methods`` keeps only the runs of the methods named.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from lnl_lightning.data.mnist_colors import DEFAULT_DATA  # noqa: E402
from lnl_lightning.figures import save_png  # noqa: E402
from lnl_lightning.files import write_text_atomic  # noqa: E402
from lnl_lightning.identity import KEY_FIELDS, run_fields, run_identity  # noqa: E402
from lnl_lightning.paired import paired_differences  # noqa: E402
from lnl_lightning.run_records import (  # noqa: E402
    CONFIG_FILE,
    METRICS_FILE,
    RunSummary,
    read_config,
    read_error,
    read_summary,
)

log = logging.getLogger(__name__)

# Unbiased test accuracy on Colored MNIST, from the official repository's README
# ("alternative of Fig. 4"), github.com/feidfoe/learning-not-to-learn.
PUBLISHED_COLORED_MNIST = {
    "baseline": {
        0.020: 0.4055,
        0.025: 0.4813,
        0.030: 0.5996,
        0.035: 0.6626,
        0.040: 0.7333,
        0.045: 0.7973,
        0.050: 0.8450,
    },
    "blind_eye": {
        0.020: 0.6741,
        0.025: 0.7123,
        0.030: 0.7883,
        0.035: 0.8203,
        0.040: 0.8638,
        0.045: 0.8927,
        0.050: 0.9159,
    },
    "gray": {
        0.020: 0.8374,
        0.025: 0.8751,
        0.030: 0.8996,
        0.035: 0.9166,
        0.040: 0.9325,
        0.045: 0.9472,
        0.050: 0.9596,
    },
    "lnl": {
        0.020: 0.8185,
        0.025: 0.8854,
        0.030: 0.9137,
        0.035: 0.9306,
        0.040: 0.9406,
        0.045: 0.9555,
        0.050: 0.9618,
    },
}
# Unbiased test accuracy of the ReBias protocol (Bahng et al. 2020, Table 1), by rho.
PUBLISHED_REBIAS = {
    "vanilla": {0.999: 0.104, 0.997: 0.334, 0.995: 0.721, 0.990: 0.891},
    "ReBias": {0.999: 0.227, 0.997: 0.642, 0.995: 0.760, 0.990: 0.881},
}
OFFICIAL_WEIGHTS = (0.01, 0.1)  # (lambda, mu) of the published LNL runs
METHOD_STYLE = {
    "baseline": ("tab:gray", "o"),
    "lnl": ("tab:blue", "s"),
    "blind_eye": ("tab:orange", "v"),
    "gray": ("tab:green", "D"),
    "group_dro": ("tab:purple", "^"),
    "lff": ("tab:red", "P"),
}
METHOD_LABELS = {
    "lnl": "LNL",
    "blind_eye": "BlindEye",
    "gray": "Gray",
    "group_dro": "GroupDRO",
    "lff": "LfF",
}


def method_label(method: str) -> str:
    """How tables and legends name a method ("LNL" for lnl); an unknown one as it is."""
    return METHOD_LABELS.get(method, method)


@dataclass
class Run:
    """One finished job: its folder, final metrics and identifying fields."""

    folder: Path
    metrics: dict[str, float]
    fields: dict[str, Any]
    warm_from: Path | None = None  # run folder of model.init_from's checkpoint
    identity: dict[str, Any] = field(default_factory=dict)  # every setting but the seed


@dataclass
class Row:
    """One configuration: its fields and the per-seed values of every metric."""

    fields: dict[str, Any]
    seeds: list[Any] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def mean(self, metric: str) -> float:
        values = self.values.get(metric, [])
        return statistics.fmean(values) if values else math.nan

    def std(self, metric: str) -> float:
        values = self.values.get(metric, [])
        return statistics.stdev(values) if len(values) > 1 else 0.0


def load_run(folder: Path, summary: RunSummary | None) -> Run:
    """A run folder with its summary (``metrics.json``; None for a run still going)."""
    config = read_config(folder)
    init_from = OmegaConf.select(config, "model.init_from") if config is not None else None
    warm_from = Path(init_from).parent.parent if init_from else None  # <run>/checkpoints/x
    identity = run_identity(config) if config is not None else {}
    identity.pop("seed", None)
    fields = run_fields(config, summary)
    return Run(folder, summary.metrics if summary else {}, fields, warm_from, identity)


def collect(root: Path) -> tuple[list[Run], list[dict[str, str]]]:
    """Finished runs below ``root`` and the job folders without results (failed or running)."""
    runs = []
    for path in sorted(root.rglob(METRICS_FILE)):
        try:
            summary = read_summary(path.parent)
        except (OSError, ValueError, TypeError, AttributeError) as err:
            log.warning("Skipping unreadable %s: %s", path, err)
            continue
        if summary is not None and not summary.is_evaluation:
            runs.append(load_run(path.parent, summary))
    incomplete = []
    for hydra_dir in sorted(root.rglob(".hydra")):
        folder = hydra_dir.parent
        if (folder / METRICS_FILE).is_file():
            continue
        error = read_error(folder)
        if error is not None:
            incomplete.append({"folder": str(folder), "status": "failed", "error": error})
        else:
            incomplete.append({"folder": str(folder), "status": "running or stopped", "error": ""})
    return runs, incomplete


def summarize(runs: list[Run]) -> list[Row]:
    """Group runs by every identifying field but the seed."""
    rows: dict[tuple, Row] = {}
    identities: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        shown = tuple(run.fields.get(k) for k in KEY_FIELDS)
        key = (shown, json.dumps(run.identity, sort_keys=True, default=str))
        row = rows.setdefault(key, Row({k: run.fields.get(k) for k in KEY_FIELDS}))
        identities[key] = run.identity
        row.seeds.append(run.fields.get("seed"))
        for metric, value in run.metrics.items():
            row.values[metric].append(float(value))
    _name_hidden_differences(rows, identities)

    def order(row: Row) -> tuple:
        return tuple(
            (v is None, str(v) if isinstance(v, str) else v or 0) for v in row.fields.values()
        )

    return sorted(rows.values(), key=order)


def _name_hidden_differences(rows: dict[tuple, Row], identities: dict[tuple, dict]) -> None:
    """Rows alike in every shown field get the settings that tell them apart in ``settings``."""
    alike: dict[tuple, list[tuple]] = defaultdict(list)
    for key in rows:
        alike[key[0]].append(key)
    for keys in alike.values():
        if len(keys) < 2:
            continue
        names = sorted({name for key in keys for name in identities[key]})
        varying = [n for n in names if len({repr(identities[k].get(n)) for k in keys}) > 1]
        for key in keys:
            extra = " ".join(f"{n}={identities[key].get(n)}" for n in varying)
            own = rows[key].fields.get("settings")
            rows[key].fields["settings"] = " ".join(x for x in (own, extra) if x)


def metric_columns(rows: list[Row]) -> list[str]:
    """val/acc, then accuracy, aligned and conflicting accuracy and bias accuracy of every
    test set."""
    names = {m for row in rows for m in row.values}
    tests = sorted(
        {m.split("/")[0] for m in names if m.startswith("test")}, key=lambda t: (t != "test", t)
    )
    columns = [m for m in ("val/acc",) if m in names]
    for test in tests:
        columns += [
            m
            for m in (
                f"{test}/acc",
                f"{test}/acc_aligned",
                f"{test}/acc_conflicting",
                f"{test}/bias_acc",
            )
            if m in names
        ]
    return columns


def format_value(row: Row, metric: str) -> str:
    if not row.values.get(metric):
        return "–"
    if len(row.values[metric]) == 1:
        return f"{row.mean(metric):.4f}"
    return f"{row.mean(metric):.4f} ± {row.std(metric):.4f}"


def _comparison_rows(rows: list[Row], x_key: str) -> dict[str, dict[float, Row]]:
    """Baseline and official-weight LNL rows by ``x_key`` value, one series per method/step."""
    series: dict[str, dict[float, Row]] = defaultdict(dict)
    for row in rows:
        x, method = row.fields.get(x_key), row.fields["method"]
        official = (row.fields["lambda"], row.fields["mu"]) == OFFICIAL_WEIGHTS
        if x is None or not row.values.get("test/acc") or (method == "lnl" and not official):
            continue
        name = method_label(method)
        if row.fields.get("start") == "warm":
            name += " warm-started"
        if row.fields["step"] is not None:
            name += f" ({row.fields['step']} step)"
        if row.fields.get("epochs") is not None:
            name += f", {row.fields['epochs']} epochs"
        if row.fields.get("data") not in (None, DEFAULT_DATA):
            name += f", {row.fields['data']} data"
        series[name][float(x)] = row
    return series


def published_comparison(rows: list[Row]) -> list[str]:
    """Markdown tables of test/acc against the published numbers, by sigma^2 and by rho."""
    lines: list[str] = []
    for x_key, symbol, published in (
        ("color_var", "σ²", PUBLISHED_COLORED_MNIST),
        ("rho", "ρ", PUBLISHED_REBIAS),
    ):
        series = _comparison_rows(rows, x_key)
        if not series:
            continue
        xs = sorted(
            {x for s in series.values() for x in s} | {x for p in published.values() for x in p}
        )
        title = "Colored MNIST (Kim et al.)" if x_key == "color_var" else "ReBias protocol"
        lines += [
            "",
            f"## {title}: unbiased test accuracy against the published numbers",
            "",
            f"Mean ± std over seeds (n); published values as reported. λ, μ = {OFFICIAL_WEIGHTS}.",
            "",
            f"| {symbol} | " + " | ".join(f"{x:g}" for x in xs) + " |",
            "|---|" + "---|" * len(xs),
        ]
        for name, by_x in sorted(
            series.items(), key=lambda item: (item[0].startswith("LNL"), item)
        ):
            cells = [
                f"{by_x[x].mean('test/acc'):.4f} ± {by_x[x].std('test/acc'):.4f} "
                f"({len(by_x[x].values['test/acc'])})"
                if x in by_x
                else "–"
                for x in xs
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for name, values in published.items():
            cells = [f"{values[x]:.4f}" if x in values else "–" for x in xs]
            name = method_label(name)
            lines.append(f"| {name} (published) | " + " | ".join(cells) + " |")
    return lines


def write_markdown(
    rows: list[Row],
    incomplete: list[dict],
    plots: dict[str, str | None],
    path: Path,
    curves: list[str] | None = None,
) -> None:
    """report.md: one row per configuration, then plots and unfinished jobs."""
    shown = [k for k in KEY_FIELDS if any(row.fields.get(k) is not None for row in rows)]
    columns = metric_columns(rows)
    lines = ["# Run comparison", ""]
    lines.append(
        f"{sum(len(r.seeds) for r in rows)} finished run(s) in {len(rows)} configuration(s); "
        "values are mean ± std over seeds (std with n − 1)."
    )
    lines.append("")
    header = [*shown, "runs", "seeds", *columns]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in rows:
        cells = ["–" if row.fields.get(k) is None else str(row.fields[k]) for k in shown]
        seeds = ",".join(str(s) for s in sorted(row.seeds, key=str))
        cells += [str(len(row.seeds)), seeds, *(format_value(row, m) for m in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += published_comparison(rows)
    lines += paired_differences(rows, method_label)
    lines += curves or []
    lines += ["", "## Plots", ""]
    for name, reason in plots.items():
        lines.append(f"![{name}]({name})" if reason is None else f"- {name}: not drawn ({reason})")
    if incomplete:
        lines += ["", "## Jobs without results", "", "| folder | status | error |", "|---|---|---|"]
        for job in incomplete:
            lines.append(f"| {job['folder']} | {job['status']} | {job['error']} |")
    write_text_atomic(path, "\n".join(lines) + "\n")


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


def plot_vs_color_var(rows: list[Row], path: Path) -> str | None:
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
        color, marker = METHOD_STYLE.get(method) or (next(others, None), "^")
        name = f"{method_label(method)} (this repo)" if method in METHOD_STYLE else method
        _errorbar(ax, group, "color_var", "test/acc", marker=marker, color=color, label=name)
    for method, values in PUBLISHED_COLORED_MNIST.items():
        if by_method and method not in by_method:
            continue  # published rows of the methods this report holds
        color, marker = METHOD_STYLE[method]
        ax.plot(
            list(values),
            list(values.values()),
            linestyle=":",
            marker=marker,
            color=color,
            alpha=0.6,
            markerfacecolor="none",
            label=f"{method_label(method)} (published)",
        )
    ax.set_xlabel("σ² (colour variance of the training set)")
    ax.set_ylabel("unbiased test accuracy (test/acc)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)
    return None


CURVE_METRICS = ("test/acc", "test/bias_acc")


def epoch_curve(folder: Path) -> dict[int, dict[str, float]]:
    """``{epoch: {metric: value}}`` of the test metrics logged after each training epoch.

    Read from the CSV logger's files (every version: a resumed run adds one), in version
    order, so a later version's value of an epoch wins; rows from the final validate/test
    calls (epoch == epochs trained) are left out.
    """
    curve: dict[int, dict[str, float]] = defaultdict(dict)
    logs = (folder / "csv").glob("version_*/metrics.csv")
    for path in sorted(logs, key=lambda p: (len(p.parent.name), p.parent.name)):  # 2 before 10
        with path.open() as file:
            for record in csv.DictReader(file):
                for metric in CURVE_METRICS:
                    if record.get(metric) and record.get("epoch"):
                        curve[int(record["epoch"])][metric] = float(record[metric])
    summary = read_summary(folder)
    epochs = summary.epochs if summary is not None else None
    return {e: v for e, v in curve.items() if epochs is None or e < epochs}


def folder_key(folder: Path) -> tuple[str, str]:
    """A run folder's last two names: finds a source run also after its tree was moved."""
    return folder.parent.name, folder.name


def epochs_before(run: Run, by_folder: dict[tuple[str, str], Run]) -> int:
    """Epochs trained before this run began: those of the run it was warm-started from."""
    source = by_folder.get(folder_key(run.warm_from)) if run.warm_from else None
    if source is None or source is run:
        return 0
    return int(source.fields.get("epochs") or 0) + epochs_before(source, by_folder)


CurveSeries = dict[str, dict[int, dict[str, float]]]


# Fields that tell curves of one method apart, when they vary: how each is named in a series.
SERIES_FIELDS = {
    "task_name": "{}",
    "step": "{} step",
    "lambda": "λ={}",
    "mu": "μ={}",
    "data": "{} data",
    "rho": "ρ={}",
    "train_split": "train {}",
    "task": "task {}",
    "settings": "{}",
}


def curve_series(runs: list[Run]) -> CurveSeries:
    """``{series name: {epochs trained: {metric: mean over seeds}}}`` of the epoch curves.

    A series is one method and start (scratch or warm) at one sigma^2, and one value of every
    other identifying field that varies among that method's runs (lambda, mu, settings, ...),
    so that only seeds are averaged; runs of other lengths share a series (epoch by epoch).
    """
    by_folder = {folder_key(run.folder): run for run in runs}
    curves = [(run, curve) for run in runs if (curve := epoch_curve(run.folder))]
    values_by_method: dict[tuple, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for run, _ in curves:
        for key in SERIES_FIELDS:
            values_by_method[run.fields["method"], run.fields["start"]][key].add(
                run.fields.get(key)
            )
    series: dict[str, dict[int, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for run, curve in curves:
        f = run.fields
        name = method_label(str(f["method"])) + (" warm-started" if f["start"] == "warm" else "")
        varying = values_by_method[f["method"], f["start"]]
        name += "".join(
            ", " + form.format(f.get(key))
            for key, form in SERIES_FIELDS.items()
            if len(varying[key]) > 1
        )
        if f.get("color_var") is not None:
            name += f", σ²={f['color_var']}"
        if not run.metrics:
            name += " (unfinished)"
        offset = epochs_before(run, by_folder)
        for epoch, values in curve.items():
            series[name][offset + epoch + 1].append(values)
    return {
        name: {
            epoch: {
                m: statistics.fmean(v[m] for v in values if m in v)
                for m in CURVE_METRICS
                if any(m in v for v in values)
            }
            for epoch, values in sorted(by_epoch.items())
        }
        for name, by_epoch in sorted(series.items())
    }


def curve_table(series: CurveSeries) -> list[str]:
    """Markdown: test/acc (test/bias_acc) after each epoch, one column per series."""
    if not series:
        return []
    names = list(series)
    epochs = sorted({e for curve in series.values() for e in curve})
    lines = [
        "",
        "## Test accuracy after each epoch",
        "",
        "test/acc (test/bias_acc), mean over seeds; logged for the curves only, never used to "
        "select. A warm-started run continues its source's epoch count.",
        "",
        "| epochs | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for epoch in epochs:
        cells = []
        for name in names:
            values = series[name].get(epoch, {})
            acc, bias = values.get("test/acc"), values.get("test/bias_acc")
            text = "–" if acc is None else f"{acc:.4f}"
            cells.append(text if bias is None else f"{text} ({bias:.3f})")
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return lines


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


def write_report(
    roots: Path | Sequence[Path], out: Path | None = None, methods: Sequence[str] | None = None
) -> Path:
    """Collect the runs below ``roots`` and write report.md and the plots into ``out``
    (default: the first root); with ``methods``, only the runs of those methods."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    out = out or roots[0]
    out.mkdir(parents=True, exist_ok=True)
    runs, incomplete = [], []
    for root in roots:
        found, unfinished = collect(root)
        runs += found
        incomplete += unfinished
    if methods:
        runs = [run for run in runs if run.fields["method"] in methods]
    rows = summarize(runs)
    plots = {
        "acc_vs_lambda.png": plot_vs_lambda(
            rows, "test/acc", "unbiased test accuracy (test/acc)", out / "acc_vs_lambda.png"
        ),
        "acc_vs_color_var.png": plot_vs_color_var(rows, out / "acc_vs_color_var.png"),
        "bias_acc_vs_lambda.png": plot_vs_lambda(
            rows,
            "test/bias_acc",
            "bias predictability (test/bias_acc)",
            out / "bias_acc_vs_lambda.png",
        ),
    }
    # runs still going (or stopped) have curves too: what they logged so far
    unfinished = [
        load_run(Path(job["folder"]), None)
        for job in incomplete
        if (Path(job["folder"]) / CONFIG_FILE).is_file()
    ]
    series = curve_series(runs + unfinished)
    plots["curves.png"] = plot_curves(series, out / "curves.png")
    path = out / "report.md"
    write_markdown(rows, incomplete, plots, path, curve_table(series))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lnl_lightning.report",
        description="Compare the runs below a folder: report.md (mean ± std over seeds) and plots.",
    )
    parser.add_argument(
        "folders",
        type=Path,
        nargs="+",
        help="multirun folders or any folders of run folders, reported together",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: the first folder)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="report only these methods (their labels: baseline lnl blind_eye gray ...)",
    )
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder")
    out = args.out or args.folders[0]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        parser.error(
            f"--out: cannot write into {out} ({err.strerror or err}): give a writable folder"
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = write_report(args.folders, out, args.methods)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
