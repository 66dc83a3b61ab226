"""Several processes (CPU, gloo): one run folder, identical weights, same result as one process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from lnl_lightning.config import CONFIG_MODULE

from ..helpers.cli import batches_into_epoch, run_cli, run_ok

ROOT = Path(__file__).resolve().parents[2]


def test_two_process_cli_run_writes_one_folder_and_keeps_ranks_identical(tmp_path, mnist_dir):
    run_dir, weights = tmp_path / "run", tmp_path / "weights"
    run_ok(
        "experiment=colored_mnist",
        "trainer=ddp_cpu",
        "debug=fast",
        "trainer.max_epochs=2",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=16",
        f"hydra.run.dir={run_dir}",
        "+callbacks.save_weights._target_=tests.helpers.ddp.SaveWeightsPerRank",
        f"+callbacks.save_weights.out_dir={weights}",
        cwd=tmp_path,
        PYTHONPATH=str(ROOT),
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["run", "weights"]
    assert len(list(tmp_path.rglob("metrics.json"))) == 1
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["epochs"] == 2 and "test/acc" in summary["metrics"]
    rank0 = torch.load(weights / "weights_rank0.pt")
    rank1 = torch.load(weights / "weights_rank1.pt")
    for name in ("feature_extractor", "label_head", "bias_head"):
        keys = [k for k in rank0 if k.startswith(name + ".")]
        assert keys
        for key in keys:
            assert torch.equal(rank0[key], rank1[key]), key


@pytest.mark.parametrize(
    "step",
    # slow: in CI, not make test
    ["official", pytest.param("fused", marks=pytest.mark.slow), "group_dro", "lff"],
)
def test_one_and_two_processes_give_the_same_weights(step, tmp_path):
    """Same global batches, same seed: the gradient all-reduce makes 2 processes match 1.

    For GroupDRO and LfF the buffers are compared too: the group weights q and the
    per-sample loss tables, which each process must update from the whole global batch.

    Equality holds up to float summation order (the all-reduce adds in another order than
    one large batch), hence a tight tolerance rather than bit equality.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for devices in (1, 2):
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests" / "helpers" / "ddp_equivalence.py"),
                "--devices",
                str(devices),
                "--out",
                str(tmp_path / f"d{devices}"),
                "--step",
                step,
            ],
            check=True,
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=3600,  # a hang guard only
        )
    from ..helpers.ddp_equivalence import build_module

    start = build_module(step)  # the weights both runs started from (seeded)
    single = torch.load(tmp_path / "d1" / "weights_rank0.pt")
    for rank in (0, 1):
        multi = torch.load(tmp_path / "d2" / f"weights_rank{rank}.pt")
        assert single.keys() == multi.keys()
        for key in single:
            assert torch.allclose(single[key], multi[key], rtol=1e-5, atol=1e-6), key
    # training moved every parameter (f, g, h, LfF's twin) by 100 x the tolerance above or
    # more (3 steps at lr 0.05; the twin's GCE gradient is the smallest), so the equality is
    # not that of untouched weights
    for key, initial in start.named_parameters():
        moved = (single[key] - initial.detach()).abs().max().item()
        assert moved > 1e-4, (key, moved)


@pytest.mark.parametrize("trainer", ["ddp", "ddp_cpu", "ddp_spawn"])
def test_ddp_trainer_configs_compose(trainer, tmp_path):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer={trainer}", f"paths.output_dir={tmp_path}"])
    assert cfg.trainer.strategy._target_ == "pytorch_lightning.strategies.DDPStrategy"
    assert cfg.trainer.sync_batchnorm == (trainer != "ddp_cpu")


def test_slurm_launcher_allocation_follows_the_trainer(tmp_path):
    overrides = [
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        f"paths.output_dir={tmp_path}",
    ]
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)
    assert launcher.additional_parameters.signal.startswith("USR1@")  # the requeue signal


@pytest.mark.slow  # make test-slow (run by CI)
def test_submitit_local_runs_a_two_job_sweep(tmp_path, mnist_dir):
    run_ok(
        "-m",
        "hydra/launcher=submitit_local",
        "experiment=colored_mnist",
        "debug=fast",
        "model.lambda_=0,0.1",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=32",
        f"paths.log_dir={tmp_path}",
        "print_config=false",
        cwd=tmp_path,
    )
    results = sorted(tmp_path.rglob("metrics.json"))
    assert len(results) == 2
    assert {json.loads(p.read_text())["method"] for p in results} == {"lnl"}
    assert list(tmp_path.rglob(".submitit"))  # the jobs went through submitit


def test_ddp_spawn_with_the_csv_logger_is_refused_at_start(tmp_path, mnist_dir):
    from ..helpers.cli import run_cli

    result = run_cli(
        "trainer=ddp_spawn",
        "logger=csv",
        f"data.data_dir={mnist_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "use logger=tensorboard or logger=wandb" in result.stderr


@pytest.mark.slow
def test_local_multirun_with_ddp_spawn(tmp_path, mnist_dir):
    run_ok(
        "-m",
        "experiment=colored_mnist",
        "debug=fast",
        "trainer=ddp_spawn",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.sync_batchnorm=false",
        "+trainer.strategy.process_group_backend=gloo",
        "logger=tensorboard",
        "model.lambda_=0,0.01",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=16",
        f"paths.log_dir={tmp_path}",
        "print_config=false",
        cwd=tmp_path,
    )
    assert len(list(tmp_path.rglob("metrics.json"))) == 2
    assert len(list(tmp_path.rglob("group_acc_test.png"))) == 2


@pytest.mark.slow  # three two-process runs (make test-slow, run by CI)
def test_sigterm_under_ddp_saves_every_process_sums_and_resumes_as_if_never_stopped(
    tmp_path, mnist_dir
):
    """Every process signalled in the middle of epoch 1 (as a scheduler does; rank 0 also
    forwards it): the run stops after one batch on all ranks, saves, exits 143, and resumed,
    logs the epoch's training means an unstopped run logs (the checkpoint holds both
    processes' sums, not rank 0's)."""
    common = [
        "experiment=colored_mnist",
        "trainer=ddp_cpu",
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.enable_progress_bar=false",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=16",
    ]
    stopped_dir, straight_dir = tmp_path / "stopped", tmp_path / "straight"
    kill = [
        "+callbacks.kill._target_=tests.helpers.signal_callback.SignalAtBatch",
        "+callbacks.kill.epoch=1",
        "+callbacks.kill.batch=5",
    ]
    stopped = run_cli(*common, *kill, f"hydra.run.dir={stopped_dir}", cwd=tmp_path)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    saved = torch.load(stopped_dir / "checkpoints" / "last.ckpt", weights_only=False)
    done = batches_into_epoch(saved)  # the signalled batch, or the one after it
    assert done in (6, 7)
    images = saved["state_dict"]["train_sums"][0, 3].item()
    assert images == 2 * done * 16  # the batches of 16 of both processes, not rank 0's alone
    run_ok(*common, "ckpt_path=last", f"hydra.run.dir={stopped_dir}", cwd=tmp_path)
    run_ok(*common, f"hydra.run.dir={straight_dir}", cwd=tmp_path)

    def epoch_1(folder: Path) -> dict[str, str]:
        rows = [
            row
            for log in sorted(folder.glob("csv/version_*/metrics.csv"))
            for row in csv.DictReader(log.open())
            if row.get("train/acc") and row["epoch"] == "1"
        ]
        assert len(rows) == 1
        return {k: v for k, v in rows[0].items() if k.startswith("train/") and "per_s" not in k}

    assert epoch_1(stopped_dir) == epoch_1(straight_dir)
