"""Which configuration each selection rule picks among runs that differ only in a method's
settings (a lambda x mu grid, BlindEye's confusion weight, ...), and what it scores on test.

A rule maximises one validation metric (:data:`RULES`), averaged over the seeds every
candidate was run with. The configuration test accuracy would pick is shown beside them as a
reference ("test-set oracle"): it reads the test set, so it is never a rule, only the yardstick
that says whether a rule picked well.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any, Protocol

from lnl_lightning.report.paired import METHOD_FIELDS, format_differences
from lnl_lightning.report.published import OFFICIAL_WEIGHTS
from lnl_lightning.selection import RULE_METRICS, uses_bias_labels

RULES = tuple(RULE_METRICS.items())  # the rules of conf/selection/, each with its metric
ORACLE = ("test-set oracle (a reference, never a rule)", "test/acc")
CHOSEN = METHOD_FIELDS  # what candidates of one choice may differ in: the method's own settings


class Row(Protocol):  # report.Row
    fields: dict[str, Any]
    seeds: list[Any]
    values: dict[str, list[float]]

    def mean(self, metric: str) -> float: ...

    def std(self, metric: str) -> float: ...


def choices(rows: list[Row]) -> list[tuple[list[Row], list[Any]]]:
    """Rows that differ only in the method's settings, with the seeds all of them were run
    with: one choice each (two rows or more sharing at least one seed). A rule compares the
    candidates on those shared seeds alone, so a candidate run with more seeds is no better
    or worse placed for it."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        groups[tuple(repr(v) for k, v in row.fields.items() if k not in CHOSEN)].append(row)
    found = []
    for group in groups.values():
        shared = set.intersection(*({repr(s) for s in row.seeds} for row in group))
        if len(group) > 1 and shared:
            found.append((group, sorted((s for s in group[0].seeds if repr(s) in shared), key=str)))
    return found


def by_seed(row: Row, metric: str) -> dict[str, float]:
    """The row's values of ``metric``, by seed (``repr`` of it)."""
    return dict(zip(map(repr, row.seeds), row.values.get(metric, []), strict=False))


def values_over(row: Row, metric: str, seeds: list[Any]) -> list[float]:
    """The row's values of ``metric`` for those of ``seeds`` it has."""
    values = by_seed(row, metric)
    return [values[repr(s)] for s in seeds if repr(s) in values]


def mean_over(row: Row, metric: str, seeds: list[Any]) -> float:
    """The row's mean of ``metric`` over ``seeds`` (NaN where a seed lacks it)."""
    picked = values_over(row, metric, seeds)
    return statistics.fmean(picked) if len(picked) == len(seeds) else math.nan


def std_over(row: Row, metric: str, seeds: list[Any]) -> float:
    picked = values_over(row, metric, seeds)
    return statistics.stdev(picked) if len(picked) > 1 else 0.0


def setting(row: Row) -> str:
    """What a pick chose: ``lambda=0.01 mu=0.1`` (and the method's own settings)."""
    parts = [f"{k}={row.fields[k]}" for k in CHOSEN if row.fields.get(k) is not None]
    return " ".join(parts) or "–"


def picks(rows: list[Row]) -> list[dict[str, Any]]:
    """For each choice and each rule whose metric every candidate has: the row it picks (with
    ``tied`` > 1 when several share its best value: then the rule picks none of them)."""
    found = []
    for group, seeds in choices(rows):
        test = {id(row): mean_over(row, "test/acc", seeds) for row in group}
        ranked = sorted(group, key=lambda row: test[id(row)], reverse=True)
        for rule, metric in (*RULES, ORACLE):
            value = {id(row): mean_over(row, metric, seeds) for row in group}
            if any(math.isnan(v) for v in value.values()):
                continue
            best = max(group, key=lambda row: value[id(row)])
            paper = next((r for r in group if is_paper_setting(r) and r is not best), None)
            tied = sum(value[id(row)] == value[id(best)] for row in group)
            agreement = rank_agreement([value[id(r)] for r in group], [test[id(r)] for r in group])
            found.append(
                {
                    "rule": rule,
                    "metric": metric,
                    "uses_bias_labels": uses_bias_labels(metric),
                    "method": best.fields.get("method"),
                    "lambda": best.fields.get("lambda"),
                    "mu": best.fields.get("mu"),
                    "settings": best.fields.get("settings"),
                    "value": value[id(best)],
                    "test_acc": test[id(best)],
                    "test_acc_std": std_over(best, "test/acc", seeds),
                    "test_rank": ranked.index(best) + 1,
                    "rank_agreement": agreement,  # Spearman rho of the metric with test/acc
                    "largest_gap": max(abs(value[id(r)] - test[id(r)]) for r in group),
                    "candidates": len(group),
                    "tied": tied,  # candidates with the same best value: the rule cannot decide
                    "seeds": seeds,  # the seeds the candidates share, all compared on
                    "choice": ", ".join(
                        f"{k}={v}"
                        for k, v in best.fields.items()
                        if k not in (*CHOSEN, "epochs") and v is not None
                    ),
                    "vs_paper": None if paper is None else per_seed_difference(best, paper, seeds),
                    "_row": best,
                    "_group": group,
                }
            )
    return found


def rank_agreement(metric: list[float], test: list[float]) -> float:
    """Spearman's rank correlation of a rule's metric with test accuracy over the candidates:
    1 when the rule orders them as test does (NaN when either is constant)."""
    from scipy.stats import spearmanr

    if len(set(metric)) < 2 or len(set(test)) < 2:
        return math.nan
    return float(spearmanr(metric, test).statistic)


def is_paper_setting(row: Row) -> bool:
    """LNL at the paper's (lambda, mu)."""
    official = (row.fields.get("lambda"), row.fields.get("mu")) == OFFICIAL_WEIGHTS
    return row.fields.get("method") == "lnl" and official


def per_seed_difference(row: Row, reference: Row, seeds: list[Any]) -> list[float]:
    """``row`` minus ``reference`` in test/acc, seed by seed (the same data and init)."""
    ours, theirs = by_seed(row, "test/acc"), by_seed(reference, "test/acc")
    return [ours[repr(s)] - theirs[repr(s)] for s in seeds]


def picks_table(found: list[dict[str, Any]]) -> list[str]:
    """Markdown: each choice's picks, one line per rule."""
    if not found:
        return []
    lines = [
        "",
        "## Which configuration each selection rule picks",
        "",
        "Among configurations that differ only in the method's settings (same data and "
        "schedule), the one with the highest mean of the rule's validation metric over the "
        "seeds they all were run with, and its "
        "unbiased test accuracy over those seeds (mean ± std; rank among the candidates by test "
        "accuracy; ρ: Spearman's rank correlation of the rule's metric with test accuracy over "
        "the candidates, 1 when it orders them as test does; gap: the largest difference "
        "between the two in any candidate). "
        "The test-set oracle is a reference, not a rule. For LNL, the last column "
        "is the pick's test accuracy minus that of the paper's (λ, μ) = (0.01, 0.1), seed by "
        "seed (mean ± std, each seed's difference in brackets).",
    ]
    by_choice: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pick in found:
        by_choice[f"{pick['choice']}, seeds {','.join(map(str, pick['seeds']))}"].append(pick)
    for choice, rules in by_choice.items():
        lines += [
            "",
            f"{choice} ({rules[0]['candidates']} configurations):",
            "",
            "| rule | maximises | bias labels | picks | its value | test/acc | test rank "
            "| ρ with test | gap | Δ test/acc vs (0.01, 0.1) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for pick in rules:
            spread = f" ± {pick['test_acc_std']:.4f}" if len(pick["seeds"]) > 1 else ""
            labels = "yes" if pick["uses_bias_labels"] else "no"
            if pick["rule"] == ORACLE[0]:
                labels = "reads test"
            chosen = setting(pick["_row"])
            if pick["tied"] > 1:
                chosen = f"none: {pick['tied']} tie at the best value"
            lines.append(
                f"| {pick['rule']} | {pick['metric']} | {labels} | {chosen} | "
                f"{pick['value']:.4f} | {pick['test_acc']:.4f}{spread} | "
                f"{pick['test_rank']} of {pick['candidates']} | {agreement(pick)} | "
                f"{pick['largest_gap']:.4f} | {paired(pick)} |"
            )
    return lines + further_seeds_table(found)


def further_seeds_table(found: list[dict[str, Any]]) -> list[str]:
    """Markdown: where the picks (and the paper's setting) were run with more seeds than the
    choice compared them on, each over every seed it has: a grid on one seed, its picks rerun
    on more, is judged here."""
    lines: list[str] = []
    by_group: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for pick in found:
        by_group[id(pick["_group"])].append(pick)
    for rules in by_group.values():
        chosen: dict[int, list[str]] = {}  # row: the rules that pick it
        rows: dict[int, Row] = {}
        for pick in rules:
            if pick["tied"] == 1:
                chosen.setdefault(id(pick["_row"]), []).append(pick["rule"].split(" ")[0])
                rows[id(pick["_row"])] = pick["_row"]
        paper = next((row for row in rules[0]["_group"] if is_paper_setting(row)), None)
        if paper is not None:
            rows.setdefault(id(paper), paper)
            chosen.setdefault(id(paper), [])
        if not any(len(row.seeds) > len(rules[0]["seeds"]) for row in rows.values()):
            continue
        lines += [
            "",
            f"The same configurations over every seed each was run with ({rules[0]['choice']}):"
            " test accuracy mean ± std, and for LNL the difference from the paper's (0.01, 0.1)"
            " over the seeds both have, seed by seed.",
            "",
            "| configuration | picked by | seeds | test/acc | Δ test/acc vs (0.01, 0.1) |",
            "|---|---|---|---|---|",
        ]
        paper_seeds = by_seed(paper, "test/acc") if paper is not None else {}
        for key, row in rows.items():
            seeds = row.seeds
            test = mean_over(row, "test/acc", seeds)
            spread = f" ± {std_over(row, 'test/acc', seeds):.4f}" if len(seeds) > 1 else ""
            if row is paper:
                versus = "the paper's setting"
            elif paper is None:
                versus = "–"
            else:
                shared = [s for s in seeds if repr(s) in paper_seeds]
                versus = format_differences(per_seed_difference(row, paper, shared))
            lines.append(
                f"| {setting(row)} | {', '.join(chosen[key]) or '–'} | "
                f"{','.join(map(str, seeds))} | {test:.4f}{spread} | {versus} |"
            )
    return lines


def agreement(pick: dict[str, Any]) -> str:
    rho = pick["rank_agreement"]
    return "–" if math.isnan(rho) else f"{rho:+.2f}"


def paired(pick: dict[str, Any]) -> str:
    """The pick's per-seed difference from the paper's setting, or why there is none."""
    diffs = pick["vs_paper"]
    if pick["tied"] > 1:
        return "–"
    if diffs is None:
        return "the paper's setting" if is_paper_setting(pick["_row"]) else "–"
    return format_differences(diffs)


def picks_record(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The picks as plain data (``picks.json``), for scripts that run the picks further; a
    value that is not a number is ``null``."""

    def plain(value: Any) -> Any:
        return None if isinstance(value, float) and math.isnan(value) else value

    return [{k: plain(v) for k, v in pick.items() if not k.startswith("_")} for pick in found]
