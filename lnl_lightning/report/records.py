"""A study's records as the report reads them: runs, and configurations (runs but the seed).

:func:`collect` finds the finished runs below a folder (their ``metrics.json``) and the job
folders without results; :func:`summarize` groups runs into :class:`Row` s, one per
configuration, with each metric's per-seed values.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lnl_lightning.records.folder import (
    CHECKPOINTS,
    ERROR_FILE,
    HYDRA_DIR,
    METRICS_FILE,
    RunSummary,
    read_config,
    read_error,
    read_summary,
)
from lnl_lightning.records.identity import KEY_FIELDS, run_fields, run_identity
from lnl_lightning.selection import selection_rule

log = logging.getLogger(__name__)


@dataclass
class Run:
    """One finished job: its folder, final metrics and identifying fields."""

    folder: Path
    metrics: dict[str, float]
    fields: dict[str, Any]
    warm_from: Path | None = None  # run folder of model.init_from's checkpoint
    identity: dict[str, Any] = field(default_factory=dict)  # every setting but the seed
    display: dict[str, Any] = field(default_factory=dict)  # model.display: how it is drawn
    rule: dict[str, Any] = field(default_factory=dict)  # its selection rule (selection.py)


@dataclass
class Row:
    """One configuration: its fields and the per-seed values of every metric."""

    fields: dict[str, Any]
    seeds: list[Any] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    repeats: list[Path] = field(default_factory=list)  # reruns of a seed, not counted
    rule: dict[str, Any] = field(default_factory=dict)  # the selection rule of its runs

    def mean(self, metric: str) -> float:
        values = self.values.get(metric, [])
        return statistics.fmean(values) if values else math.nan

    def std(self, metric: str) -> float:
        values = self.values.get(metric, [])
        return statistics.stdev(values) if len(values) > 1 else 0.0


def source_folder(folder: Path, init_from: str, config: DictConfig) -> Path:
    """The run folder of ``model.init_from`` (``<run>/checkpoints/<file>``), also in a moved tree.

    Records name the paths the runs had when they trained. When a tree of runs is copied or
    renamed, a source keeps its place relative to the run warm-started from it, so it is looked
    for there first (relative to the run's recorded ``paths.output_dir``).
    """
    source = Path(init_from).parent.parent
    trained_in = OmegaConf.select(config, "paths.output_dir")
    if trained_in:
        moved = Path(os.path.normpath(folder / os.path.relpath(source, trained_in)))
        if moved.is_dir():
            return moved
    return source


def load_run(folder: Path, summary: RunSummary | None) -> Run:
    """A run folder with its summary (``metrics.json``; None for a run still going)."""
    config = read_config(folder)
    init_from = OmegaConf.select(config, "model.init_from") if config is not None else None
    warm_from = source_folder(folder, init_from, config) if init_from else None
    identity = run_identity(config) if config is not None else {}
    identity.pop("seed", None)
    fields = run_fields(config, summary)
    display = OmegaConf.select(config, "model.display") if config is not None else None
    display = OmegaConf.to_container(display) if display is not None else {}
    rule = selection_rule(OmegaConf.to_container(config, resolve=True)) if config else {}
    metrics = summary.metrics if summary else {}
    return Run(folder, metrics, fields, warm_from, identity, display, rule)


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
    started = {p.parent for p in root.rglob(HYDRA_DIR)} | {p.parent for p in root.rglob(ERROR_FILE)}
    for folder in sorted(started):
        if (folder / METRICS_FILE).is_file():
            continue
        error = read_error(folder)
        if error is None:
            incomplete.append({"folder": str(folder), "status": "running or stopped", "error": ""})
            continue
        # refused: stopped by a check before it trained (a sweep job's bad setting or data)
        refused = (
            error.startswith(("ConfigError", "DataError")) and not (folder / CHECKPOINTS).exists()
        )
        status = "refused" if refused else "failed"
        incomplete.append({"folder": str(folder), "status": status, "error": error})
    return runs, incomplete


def summarize(runs: list[Run]) -> list[Row]:
    """Group runs by every identifying field but the seed. A seed run more than once (the same
    config, the same seed: a repeat, not a new sample) counts once, by its latest run; the
    others are listed in the row's ``repeats``."""
    rows: dict[tuple, Row] = {}
    identities: dict[tuple, dict[str, Any]] = {}
    latest: dict[tuple, Run] = {}
    repeats: dict[tuple, list[Path]] = defaultdict(list)
    for run in sorted(runs, key=_finished_at):
        key = _row_key(run)
        earlier = latest.get((key, repr(run.fields.get("seed"))))
        if earlier is not None:
            repeats[key].append(earlier.folder)
        latest[(key, repr(run.fields.get("seed")))] = run
    for run in latest.values():
        key = _row_key(run)
        row = rows.setdefault(key, Row({k: run.fields.get(k) for k in KEY_FIELDS}, rule=run.rule))
        row.repeats = sorted(repeats[key])
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


def _row_key(run: Run) -> tuple:
    shown = tuple(run.fields.get(k) for k in KEY_FIELDS)
    return (shown, json.dumps(run.identity, sort_keys=True, default=str))


def readable_settings(identity: dict[str, Any], names: list[str]) -> str:
    """``key=value`` for the settings ``names`` in ``identity``, as a reader knows them: a
    group of nested keys (``trainer.strategy._target_``, ``...process_group_backend``) as its
    one choice (``trainer.strategy=DDPStrategy``), and keys this run does not set left out."""
    parts: dict[str, str] = {}
    for name in names:
        value = identity.get(name)
        if value is None:
            continue
        group, _, leaf = name.rpartition(".")
        if leaf == "_target_":
            parts[group] = str(value).rsplit(".", 1)[-1]
        elif group in parts or any(n == f"{group}._target_" for n in names):
            continue  # a nested setting of a choice already named
        else:
            parts[name] = str(value)
    return " ".join(f"{k}={v}" for k, v in parts.items())


def _finished_at(run: Run) -> float:
    """When the run wrote its summary (its ``metrics.json``)."""
    try:
        return (run.folder / METRICS_FILE).stat().st_mtime
    except OSError:
        return 0.0


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
            extra = readable_settings(identities[key], varying)
            own = rows[key].fields.get("settings")
            rows[key].fields["settings"] = " ".join(x for x in (own, extra) if x)
