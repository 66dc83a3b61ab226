"""``python -m lnl_lightning`` end to end in a subprocess, on a generated MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ..helpers.cli import METRIC_KEYS, run_cli, run_ok
from ..helpers.signal_callback import record_batches, recorded


@pytest.fixture(scope="module")
def lnl_run(tmp_path_factory, mnist_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "lnl"
    run_ok(
        "experiment=colored_mnist",
        "debug=fast",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=32",
        f"hydra.run.dir={run_dir}",
        cwd=run_dir.parent,
    )
    return run_dir


@pytest.mark.parametrize("method", ["lnl", "baseline"])
def test_run_writes_metrics_and_artifacts(method, lnl_run, tmp_path, mnist_dir):
    if method == "lnl":
        run_dir = lnl_run
    else:
        run_dir = tmp_path / "baseline"
        run_ok(
            "experiment=colored_mnist_baseline",
            "debug=fast",
            f"data.data_dir={mnist_dir}",
            "data.batch_size=32",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        )
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert set(summary["metrics"]) >= METRIC_KEYS
    assert all(0.0 <= summary["metrics"][k] <= 1.0 for k in METRIC_KEYS)
    assert summary["method"] == method
    assert Path(summary["config_path"]).is_file()
    assert "color_var: 0.02" in Path(summary["config_path"]).read_text()
    for name in (
        "group_acc_test.csv",
        "group_acc_test.png",
        "checkpoints/last.ckpt",
        "csv/version_0/metrics.csv",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    assert len((run_dir / "group_acc_test.csv").read_text().splitlines()) == 1 + 10 * 10


def test_checkpoint_holds_both_optimizers_and_schedulers(lnl_run):
    import torch

    ckpt = torch.load(lnl_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert len(ckpt["optimizer_states"]) == 2  # f+g and h
    assert len(ckpt["lr_schedulers"]) == 2
    # saved after the epoch's scheduler step, so a resumed run continues the schedule exactly
    assert [s["last_epoch"] for s in ckpt["lr_schedulers"]] == [1, 1]
    assert any(k.startswith("bias_head.") for k in ckpt["state_dict"])


def test_resume_continues_from_the_checkpoint(lnl_run, tmp_path, mnist_dir):
    first = json.loads((lnl_run / "metrics.json").read_text())
    resumed_dir = tmp_path / "resumed"
    record = tmp_path / "batches.txt"
    run_ok(
        *record_batches(record),
        "experiment=colored_mnist",
        "debug=fast",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=32",
        "trainer.max_epochs=2",
        f"ckpt_path={lnl_run}/checkpoints/last.ckpt",
        f"hydra.run.dir={resumed_dir}",
        cwd=tmp_path,
    )
    resumed = json.loads((resumed_dir / "metrics.json").read_text())
    assert first["epochs"] == 1 and resumed["epochs"] == 2
    assert resumed["global_step"] == 2 * first["global_step"]
    assert recorded(record) == [(1, 0), (1, 1), (1, 2)]  # epoch 1 alone: a resume, not a rerun


BAD_INPUTS = [
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0 trains nothing"),
    ("data.color_var=-0.1", "data.color_var must be in (0, 1]"),
    ("data.color_var=nan", "data.color_var must be in (0, 1]"),
    ("data.batch_size=-8", "data.batch_size must be a positive integer"),
    ("model.mu=-1", "model.mu must be a finite number >= 0"),
    ("model.lambda_=nan", "model.lambda_ must be a finite number >= 0"),
    ("model.lambda_=inf", "model.lambda_ must be a finite number >= 0, got inf"),
    ("model.mu=inf", "model.mu must be a finite number >= 0, got inf"),
    ("model.lambda_=abc", "model.lambda_ must be a finite number >= 0, got 'abc'"),
    ("model=blind_eye model.confusion_weight=-1", "model.confusion_weight must be a finite"),
    ("ckpt_path=/no/such.ckpt", "ckpt_path must be a checkpoint file"),
    ("trainer.max_epochs=0", "trainer.max_epochs must be >= 1"),
    ("data.data_dir=/etc/hostname", "data.data_dir must be a folder"),
    ("optimized_metric=test/acc", "never a test one"),
    ("trainer.devices=100000", "trainer.devices=100000: this machine has"),
    ("trainer.devices=0", "trainer.devices=0: this machine has"),
    ("test_ckpt=best data.val_fraction=0", "data.val_fraction=0 leaves no validation data"),
]


@pytest.mark.parametrize(("override", "message"), BAD_INPUTS)
def test_bad_input_is_refused_before_any_work(override, message, tmp_path, mnist_dir):
    from hydra import compose, initialize_config_module

    from lnl_lightning.config import CONFIG_MODULE
    from lnl_lightning.errors import ConfigError
    from lnl_lightning.train import run

    overrides = [
        "debug=fast",
        f"data.data_dir={mnist_dir}",
        *override.split(),
        f"paths.output_dir={tmp_path / 'run'}",
    ]
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()  # stopped before any work


def test_an_unwritable_data_dir_is_named_when_mnist_must_be_fetched(tmp_path):
    from lnl_lightning.data.colored_mnist import ColoredMNISTDataModule
    from lnl_lightning.errors import ConfigError

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as err:
        ColoredMNISTDataModule(data_dir=blocker / "data", download=True)
    assert f"data.data_dir: unpacking or downloading MNIST has to write into {blocker}" in str(
        err.value
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without GPU")
def test_asking_for_a_gpu_without_one_says_so(tmp_path, mnist_dir):
    result = run_cli(
        "debug=fast",
        f"data.data_dir={mnist_dir}",
        "trainer.accelerator=gpu",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "trainer.accelerator=gpu, but no GPU is visible here" in result.stderr


@pytest.mark.parametrize("group", ["experiment", "data", "model", "net", "trainer"])
def test_an_unknown_config_name_lists_the_choices(group, tmp_path):
    result = run_cli(f"{group}=no_such_{group}", cwd=tmp_path)
    assert result.returncode != 0
    assert f"Could not find '{group}/no_such_{group}'" in result.stderr
    assert f"Available options in '{group}'" in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("override", "message"), [BAD_INPUTS[0], BAD_INPUTS[6]])
def test_bad_input_ends_the_cli_with_a_message_not_a_traceback(
    override, message, tmp_path, mnist_dir
):
    result = run_cli(
        "debug=fast",
        f"data.data_dir={mnist_dir}",
        override,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_mnist_tells_where_and_what(tmp_path):
    result = run_cli(
        "debug=fast",
        f"data.data_dir={tmp_path / 'empty'}",
        "data.download=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert str(tmp_path / "empty" / "MNIST" / "raw") in result.stderr
    assert "train-images-idx3-ubyte" in result.stderr and "t10k-labels-idx1-ubyte" in result.stderr


def test_wandb_without_credentials_logs_offline_and_says_how_to_sync(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    result = run_ok(
        "experiment=colored_mnist",
        "debug=fast",
        "logger=wandb",
        f"data.data_dir={mnist_dir}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        WANDB_MODE=None,
        WANDB_API_KEY=None,
        HOME=str(tmp_path),
    )
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb"))
    assert f"wandb sync {run_dir / 'wandb'}" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("experiment", "method", "test_sets"),
    [
        ("dogs_cats", "lnl", ["test_tb2"]),
        ("dogs_cats_baseline", "baseline", ["test_tb2"]),
        ("imdb_face", "lnl", ["test_eb2", "test"]),
        ("imdb_face_baseline", "baseline", ["test_eb2", "test"]),
        ("imdb_face_age", "lnl", ["test_eb2", "test"]),
        ("imdb_face_age_baseline", "baseline", ["test_eb2", "test"]),
        ("image_csv", "lnl", ["test"]),
    ],
)
def test_real_image_experiments_run_end_to_end(
    experiment, method, test_sets, tmp_path, experiment_overrides
):
    run_dir = tmp_path / "run"
    run_ok(
        f"experiment={experiment}",
        "debug=fast",
        *experiment_overrides(experiment),
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["method"] == method
    for name in test_sets:
        assert {f"{name}/acc", f"{name}/acc_unbiased", f"{name}/bias_acc"} <= set(
            summary["metrics"]
        )
        assert (run_dir / f"group_acc_{name}.png").is_file()


def test_divergence_stops_with_the_term_and_keeps_the_last_good_checkpoint(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    result = run_cli(
        "experiment=colored_mnist",
        "debug=fast",
        "trainer.max_epochs=3",
        "model.scheduler.step_size=1",
        "model.scheduler.gamma=1e30",  # epoch 0 trains normally, epoch 1 blows up
        f"data.data_dir={mnist_dir}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "training diverged: the label loss (train/label_loss) became NaN or infinite" in (
        result.stderr
    )
    assert "(epoch 1)" in result.stderr
    assert not (run_dir / "metrics.json").exists()
    kept = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert kept["epoch"] == 0
    assert all(
        torch.isfinite(t).all() for t in kept["state_dict"].values() if t.is_floating_point()
    )


def test_corrupt_checkpoint_is_refused_by_name(lnl_run, tmp_path, mnist_dir):
    good = (lnl_run / "checkpoints" / "last.ckpt").read_bytes()
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(good[: len(good) // 2])
    for override, key in (
        (f"ckpt_path={broken}", "ckpt_path"),
        (f"model.init_from={broken}", "model.init_from"),
    ):
        result = run_cli(
            "experiment=colored_mnist",
            "debug=fast",
            f"data.data_dir={mnist_dir}",
            override,
            f"hydra.run.dir={tmp_path / key}",
            cwd=tmp_path,
        )
        assert result.returncode == 2
        assert f"{key}: {broken} is not a readable checkpoint" in result.stderr


def test_same_seed_same_metrics_other_seed_other_metrics(lnl_run, tmp_path, mnist_dir):
    first = json.loads((lnl_run / "metrics.json").read_text())["metrics"]
    runs = {}
    for seed in (0, 1):
        run_ok(
            "experiment=colored_mnist",
            "debug=fast",
            f"data.data_dir={mnist_dir}",
            "data.batch_size=32",
            f"seed={seed}",
            f"hydra.run.dir={tmp_path / str(seed)}",
            cwd=tmp_path,
        )
        runs[seed] = json.loads((tmp_path / str(seed) / "metrics.json").read_text())["metrics"]
    assert runs[0] == first
    assert runs[1] != first


def test_ckpt_path_last_without_a_checkpoint_says_what_to_do(tmp_path, mnist_dir):
    result = run_cli(
        "debug=fast",
        f"data.data_dir={mnist_dir}",
        "ckpt_path=last",
        f"hydra.run.dir={tmp_path / 'new'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "give hydra.run.dir=<the run folder>" in result.stderr


@pytest.mark.parametrize(
    "overrides, refusal",
    [
        (["data.color_var=0.05"], "holds a run of another config (data.color_var: 0.02 -> 0.05"),
        (
            ["experiment=colored_mnist_baseline"],
            "was written by a model=lnl run, but this config is model=baseline",
        ),
    ],
    ids=["other_data", "other_method"],
)
def test_resuming_a_run_of_another_config_is_refused_and_its_records_kept(
    overrides, refusal, lnl_run, tmp_path, mnist_dir
):
    records = {
        name: (lnl_run / name).read_bytes()
        for name in ("config_resolved.yaml", "metrics.json", "checkpoints/last.ckpt")
    }
    result = run_cli(
        "experiment=colored_mnist",
        "debug=fast",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=32",
        *overrides,
        "ckpt_path=last",
        f"hydra.run.dir={lnl_run}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert refusal in result.stderr
    assert {name: (lnl_run / name).read_bytes() for name in records} == records


def test_a_run_folder_in_use_by_another_run_is_refused(lnl_run, tmp_path, mnist_dir):
    from lnl_lightning.records.files import run_lock

    folder = tmp_path / "busy"
    with run_lock(folder):
        result = run_cli(
            "experiment=colored_mnist",
            "debug=fast",
            f"data.data_dir={mnist_dir}",
            f"hydra.run.dir={folder}",
            cwd=tmp_path,
        )
    assert result.returncode == 2
    assert f"hydra.run.dir: {folder} is in use by another run (pid " in result.stderr
    assert not (folder / "config_resolved.yaml").exists()


@pytest.mark.parametrize("where", ["hydra.run.dir", "LNL_LOG_DIR", "hydra.sweep.dir"])
def test_an_unwritable_run_folder_is_named_before_any_work(where, tmp_path, mnist_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder cannot be made below a file, even by root
    args = ["experiment=colored_mnist", "debug=fast", f"data.data_dir={mnist_dir}"]
    env = {}
    if where == "hydra.run.dir":
        args.append(f"hydra.run.dir={blocker / 'run'}")
    elif where == "LNL_LOG_DIR":
        env["LNL_LOG_DIR"] = str(blocker)
    else:
        args = ["-m", *args, f"hydra.sweep.dir={blocker / 'sweep'}", "seed=0,1"]
    result = run_cli(*args, cwd=tmp_path, **env)
    assert result.returncode == 2, result.stderr[-2000:]
    key = "hydra.sweep.dir" if where == "hydra.sweep.dir" else "hydra.run.dir"
    assert f"error: {key} (or LNL_LOG_DIR, where default folders go): the run has to write" in (
        result.stderr
    )
    assert str(blocker) in result.stderr and "Traceback" not in result.stderr


def test_a_full_disk_ends_with_what_to_do(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    result = run_cli(
        "experiment=colored_mnist",
        "debug=fast",
        f"data.data_dir={mnist_dir}",
        "+callbacks.full._target_=tests.helpers.signal_callback.DiskFullAtEpochEnd",
        "+callbacks.full.epoch=0",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: no space left on the device writing metrics.csv" in result.stderr
    assert f"ckpt_path=last hydra.run.dir={run_dir}" in result.stderr
    assert "Traceback" not in result.stderr


def test_final_metrics_are_printed_once(tmp_path, mnist_dir):
    result = run_ok(
        "experiment=colored_mnist",
        "debug=fast",
        f"data.data_dir={mnist_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    final = [line for line in result.stdout.splitlines() if "] - final  " in line]
    assert [line.split("] - final  ")[1].split()[0] for line in final] == ["val/acc", "test/acc"]
    assert "Test metric" not in result.stdout and "Validate metric" not in result.stdout
