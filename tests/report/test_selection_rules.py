"""Model selection in the report: each row's rule printed, rules never averaged together, and
which configuration each rule picks among a method's settings."""

from __future__ import annotations

import json
import math

import pytest

from lnl_lightning.report.cli import write_report
from lnl_lightning.report.picks import picks
from lnl_lightning.report.records import collect, summarize

BOTH = "data.val_colors=both"


def test_runs_of_different_rules_are_never_one_row_and_each_rule_is_printed(run_at, tmp_path):
    run_at("aligned", BOTH, "seed=0", metrics={"test/acc": 0.5})
    run_at("aligned_1", BOTH, "seed=1", metrics={"test/acc": 0.7})
    run_at("unbiased", BOTH, "selection=unbiased", "seed=0", metrics={"test/acc": 0.6})
    rows = summarize(collect(tmp_path / "runs")[0])
    assert sorted(len(row.seeds) for row in rows) == [1, 2]  # the seed of another rule: apart
    assert {row.rule["name"] for row in rows} == {"aligned", "unbiased"}
    text = write_report(tmp_path / "runs", tmp_path / "out").read_text()
    assert "Selection rules (rows of different rules are kept apart):" in text
    assert "- aligned (tests the last epoch's weights; a sweep maximises val/acc; no bias" in text
    assert "- unbiased (tests the last epoch's weights; a sweep maximises val_random/acc; uses" in (
        text
    )
    assert "selection=weights last, sweep val_random/acc" in text  # the settings column


def test_one_rule_is_said_once_above_the_table(run_at, tmp_path):
    run_at("a", metrics={"test/acc": 0.5})
    text = write_report(tmp_path / "runs", tmp_path / "out").read_text()
    lines = text.splitlines()
    rule = "Selection rule of every run: aligned (tests the last epoch's weights; a sweep "
    assert any(line.startswith(rule) for line in lines)
    assert lines.index(next(line for line in lines if line.startswith(rule))) < lines.index(
        next(line for line in lines if line.startswith("| task_name"))
    )


# (lambda, mu): val/acc (coloured like training), val_random/acc, its worst group, test/acc
GRID = {
    (0.001, 0.1): (0.99, 0.30, 0.05, 0.31),  # the shortcut: best aligned, worst elsewhere
    (0.01, 0.1): (0.97, 0.45, 0.10, 0.44),
    (0.1, 0.1): (0.90, 0.50, 0.08, 0.52),
}


def test_each_rule_picks_its_best_validation_value_and_says_what_test_gives(run_at, tmp_path):
    for (lam, mu), (aligned, unbiased, worst, test) in GRID.items():
        metrics = {
            "val/acc": aligned,
            "val_random/acc": unbiased,
            "val_random/acc_worst_group": worst,
            "test/acc": test,
        }
        run_at(f"l{lam}", BOTH, f"model.lambda_={lam}", f"model.mu={mu}", metrics=metrics)
    run_at("base", BOTH, "model=baseline", metrics={"val/acc": 1.0, "test/acc": 0.2})
    chosen = {p["rule"].split(" ")[0]: p for p in picks(summarize(collect(tmp_path / "runs")[0]))}
    assert {r: (p["lambda"], p["test_rank"]) for r, p in chosen.items()} == {
        "aligned": (0.001, 3),
        "unbiased": (0.1, 1),
        "worst_group": (0.01, 2),
        "test-set": (0.1, 1),
    }  # the baseline is no candidate: another method
    assert chosen["unbiased"]["uses_bias_labels"] and not chosen["aligned"]["uses_bias_labels"]
    out = tmp_path / "out"
    text = write_report(tmp_path / "runs", out).read_text()
    assert "| aligned | val/acc | no | lambda=0.001 mu=0.1 | 0.9900 | 0.3100 | 3 of 3 |" in text
    assert "| test-set oracle (a reference, never a rule) | test/acc | reads test |" in text
    written = json.loads((out / "picks.json").read_text())
    assert [(p["rule"], p["lambda"], p["mu"]) for p in written][:3] == [
        ("aligned", 0.001, 0.1),
        ("unbiased", 0.1, 0.1),
        ("worst_group", 0.01, 0.1),
    ]


def test_candidates_run_with_other_seeds_are_not_compared(run_at, tmp_path):
    run_at("a", "model.lambda_=0.1", "seed=0", metrics={"val/acc": 0.9, "test/acc": 0.5})
    run_at("b", "model.lambda_=0.01", "seed=1", metrics={"val/acc": 0.8, "test/acc": 0.4})
    assert picks(summarize(collect(tmp_path / "runs")[0])) == []
    write_report(tmp_path / "runs", tmp_path / "out")
    assert not (tmp_path / "out" / "picks.json").exists()


def test_every_method_is_tuned_the_same_way_over_its_own_settings(run_at, tmp_path):
    for weight, unbiased in ((0.1, 0.40), (1.0, 0.55), (10.0, 0.35)):
        metrics = {"val/acc": 0.9, "val_random/acc": unbiased, "test/acc": unbiased}
        overrides = ("model=blind_eye", BOTH, f"model.confusion_weight={weight}")
        run_at(f"blind_eye_{weight}", *overrides, metrics=metrics)
    chosen = {p["rule"]: p for p in picks(summarize(collect(tmp_path / "runs")[0]))}
    assert chosen["unbiased"]["settings"] == "confusion_weight=1.0"
    assert chosen["unbiased"]["method"] == "blind_eye"


def test_the_published_comparison_keeps_rules_apart_too(run_at, tmp_path):
    run_at("last", BOTH, metrics={"test/acc": 0.5, "val/acc": 0.9, "val_random/acc": 0.4})
    metrics = {"test/acc": 0.6, "val/acc": 0.9, "val_random/acc": 0.45}
    run_at("best", BOTH, "selection=unbiased", "test_ckpt=best", metrics=metrics)
    text = write_report(tmp_path / "runs", tmp_path / "out").read_text()
    comparison = text.split("against the published numbers")[1].split("## ")[0]
    assert "aligned rule (weights last, sweep val/acc) | 0.5000" in comparison
    assert "unbiased rule (weights best val_random/acc, sweep val_random/acc) | 0.6000" in (
        comparison
    )


def test_a_rule_whose_best_value_is_shared_picks_nothing(run_at, tmp_path):
    for lam in (0.001, 0.01, 0.1):
        metrics = {"val_random/acc_worst_group": 0.0, "val_random/acc": lam, "test/acc": lam}
        run_at(f"l{lam}", BOTH, f"model.lambda_={lam}", metrics=metrics)
    chosen = {p["rule"]: p for p in picks(summarize(collect(tmp_path / "runs")[0]))}
    assert chosen["worst_group"]["tied"] == 3 and chosen["unbiased"]["tied"] == 1
    text = write_report(tmp_path / "runs", tmp_path / "out").read_text()
    assert (
        "| worst_group | val_random/acc_worst_group | yes | none: 3 tie at the best value |" in text
    )


def test_candidates_are_compared_on_the_seeds_they_share(run_at, tmp_path):
    # lambda 0.1 was run with seeds 0, 1, 2 (its seed 0 the worse); lambda 0.01 with seed 0
    for seed, unbiased in ((0, 0.40), (1, 0.60), (2, 0.60)):
        metrics = {"val_random/acc": unbiased, "test/acc": unbiased}
        run_at(f"a{seed}", BOTH, "model.lambda_=0.1", f"seed={seed}", metrics=metrics)
    run_at(
        "b0",
        BOTH,
        "model.lambda_=0.01",
        "seed=0",
        metrics={"val_random/acc": 0.45, "test/acc": 0.45},
    )
    chosen = {p["rule"]: p for p in picks(summarize(collect(tmp_path / "runs")[0]))}
    assert chosen["unbiased"]["lambda"] == 0.01  # on seed 0; by all its seeds 0.1 would win
    assert chosen["unbiased"]["seeds"] == [0] and chosen["unbiased"]["value"] == 0.45


def test_a_pick_is_compared_seed_by_seed_with_the_papers_setting(run_at, tmp_path):
    for seed, (paper, other) in enumerate(((0.40, 0.50), (0.42, 0.47), (0.38, 0.50))):
        for lam, acc in ((0.01, paper), (0.1, other)):
            metrics = {"val_random/acc": acc, "test/acc": acc}
            run_at(f"l{lam}_{seed}", BOTH, f"model.lambda_={lam}", f"seed={seed}", metrics=metrics)
    chosen = {p["rule"]: p for p in picks(summarize(collect(tmp_path / "runs")[0]))}
    assert chosen["unbiased"]["lambda"] == 0.1
    assert chosen["unbiased"]["vs_paper"] == pytest.approx([0.10, 0.05, 0.12])
    text = write_report(tmp_path / "runs", tmp_path / "out").read_text()
    assert "| 1 of 2 | +1.00 | 0.0000 | +0.0900 ± 0.0361 (+0.1000, +0.0500, +0.1200) |" in text


def test_picks_rerun_with_more_seeds_are_shown_over_all_of_them(run_at, tmp_path):
    # the grid on seed 0; the unbiased rule's pick (lambda 0.1) and the paper's setting
    # (lambda 0.01) rerun with seeds 1 and 2
    accs = {0.001: (0.30,), 0.01: (0.40, 0.42, 0.38), 0.1: (0.50, 0.47, 0.50)}
    for lam, by_seed in accs.items():
        for seed, acc in enumerate(by_seed):
            metrics = {"val/acc": 1 - acc, "val_random/acc": acc, "test/acc": acc}
            run_at(f"l{lam}_{seed}", BOTH, f"model.lambda_={lam}", f"seed={seed}", metrics=metrics)
    text = write_report(tmp_path / "runs", tmp_path / "out").read_text()
    table = text.split("over every seed each was run with")[1].split("## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| lambda")]
    assert rows == [
        "| lambda=0.001 mu=0.1 | aligned | 0 | 0.3000 | -0.1000 (-0.1000) |",
        "| lambda=0.1 mu=0.1 | unbiased, test-set | 0,1,2 | 0.4900 ± 0.0173 | "
        "+0.0900 ± 0.0361 (+0.1000, +0.0500, +0.1200) |",
        "| lambda=0.01 mu=0.1 | – | 0,1,2 | 0.4000 ± 0.0200 | the paper's setting |",
    ]


def test_no_further_table_when_the_picks_have_no_other_seeds(run_at, tmp_path):
    for lam, acc in ((0.01, 0.4), (0.1, 0.5)):
        metrics = {"val_random/acc": acc, "test/acc": acc}
        run_at(f"l{lam}", BOTH, f"model.lambda_={lam}", metrics=metrics)
    text = write_report(tmp_path / "runs", tmp_path / "out").read_text()
    assert "Which configuration each selection rule picks" in text
    assert "over every seed each was run with" not in text


def test_each_rule_says_how_well_its_metric_orders_the_candidates_as_test_does(run_at, tmp_path):
    # val_random orders the three as test does; val/acc in reverse; the worst group is constant
    for lam, (aligned, unbiased, test) in {
        0.001: (0.99, 0.30, 0.31),
        0.01: (0.97, 0.45, 0.44),
        0.1: (0.90, 0.50, 0.52),
    }.items():
        metrics = {
            "val/acc": aligned,
            "val_random/acc": unbiased,
            "val_random/acc_worst_group": 0.0,
            "test/acc": test,
        }
        run_at(f"l{lam}", BOTH, f"model.lambda_={lam}", metrics=metrics)
    chosen = {p["rule"].split(" ")[0]: p for p in picks(summarize(collect(tmp_path / "runs")[0]))}
    assert chosen["unbiased"]["rank_agreement"] == pytest.approx(1.0)
    assert chosen["aligned"]["rank_agreement"] == pytest.approx(-1.0)
    assert chosen["unbiased"]["largest_gap"] == pytest.approx(0.02)
    assert math.isnan(chosen["worst_group"]["rank_agreement"])
    out = tmp_path / "out"
    text = write_report(tmp_path / "runs", out).read_text()
    assert "| 1 of 3 | +1.00 | 0.0200 |" in text and "| 3 of 3 | -1.00 | 0.6800 |" in text
    written = {p["rule"]: p for p in json.loads((out / "picks.json").read_text())}
    assert written["worst_group"]["rank_agreement"] is None  # JSON has no NaN
