"""The report's markdown (tables against the published numbers) and its learning curves."""

from __future__ import annotations

from pathlib import Path

import pytest

from lnl_lightning.report.curves import curve_series, epoch_curve
from lnl_lightning.report.methods import Methods
from lnl_lightning.report.records import collect, summarize
from lnl_lightning.report.tables import curve_table, markdown, published_comparison


def lines_of(table: list[str], start: str) -> list[str]:
    return [line for line in table if line.startswith(start)]


def test_the_published_comparison_sets_runs_beside_the_papers_numbers(run_at, tmp_path):
    for seed, acc in ((0, 0.8), (1, 0.9)):
        run_at(f"lnl_{seed}", f"seed={seed}", "data.color_var=0.02", metrics={"test/acc": acc})
    run_at("weak", "model.lambda_=0.1", "data.color_var=0.02", metrics={"test/acc": 0.1})
    rows = summarize(collect(tmp_path / "runs")[0])
    table = published_comparison(rows, Methods())
    assert "| σ² | 0.02 | 0.025 | 0.03 | 0.035 | 0.04 | 0.045 | 0.05 |" in table
    ours = lines_of(table, "| LNL (official step), 3 epochs |")
    assert ours == [
        "| LNL (official step), 3 epochs | 0.8500 ± 0.0707 (2) | – | – | – | – | – | – |"
    ]
    assert lines_of(table, "| LNL (published) | 0.8185 |")
    assert lines_of(table, "| BlindEye (published) | 0.6741 |")  # labels with no run too
    assert not any("0.1000" in line for line in table)  # not the official weights: left out


def test_a_method_is_named_in_every_table_by_its_display(run_at, tmp_path):
    run_at("b", "model=baseline", "seed=0", metrics={"test/acc": 0.4, "test/bias_acc": 0.9})
    run_at(
        "m",
        "model=blind_eye",
        "seed=0",
        "model.display.label=Confused",
        metrics={"test/acc": 0.6, "test/bias_acc": 0.5},
    )
    runs = collect(tmp_path / "runs")[0]
    methods = Methods((run.fields["method"], run.display) for run in runs)
    text = markdown(summarize(runs), [], {"x.png": None}, methods)
    assert "| Confused (official step), 3 epochs |" not in text  # BlindEye has no step
    assert "| Confused, 3 epochs |" in text  # the comparison by sigma^2
    assert "| Confused |" in text  # the paired differences from the baseline
    assert "BlindEye" not in text.replace("BlindEye (published)", "")
    assert "![x.png](x.png)" in text


def test_an_epoch_curve_takes_the_latest_version_and_leaves_out_the_final_test(run_at):
    folder = run_at("r", metrics={"test/acc": 0.7}, epochs=2, curve=[{"test/acc": 0.1}] * 3)
    resumed = folder / "csv" / "version_1" / "metrics.csv"
    resumed.parent.mkdir()
    resumed.write_text("epoch,test/acc,test/bias_acc\n1,0.6,0.2\n")
    assert epoch_curve(folder) == {0: {"test/acc": 0.1}, 1: {"test/acc": 0.6, "test/bias_acc": 0.2}}


def test_a_warm_started_run_continues_its_sources_epoch_count(run_at, tmp_path):
    source = run_at(
        "baseline",
        "model=baseline",
        metrics={"test/acc": 0.3},
        epochs=2,
        curve=[{"test/acc": 0.2}] * 2,
    )
    run_at(
        "warm",
        f"model.init_from={source / 'checkpoints' / 'last.ckpt'}",
        metrics={"test/acc": 0.8},
        epochs=1,
        curve=[{"test/acc": 0.8}],
    )
    series = curve_series(collect(tmp_path / "runs")[0], Methods().label)
    assert list(series["baseline, σ²=0.02"]) == [1, 2]
    assert series["LNL warm-started, σ²=0.02"] == {3: {"test/acc": pytest.approx(0.8)}}
    table = curve_table(series)
    assert "| epochs | LNL warm-started, σ²=0.02 | baseline, σ²=0.02 |" in table
    assert "| 3 | 0.8000 | – |" in table and "| 1 | – | 0.2000 |" in table


def test_a_warm_started_run_finds_its_source_after_their_tree_was_renamed(run_at, tmp_path):
    """Trained in /trained/s020_seed1/{baseline,lnl_warm}, committed as runs/runs_s020_seed1/..."""
    trained = Path("/trained/s020_seed1")
    run_at(
        "runs_s020_seed1/baseline",
        "model=baseline",
        f"paths.output_dir={trained / 'baseline'}",
        metrics={"test/acc": 0.3},
        epochs=2,
        curve=[{"test/acc": 0.2}] * 2,
    )
    run_at(
        "runs_s020_seed1/lnl_warm",
        f"paths.output_dir={trained / 'lnl_warm'}",
        f"model.init_from={trained / 'baseline' / 'checkpoints' / 'last.ckpt'}",
        metrics={"test/acc": 0.8},
        epochs=1,
        curve=[{"test/acc": 0.8}],
    )
    runs = collect(tmp_path / "runs")[0]
    warm = next(run for run in runs if run.fields["start"] == "warm")
    assert warm.warm_from == tmp_path / "runs" / "runs_s020_seed1" / "baseline"
    series = curve_series(runs, Methods().label)
    assert list(series["LNL warm-started, σ²=0.02"]) == [3]


def test_runs_of_different_lengths_are_different_curves_not_one_average(run_at, tmp_path):
    run_at("short", "seed=0", metrics={"test/acc": 0.3}, epochs=2, curve=[{"test/acc": 0.2}] * 2)
    run_at("long", "seed=1", metrics={"test/acc": 0.5}, epochs=4, curve=[{"test/acc": 0.4}] * 4)
    series = curve_series(collect(tmp_path / "runs")[0], Methods().label)
    assert series["LNL, 2 epochs, σ²=0.02"][1] == {"test/acc": pytest.approx(0.2)}
    assert series["LNL, 4 epochs, σ²=0.02"][1] == {"test/acc": pytest.approx(0.4)}
