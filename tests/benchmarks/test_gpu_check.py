"""benchmarks/gpu_check.py on a CPU with tiny settings: every step delivers what it says."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tarfile

import pytest

from ..helpers.cli import REPO

CHECK = REPO / "benchmarks" / "gpu_check.py"
TINY_RUNS = (
    "trainer.limit_train_batches=3 trainer.limit_val_batches=2 trainer.limit_test_batches=2 "
    "data.batch_size=32"
)


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECK), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,  # a hang guard only: the check keeps to its own budget
    )


def test_the_dry_run_gives_each_step_its_time_in_priority_order_within_9_minutes():
    result = check("--dry-run")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()[1:]]
    names = [line[0] for line in lines]
    assert names == ["pair", "speed", "graph_vs_eager", "grid", "total"]
    seconds = {line[0]: float(line[1]) for line in lines}
    assert seconds["total"] <= 540
    assert seconds["pair"] > seconds["grid"] > 0 and seconds["speed"] > seconds["graph_vs_eager"]


def test_a_run_killed_before_its_metrics_reports_its_last_logged_epoch(tmp_path):
    sys.path.insert(0, str(CHECK.parent))
    try:
        from gpu_check import run_result
    finally:
        sys.path.remove(str(CHECK.parent))
    log = tmp_path / "csv" / "version_0"
    log.mkdir(parents=True)
    with (log / "metrics.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, ["epoch", "step", "test/acc", "test/acc_conflicting"])
        writer.writeheader()
        writer.writerow({"epoch": 0, "step": 5, "test/acc": 0.3, "test/acc_conflicting": 0.2})
        writer.writerow({"epoch": 1, "step": 9, "test/acc": 0.4, "test/acc_conflicting": 0.3})
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    result = run_result(tmp_path)
    assert result["finished"] is False and result["epochs"] == 2 and result["last_checkpoint"]
    assert result["test/acc"] == 0.4 and result["test/acc_conflicting"] == 0.3


@pytest.mark.slow  # about 2 minutes on a CPU
def test_the_whole_check_delivers_on_a_cpu_a_pair_cut_short_included(tmp_path, mnist_dir):
    out = tmp_path / "out"
    # max_steps cuts both phases of the pair in their second epoch, as a time limit would
    result = check(
        f"--out={out}",
        f"--data-dir={mnist_dir}",
        "--budget-s=600",
        "--pair-epochs=3",
        "--grid-epochs=1",
        "--color-vars",
        "0.02",
        "0.05",
        "--seeds",
        "0",
        "--packs=1,2",
        "--bench-steps=3",
        "--graph-steps=3",
        f"--run-args={TINY_RUNS} +trainer.max_steps=10",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "bench.txt",
        "graph_vs_eager.txt",
        "grid_report.md",
        "log.txt",
        "pair.json",
        "pair_curves.csv",
        "runs.tar.gz",
        "summary.json",
    ]  # what comes back from a device: at most 8 files
    summary = json.loads((out / "summary.json").read_text())
    pair = summary["pair"]
    # both phases stopped in epoch 1 of 3 (after >= 10 optimizer steps; 2 a batch for the
    # baseline, 3 for LNL), tested and recorded; LNL started from the baseline's checkpoint
    for run in ("baseline", "lnl_warm"):
        assert pair[run]["finished"] and pair[run]["epochs"] < 3 and pair[run]["global_step"] >= 10
    assert (
        "model.init_from=" + str(out / "work" / "pair" / "baseline")
        in (out / "log.txt").read_text()
    )
    for run in ("baseline", "lnl_warm"):
        assert 0 <= pair[run]["test/acc"] <= 1 and pair[run]["test/bias_acc"] is not None
    with (out / "pair_curves.csv").open() as file:
        curves = list(csv.DictReader(file))
    assert {row["run"] for row in curves} == {"baseline", "lnl_warm"}
    speed = summary["speed"]
    assert set(speed["images_per_s_in_all"]) == {"1", "2"} and speed["one_run"] > 0
    assert speed["one_run_target"] == 60_000 and speed["packs_target"] == 250_000
    assert summary["graph_vs_eager"]["result"].startswith("graph_vs_eager: identical")
    assert summary["grid"]["finished_runs"] == 4  # 2 sigma^2 x 1 seed, baseline and LNL
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
    assert not any(name.endswith(".ckpt") for name in names)
    assert any(name.endswith("pair/lnl_warm/metrics.json") for name in names)
