"""Loading and grouping: runs below a folder, one row per configuration (all but the seed)."""

from __future__ import annotations

import pytest

from lnl_lightning.errors import ConfigError, DataError
from lnl_lightning.records.folder import write_error
from lnl_lightning.report.cli import write_report
from lnl_lightning.report.records import collect, summarize


def test_seeds_of_one_configuration_make_one_row_with_their_mean_and_spread(run_at, tmp_path):
    for seed, acc in ((0, 0.5), (1, 0.7)):
        run_at(f"lnl_{seed}", f"seed={seed}", metrics={"test/acc": acc})
    run_at("baseline_0", "model=baseline", "seed=0", metrics={"test/acc": 0.3})
    runs, incomplete = collect(tmp_path / "runs")
    rows = summarize(runs)
    assert incomplete == [] and len(runs) == 3
    by_method = {row.fields["method"]: row for row in rows}
    assert sorted(by_method) == ["baseline", "lnl"]
    lnl = by_method["lnl"]
    assert sorted(lnl.seeds) == [0, 1] and lnl.values["test/acc"] == [0.5, 0.7]
    assert lnl.mean("test/acc") == pytest.approx(0.6)
    assert lnl.std("test/acc") == pytest.approx(0.1414, abs=1e-4)  # n - 1
    assert by_method["baseline"].std("test/acc") == 0.0  # one seed


def test_runs_alike_in_every_column_but_one_setting_are_kept_apart_and_say_why(run_at, tmp_path):
    run_at("a", metrics={"test/acc": 0.5})
    run_at("b", "model.optimizer.lr=0.05", metrics={"test/acc": 0.6})
    rows = summarize(collect(tmp_path / "runs")[0])
    assert len(rows) == 2
    settings = sorted(row.fields["settings"] for row in rows)
    assert settings == ["model.optimizer.lr=0.01", "model.optimizer.lr=0.05"]


def test_a_display_changed_does_not_split_a_configuration(run_at, tmp_path):
    run_at("a", "seed=0", metrics={"test/acc": 0.5})
    run_at("b", "seed=1", "model.display.label=Mine", metrics={"test/acc": 0.6})
    runs = collect(tmp_path / "runs")[0]
    assert len(summarize(runs)) == 1
    assert sorted(run.display["label"] for run in runs) == ["LNL", "Mine"]


def test_jobs_without_results_are_listed_failed_or_still_going(run_at, tmp_path):
    run_at("done", metrics={"test/acc": 0.5})
    going = run_at("going")
    failed = run_at("failed")
    write_error(failed, ValueError("data.color_var must be >= 0"))
    runs, incomplete = collect(tmp_path / "runs")
    assert [run.folder.name for run in runs] == ["done"]
    status = {job["folder"]: (job["status"], job["error"]) for job in incomplete}
    assert status[str(going)] == ("running or stopped", "")
    assert status[str(failed)][0] == "failed" and "color_var" in status[str(failed)][1]


def test_a_rerun_of_the_same_seed_is_a_repeat_not_a_new_seed(run_at, tmp_path):
    import os

    first = run_at("first", "seed=0", metrics={"test/acc": 0.40})
    again = run_at("again", "seed=0", metrics={"test/acc": 0.50})
    run_at("other", "seed=1", metrics={"test/acc": 0.70})
    os.utime(first / "metrics.json", (1, 1))  # finished first
    rows = summarize(collect(tmp_path / "runs")[0])
    assert len(rows) == 1
    row = rows[0]
    assert sorted(row.seeds) == [0, 1] and row.repeats == [first]
    assert sorted(row.values["test/acc"]) == [0.50, 0.70]  # seed 0 by its latest run
    text = write_report(tmp_path / "runs", tmp_path / "out").read_text()
    assert "| 2 | 0,1 |" in text and "1 rerun(s) of a seed" in text and str(first) in text
    assert again.is_dir()


def test_runs_on_one_and_on_two_processes_differ_in_words_a_reader_knows(run_at, tmp_path):
    run_at("one", metrics={"test/acc": 0.5})
    run_at("two", "trainer=ddp_cpu", metrics={"test/acc": 0.6})
    rows = summarize(collect(tmp_path / "runs")[0])
    settings = sorted(row.fields["settings"] for row in rows)
    assert settings == [
        "trainer.devices=1 trainer.strategy=auto",
        "trainer.devices=2 trainer.strategy=DDPStrategy",
    ]


def test_a_sweep_job_refused_before_its_records_began_is_listed_refused_with_its_reason(
    run_at, tmp_path
):
    refused = tmp_path / "runs" / "sweep" / "3"  # its .hydra/ is written only once checks pass
    refused.mkdir(parents=True)
    write_error(refused, ConfigError("test_ckpt=best selects by validation accuracy"))
    trained = run_at("trained")
    (trained / "checkpoints").mkdir()
    write_error(trained, DataError("an image could not be read"))
    _, incomplete = collect(tmp_path / "runs")
    status = {job["folder"]: (job["status"], job["error"]) for job in incomplete}
    assert status[str(refused)] == (
        "refused",
        "ConfigError: test_ckpt=best selects by validation accuracy",
    )
    assert status[str(trained)][0] == "failed"  # it had trained: not a refusal


def test_an_unreadable_summary_is_skipped_not_fatal(run_at, tmp_path):
    run_at("good", metrics={"test/acc": 0.5})
    bad = run_at("bad", metrics={"test/acc": 0.5})
    (bad / "metrics.json").write_text("{not json")
    runs, _ = collect(tmp_path / "runs")
    assert [run.folder.name for run in runs] == ["good"]
