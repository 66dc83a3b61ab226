"""Per-seed paired differences between each method and the baseline of the same setting.

Runs of one seed share the data and the initialisation, so a method's difference from the
baseline of its own seed removes the seed-to-seed spread both carry: the mean of those
differences and their spread say more than two means side by side when seeds are few.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any, Protocol

# What must be equal for two runs to be a pair (besides the seed): the data and the schedule.
PAIR_FIELDS = ("task_name", "color_var", "data", "rho", "train_split", "task", "epochs")
PAIRED_METRICS = ("test/acc", "test/acc_conflicting", "test/bias_acc")
# what tells two rows of one method apart within a setting: its own settings (LNL's lambda, mu)
METHOD_FIELDS = ("lambda", "mu", "settings")


class Row(Protocol):  # report.Row
    fields: dict[str, Any]
    seeds: list[Any]
    values: dict[str, list[float]]


def format_differences(diffs: list[float]) -> str:
    """``+0.0900 ± 0.0361 (+0.1000, +0.0500, +0.1200)``: the mean of per-seed differences, their
    std (n − 1) when there are several, and each seed's in brackets."""
    spread = f" ± {statistics.stdev(diffs):.4f}" if len(diffs) > 1 else ""
    each = ", ".join(f"{d:+.4f}" for d in diffs)
    return f"{statistics.fmean(diffs):+.4f}{spread} ({each})"


def paired_differences(rows: list[Row], label: Any = str) -> list[str]:
    """Markdown: for each non-baseline row with a baseline row of the same setting, the
    per-seed differences (method - baseline) of :data:`PAIRED_METRICS`."""
    baselines = {
        tuple(row.fields.get(k) for k in PAIR_FIELDS): row
        for row in rows
        if row.fields.get("method") == "baseline"
    }
    # a method's own settings (LNL's lambda, mu) are named where its rows differ in them
    values = defaultdict(lambda: defaultdict(set))
    for row in rows:
        for field in METHOD_FIELDS:
            values[row.fields.get("method")][field].add(repr(row.fields.get(field)))
    varying = {m: [f for f in METHOD_FIELDS if len(seen[f]) > 1] for m, seen in values.items()}
    lines = []
    for row in rows:
        base = baselines.get(tuple(row.fields.get(k) for k in PAIR_FIELDS))
        if row.fields.get("method") == "baseline" or base is None:
            continue
        seeds = [s for s in row.seeds if s in base.seeds]
        cells = []
        for metric in PAIRED_METRICS:
            if not row.values.get(metric) or not base.values.get(metric):
                cells.append("–")
                continue
            ours = dict(zip(row.seeds, row.values[metric], strict=True))
            theirs = dict(zip(base.seeds, base.values[metric], strict=True))
            cells.append(format_differences([ours[s] - theirs[s] for s in seeds]))
        if not seeds:
            continue
        name = label(row.fields["method"])
        if row.fields.get("start") == "warm":
            name += " warm-started"
        shown = [(k, row.fields.get(k)) for k in (*varying[row.fields["method"]], *PAIR_FIELDS[1:])]
        # "settings" is already "key=value ..."
        setting = [v if k == "settings" else f"{k}={v}" for k, v in shown if v not in (None, "")]
        lines.append(
            f"| {name} | {', '.join(setting)} | {','.join(map(str, seeds))} | "
            + " | ".join(cells)
            + " |"
        )
    if not lines:
        return []
    header = " | ".join(f"Δ {m}" for m in PAIRED_METRICS)
    return [
        "",
        "## Paired differences from the baseline",
        "",
        "Per seed, the method's value minus the baseline's of the same seed, data and schedule; "
        "mean ± std over seeds (each seed's difference in brackets).",
        "",
        f"| method | setting | seeds | {header} |",
        "|---|---|---|" + "---|" * len(PAIRED_METRICS),
        *lines,
    ]
