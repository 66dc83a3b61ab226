"""The report's markdown: the table of configurations, the published comparison, the curves."""

from __future__ import annotations

from collections import defaultdict

from lnl_lightning.data.mnist_colors import DEFAULT_DATA
from lnl_lightning.records.identity import KEY_FIELDS
from lnl_lightning.report.curves import CurveSeries
from lnl_lightning.report.methods import Methods
from lnl_lightning.report.paired import paired_differences
from lnl_lightning.report.picks import picks, picks_table
from lnl_lightning.report.published import (
    OFFICIAL_WEIGHTS,
    PUBLISHED_COLORED_MNIST,
    PUBLISHED_REBIAS,
)
from lnl_lightning.report.records import Row
from lnl_lightning.selection import describe_rule, identity_of


def metric_columns(rows: list[Row]) -> list[str]:
    """val/acc (and the randomly coloured validation's accuracy and worst group), then
    accuracy, aligned, conflicting and worst-group accuracy and bias accuracy of every test
    set."""
    names = {m for row in rows for m in row.values}
    tests = sorted(
        {m.split("/")[0] for m in names if m.startswith("test")}, key=lambda t: (t != "test", t)
    )
    validation = ("val/acc", "val_random/acc", "val_random/acc_worst_group")
    columns = [m for m in validation if m in names]
    for test in tests:
        columns += [
            m
            for m in (
                f"{test}/acc",
                f"{test}/acc_aligned",
                f"{test}/acc_conflicting",
                f"{test}/acc_worst_group",
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


def _comparison_rows(rows: list[Row], x_key: str, methods: Methods) -> dict[str, dict[float, Row]]:
    """Baseline and official-weight LNL rows by ``x_key`` value, one series per method/step."""
    series: dict[str, dict[float, Row]] = defaultdict(dict)
    rules = {identity_of(row.rule) for row in rows if row.rule}
    for row in rows:
        x, method = row.fields.get(x_key), row.fields["method"]
        official = (row.fields["lambda"], row.fields["mu"]) == OFFICIAL_WEIGHTS
        if x is None or not row.values.get("test/acc") or (method == "lnl" and not official):
            continue
        name = methods.label(method)
        if row.fields.get("start") == "warm":
            name += " warm-started"
        if row.fields["step"] is not None:
            name += f" ({row.fields['step']} step)"
        if row.fields.get("epochs") is not None:
            name += f", {row.fields['epochs']} epochs"
        if row.fields.get("data") not in (None, DEFAULT_DATA):
            name += f", {row.fields['data']} data"
        if len(rules) > 1 and row.rule:  # rows of different rules: never one series
            name += f", {row.rule['name']} rule ({identity_of(row.rule)})"
        series[name][float(x)] = row
    return series


def published_comparison(rows: list[Row], methods: Methods) -> list[str]:
    """Markdown tables of test/acc against the published numbers, by sigma^2 and by rho."""
    lines: list[str] = []
    for x_key, symbol, published in (
        ("color_var", "σ²", PUBLISHED_COLORED_MNIST),
        ("rho", "ρ", PUBLISHED_REBIAS),
    ):
        series = _comparison_rows(rows, x_key, methods)
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
                f"{format_value(by_x[x], 'test/acc')} ({len(by_x[x].values['test/acc'])})"
                if x in by_x
                else "–"
                for x in xs
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for name, values in published.items():
            cells = [f"{values[x]:.4f}" if x in values else "–" for x in xs]
            name = methods.label(name)
            lines.append(f"| {name} (published) | " + " | ".join(cells) + " |")
    return lines


def markdown(
    rows: list[Row],
    incomplete: list[dict],
    plots: dict[str, str | None],
    methods: Methods,
    curves: list[str] | None = None,
) -> str:
    """report.md: the selection rules, one row per configuration, what each rule picks, the
    published comparison, the paired differences, the curves, then plots and unfinished
    jobs."""
    shown = [k for k in KEY_FIELDS if any(row.fields.get(k) is not None for row in rows)]
    columns = metric_columns(rows)
    lines = ["# Run comparison", ""]
    lines.append(
        f"{sum(len(r.seeds) for r in rows)} finished run(s) in {len(rows)} configuration(s); "
        "values are mean ± std over seeds (std with n − 1)."
    )
    lines += selection_lines(rows)
    lines.append("")
    header = [*shown, "runs", "seeds", *columns]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in rows:
        cells = ["–" if row.fields.get(k) is None else str(row.fields[k]) for k in shown]
        seeds = ",".join(str(s) for s in sorted(row.seeds, key=str))
        cells += [str(len(row.seeds)), seeds, *(format_value(row, m) for m in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    repeated = [folder for row in rows for folder in row.repeats]
    if repeated:
        lines += [
            "",
            f"{len(repeated)} rerun(s) of a seed already run with the same config are not "
            "counted as seeds (each seed counts once, by its latest run): "
            + ", ".join(str(folder) for folder in repeated),
        ]
    lines += picks_table(picks(rows))
    lines += published_comparison(rows, methods)
    lines += paired_differences(rows, methods.label)
    lines += curves or []
    lines += ["", "## Plots", ""]
    for name, reason in plots.items():
        lines.append(f"![{name}]({name})" if reason is None else f"- {name}: not drawn ({reason})")
    if incomplete:
        lines += ["", "## Jobs without results", "", "| folder | status | error |", "|---|---|---|"]
        for job in incomplete:
            lines.append(f"| {job['folder']} | {job['status']} | {job['error']} |")
    return "\n".join(lines) + "\n"


def selection_lines(rows: list[Row]) -> list[str]:
    """What selected each row's tested weights and what its sweeps maximise, in words; rows
    of different rules are never one row (the settings column says which is which)."""
    rules = sorted({describe_rule(row.rule) for row in rows if row.rule})
    if not rules:
        return []
    if len(rules) == 1:
        return ["", f"Selection rule of every run: {rules[0]}."]
    return ["", "Selection rules (rows of different rules are kept apart):", ""] + [
        f"- {rule}" for rule in rules
    ]


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
