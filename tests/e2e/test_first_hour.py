"""What a newcomer's first hour of mistakes must not cost: records, checkpoints, other runs."""

from __future__ import annotations

import fcntl
import json
import signal

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
    error = json.loads((run_dir / "error.json").read_text())["error"]
    assert error.startswith("DiskFull: no space left")  # the report lists it failed, and why
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 0  # epoch 0's checkpoint, whole
    assert (run_dir / ".lock").read_text() == ""  # released
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # no half-written file left
