"""Stopped runs (SIGTERM, SLURM's time-limit signal) resume exactly where they stopped."""

from __future__ import annotations

import csv
import json
import os
import signal

import pytest
import torch

from ..helpers.cli import batches_into_epoch, run_cli, run_ok
from ..helpers.signal_callback import record_batches, recorded


def kill_at(batch: int, signum: str = "SIGTERM", optimizer_step: int | None = None) -> list[str]:
    """Overrides that make a run signal itself in training batch ``batch`` of epoch 1: after
    it, or before its ``optimizer_step``-th optimizer step."""
    target = "+callbacks.kill._target_=tests.helpers.signal_callback.SignalAtBatch"
    when = [] if optimizer_step is None else [f"+callbacks.kill.optimizer_step={optimizer_step}"]
    return [
        target,
        "+callbacks.kill.epoch=1",
        f"+callbacks.kill.batch={batch}",
        f"+callbacks.kill.signum={signum}",
        *when,
    ]


BATCHES_PER_EPOCH = 68  # the generated MNIST: 540 training images in batches of 8


@pytest.mark.parametrize(
    ("step", "stop"),
    [
        ("official", "SIGTERM"),
        # Ctrl-C lands inside the two-pass step, between its two optimizer steps
        ("official", "SIGINT"),
        pytest.param("fused", "SIGTERM", marks=pytest.mark.slow),  # slow: in CI, not make test
    ],
)
def test_killed_mid_epoch_and_resumed_ends_exactly_as_an_uninterrupted_run(
    step, stop, tmp_path, mnist_dir
):
    run_dir = tmp_path / "run"
    overrides = [
        "experiment=colored_mnist",
        f"model.step={step}",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=8",
        "trainer.max_epochs=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.enable_progress_bar=false",
        "callbacks.rich_progress_bar=null",
    ]
    # in the middle of epoch 1: SIGTERM after a batch, as a scheduler's preemption would send,
    # or Ctrl-C between the two optimizer steps of a batch
    when = kill_at(29) if stop == "SIGTERM" else kill_at(29, "SIGINT", optimizer_step=2)
    killed = run_cli(*overrides, *when, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert killed.returncode == 128 + getattr(signal, stop)
    assert not (run_dir / "metrics.json").exists()
    assert f"ckpt_path=last hydra.run.dir={run_dir}" in killed.stderr  # how to go on
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1 and batches_into_epoch(saved) == 30

    record = tmp_path / "resumed_batches.txt"
    run_ok(
        *overrides,
        *record_batches(record),
        f"hydra.run.dir={run_dir}",
        "ckpt_path=last",
        cwd=tmp_path,
    )
    # the resumed process trained exactly the batches the killed one had not: epoch 1 from
    # batch 30 on, then epoch 2 (a run that ignored its checkpoint would start at (0, 0))
    expected = [(1, i) for i in range(30, BATCHES_PER_EPOCH)]
    expected += [(2, i) for i in range(BATCHES_PER_EPOCH)]
    assert recorded(record) == expected
    # and logged no epoch it had already finished
    with (run_dir / "csv" / "version_1" / "metrics.csv").open() as file:
        epochs = {int(row["epoch"]) for row in csv.DictReader(file) if row["epoch"]}
    assert min(epochs) == 1
    straight_dir = tmp_path / "straight"
    run_ok(*overrides, f"hydra.run.dir={straight_dir}", cwd=tmp_path)

    resumed = json.loads((run_dir / "metrics.json").read_text())
    straight = json.loads((straight_dir / "metrics.json").read_text())
    assert resumed["epochs"] == 3 and resumed["global_step"] == straight["global_step"]
    assert resumed["metrics"] == straight["metrics"]  # bit for bit
    weights = [
        torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for d in (run_dir, straight_dir)
    ]
    assert weights[0]["state_dict"].keys() == weights[1]["state_dict"].keys()
    for name, tensor in weights[0]["state_dict"].items():
        assert torch.equal(tensor, weights[1]["state_dict"][name]), name
    assert (
        len(list((run_dir / "csv").glob("version_*/metrics.csv"))) == 2
    )  # the first logs are kept


def test_slurm_time_limit_signal_checkpoints_requeues_and_the_requeued_job_resumes(
    tmp_path, mnist_dir
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"  # records the requeue instead of talking to SLURM
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    slurm = {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "lnl",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    run_dir = tmp_path / "run"
    args = [
        "experiment=colored_mnist",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=8",
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.enable_progress_bar=false",
        "callbacks.rich_progress_bar=null",
        f"hydra.run.dir={run_dir}",
    ]
    # SIGUSR1 in the middle of epoch 1: SLURM's warning before the time limit
    warned = run_cli(*args, *kill_at(9, "SIGUSR1"), cwd=tmp_path, **slurm)
    assert warned.returncode != 0 and not (run_dir / "metrics.json").exists()
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    hpc = torch.load(run_dir / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
    assert hpc["epoch"] == 1 and batches_into_epoch(hpc) == 10

    # the requeued job: same command, no ckpt_path; Lightning finds hpc_ckpt_1.ckpt and
    # trains only what the first job had not (epoch 1 from batch 10 on)
    record = tmp_path / "requeued_batches.txt"
    run_ok(*args, *record_batches(record), cwd=tmp_path, SLURM_RESTART_COUNT="1", **slurm)
    assert recorded(record) == [(1, i) for i in range(10, BATCHES_PER_EPOCH)]
    summary = json.loads((run_dir / "metrics.json").read_text())
    steps_per_batch = hpc["global_step"] // (BATCHES_PER_EPOCH + batches_into_epoch(hpc))
    assert summary["epochs"] == 2
    assert (
        summary["global_step"] == steps_per_batch * 2 * BATCHES_PER_EPOCH
    )  # none lost, none twice
