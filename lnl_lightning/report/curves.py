"""Learning curves: the test metrics logged after each epoch, by configuration.

A run with ``data.test_each_epoch`` logs them to its CSV logger's files; a run warm-started
from another (``model.init_from``) continues that run's epoch count.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from lnl_lightning.records.folder import read_summary
from lnl_lightning.report.records import Run

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
    "epochs": "{} epochs",  # runs of different lengths are different curves, not averaged
}


def curve_series(runs: list[Run], label: Callable[[str], str] = str) -> CurveSeries:
    """``{series name: {epochs trained: {metric: mean over seeds}}}`` of the epoch curves.

    A series is one method and start (scratch or warm) at one sigma^2, and one value of every
    other identifying field that varies among that method's runs (lambda, mu, settings, ...),
    so that only seeds are averaged; runs of different lengths are different series.
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
        name = label(str(f["method"])) + (" warm-started" if f["start"] == "warm" else "")
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
