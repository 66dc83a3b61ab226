"""What a newcomer's first hour of mistakes must not cost: records, checkpoints, other runs."""

from __future__ import annotations

import csv
import fcntl
import json
import signal

import pytest
import torch

from ..helpers.cli import batches_into_epoch, run_cli, run_ok

FAST = [
    "experiment=colored_mnist",
    "data.batch_size=8",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def test_ctrl_c_through_a_dead_pipe_still_saves_the_checkpoint(tmp_path, mnist_dir):
    """``... 2>&1 | tee log`` and Ctrl-C: tee dies too, so stdout and stderr are broken pipes
    when the run finishes its batch; the checkpoint is saved all the same, and the run ends
    as interrupted (130)."""
    run_dir = tmp_path / "run"
    stopped = run_cli(
        *FAST,
        f"data.data_dir={mnist_dir}",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=true",  # the progress bar writes after every batch
        "+callbacks.pipes._target_=tests.helpers.signal_callback.BreakPipesAtBatch",
        "+callbacks.pipes.epoch=0",
        "+callbacks.pipes.batch=4",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 0 and batches_into_epoch(saved) == 5  # the interrupted batch too
    assert not (run_dir / "metrics.json").exists()


def files_of(folder):
    """Every file below ``folder`` with its bytes and modification time (the lock file's bytes
    only: taking the lock, which is what refuses a second run, touches it)."""
    return {
        p.relative_to(folder): (p.read_bytes(), p.name == ".lock" or p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_refused_run_writes_nothing_into_a_folder_that_holds_another_run(tmp_path, mnist_dir):
    folder = tmp_path / "blind_eye_run"
    data = [f"data.data_dir={mnist_dir}", "debug=fast", f"hydra.run.dir={folder}"]
    run_ok("experiment=colored_mnist_blind_eye", *data, cwd=tmp_path)
    before = files_of(folder)
    assert (folder / ".hydra" / "overrides.yaml").is_file() and (folder / "__main__.log").is_file()

    other = run_cli("experiment=colored_mnist_baseline", *data, cwd=tmp_path)
    assert other.returncode == 2 and "holds a run of another config" in other.stderr
    assert files_of(folder) == before  # its .hydra/, log and error record as they were

    # the same config while the folder's lock is held (a run still going there)
    with open(folder / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = run_cli("experiment=colored_mnist_blind_eye", *data, cwd=tmp_path)
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert locked.returncode == 2 and "in use by another run" in locked.stderr
    assert files_of(folder) == before


def test_a_refused_run_leaves_no_run_folder(tmp_path, mnist_dir):
    refused = ["data.val_fraction=0", "test_ckpt=best", f"data.data_dir={mnist_dir}", "debug=fast"]
    given = tmp_path / "new_run"
    result = run_cli(*refused, f"hydra.run.dir={given}", cwd=tmp_path)
    assert result.returncode == 2 and "test_ckpt=best" in result.stderr
    assert not given.exists()
    # nor in the default place (LNL_LOG_DIR), where the report would list it
    logs = tmp_path / "logs"
    result = run_cli(*refused, cwd=tmp_path, LNL_LOG_DIR=str(logs))
    assert result.returncode == 2
    assert not [p for p in logs.rglob("*") if p.is_dir() and p.parent.name == "runs"]


def test_a_full_disk_while_checkpointing_names_it_and_keeps_what_was_written(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    result = run_cli(
        *FAST,
        f"data.data_dir={mnist_dir}",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=4",
        "trainer.enable_progress_bar=false",
        "+callbacks.full._target_=tests.helpers.signal_callback.CheckpointDiskFullFromEpoch",
        "+callbacks.full.epoch=1",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: no space left on the device" in result.stderr
    assert "Traceback" not in result.stderr
    assert f"ckpt_path=last hydra.run.dir={run_dir}" in result.stderr  # how to go on
    assert "continue with: python -m lnl_lightning experiment=colored_mnist " in result.stderr
    assert "<same overrides>" not in result.stderr
    error = json.loads((run_dir / "error.json").read_text())["error"]
    assert error.startswith("DiskFull: no space left")  # the report lists it failed, and why
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 0  # epoch 0's checkpoint, whole
    assert (run_dir / ".lock").read_text() == ""  # released
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # no half-written file left


@pytest.mark.slow  # three runs (make test-slow, run by CI)
def test_a_finished_run_is_not_resumed_and_a_resumed_one_counts_all_its_time(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    command = ["debug=fast", f"data.data_dir={mnist_dir}", f"hydra.run.dir={run_dir}"]
    run_ok(*command, cwd=tmp_path)
    first_text = (run_dir / "metrics.json").read_text()
    first = json.loads(first_text)

    again = run_cli(*command, "ckpt_path=last", cwd=tmp_path)
    assert again.returncode == 2 and "holds a finished run (1 epochs" in again.stderr
    assert "trainer.max_epochs > 1" in again.stderr and "lnl_lightning.eval" in again.stderr
    assert (run_dir / "metrics.json").read_text() == first_text  # not tested again, not rewritten

    longer = run_ok(*command, "ckpt_path=last", "trainer.max_epochs=2", cwd=tmp_path)
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["epochs"] == 2 and resumed["train_images_per_s"] is not None
    assert resumed["wall_time_s"] > first["wall_time_s"]  # both stretches, not the last alone
    # step: training batches, as the loggers count them; global_step: optimizer steps
    assert (first["step"], resumed["step"]) == (3, 6)
    assert resumed["global_step"] % resumed["step"] == 0 and resumed["global_step"] > 6
    with (run_dir / "csv" / "version_1" / "metrics.csv").open() as file:
        logged = [int(row["step"]) for row in csv.DictReader(file) if row["step"]]
    assert max(logged) == resumed["step"]  # the final metrics' step in the log
    assert longer.returncode == 0


@pytest.mark.slow  # a run and two evaluations (make test-slow, run by CI)
def test_eval_reads_the_runs_own_config_and_the_command_line_still_applies(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    data = f"data.data_dir={mnist_dir}"
    run_ok(
        "experiment=colored_mnist_baseline",
        "debug=fast",
        data,
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    trained = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    ckpt = f"ckpt_path={run_dir}/checkpoints/last.ckpt"

    # no experiment restated: the run's config_resolved.yaml says what it was
    same = tmp_path / "eval_same"
    run_cli(
        ckpt,
        "trainer.limit_test_batches=2",
        f"hydra.run.dir={same}",
        module="lnl_lightning.eval",
        cwd=tmp_path,
    ).check_returncode()
    tested = json.loads((same / "metrics.json").read_text())["metrics"]
    assert tested["test/acc"] == trained["test/acc"]  # the same weights on the same test batches

    # an override still applies on top of the run's config
    other = tmp_path / "eval_other"
    run_cli(
        ckpt,
        "data.color_var=0.05",
        "trainer.limit_test_batches=2",
        f"hydra.run.dir={other}",
        module="lnl_lightning.eval",
        cwd=tmp_path,
    ).check_returncode()
    cfg = (other / "config_resolved.yaml").read_text()
    assert "color_var: 0.05" in cfg and "method: baseline" in cfg


@pytest.mark.slow  # two runs and an evaluation (make test-slow, run by CI)
def test_a_warm_started_checkpoint_evaluates_elsewhere_and_writes_only_its_own_folder(
    tmp_path, mnist_dir
):
    """A committed run, cloned to another machine: its recorded folders (and its warm start's
    source) are gone. Evaluating its checkpoint needs neither, and writes nothing into the run."""
    trained_in = tmp_path / "trained"
    data = f"data.data_dir={mnist_dir}"
    run_ok(
        "experiment=colored_mnist_baseline",
        "debug=fast",
        data,
        f"hydra.run.dir={trained_in / 'baseline'}",
        cwd=tmp_path,
    )
    run_ok(
        "experiment=colored_mnist",
        "debug=fast",
        data,
        f"model.init_from={trained_in / 'baseline' / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={trained_in / 'lnl'}",
        cwd=tmp_path,
    )
    clone = tmp_path / "clone"
    trained_in.rename(clone)  # every path the run recorded now points nowhere
    run = clone / "lnl"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    out = tmp_path / "eval"
    run_ok(
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
        module="lnl_lightning.eval",
    )

    trained = json.loads((run / "metrics.json").read_text())["metrics"]
    evaluated = json.loads((out / "metrics.json").read_text())["metrics"]
    assert evaluated["test/acc"] == trained["test/acc"]
    assert (out / "group_acc_test.csv").is_file() and (out / "csv").is_dir()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not trained_in.exists()  # nothing recreated where the run was recorded


def test_a_quick_run_prints_only_what_is_meant_for_the_user(tmp_path, mnist_dir):
    data = [f"data.data_dir={mnist_dir}", "debug=fast"]
    quiet = run_ok(*data, f"hydra.run.dir={tmp_path / 'quiet'}", cwd=tmp_path)
    lines = (quiet.stdout + quiet.stderr).splitlines()
    assert len(lines) <= 15, "\n".join(lines)
    for noise in ("Tip:", "deprecated", "GPU available", "sync_dist", "num_workers", "┃"):
        assert not [line for line in lines if noise in line], noise
    assert "Training lnl on ColoredMNIST" in lines[0]  # what trains, and where its records go
    # the config tree on request; it is always in the run folder
    assert (tmp_path / "quiet" / "config_resolved.yaml").is_file()
    # one epoch, one checkpoint: its best weights are its last (a ResNet's is 93 MB)
    assert [p.name for p in (tmp_path / "quiet" / "checkpoints").iterdir()] == ["last.ckpt"]
    # Lightning's own lines when asked for with Hydra's switch
    loud = run_ok(
        *data,
        "hydra.verbose=[pytorch_lightning]",
        f"hydra.run.dir={tmp_path / 'loud'}",
        cwd=tmp_path,
    )
    assert "GPU available" in loud.stdout + loud.stderr


def test_help_names_the_package_and_its_first_run(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("lnl_lightning: Learning Not to Learn")
    assert "powered by Hydra" not in result.stdout and "debug=fast" in result.stdout


def test_a_mistyped_key_gets_a_did_you_mean(tmp_path):
    result = run_cli("experiment=colored_mnist", "model.lamda_=0.1", "debug=fast", cwd=tmp_path)
    assert result.returncode != 0
    assert "did you mean model.lambda_=0.1 ?" in result.stderr
