"""``hydra/launcher=packed`` end to end: each packed job is the run it would be on its own."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lnl_lightning.errors import ConfigError
from lnl_lightning.records.identity import check_pack, pack_key

from ..helpers.cli import run_ok
from ..helpers.wandb_records import read_run

# float64: packed and single runs then agree to the last digit that matters (tests/test_packing.py)
COMMON = (
    "experiment=colored_mnist",
    "debug=fast",
    "data.batch_size=32",
    "print_config=false",
    "trainer.precision=64-true",
)


@pytest.fixture(scope="module")
def packed_sweep(tmp_path_factory, mnist_dir) -> Path:
    """Baseline and LNL at two sigma^2: two packs (a baseline and an LNL run cannot share one)."""
    root = tmp_path_factory.mktemp("packed")
    run_ok(
        "-m",
        "hydra/launcher=packed",
        *COMMON,
        f"data.data_dir={mnist_dir}",
        "model=baseline,lnl",
        "data.color_var=0.02,0.05",
        "seed=1",
        "trainer.max_epochs=2",
        "logger=[csv,wandb]",
        f"hydra.sweep.dir={root / 'sweep'}",
        cwd=root,
        WANDB_MODE="offline",
    )
    return root


def run_alone(root: Path, mnist_dir: Path, name: str, *overrides: str) -> Path:
    """Job 3 of the packed sweep (LNL, sigma^2 0.05, seed 1) as an ordinary run, data on the
    device as a pack's; its folder ``root / name``."""
    folder = root / name
    run_ok(
        *COMMON,
        f"data.data_dir={mnist_dir}",
        "data.color_var=0.05",
        "seed=1",
        "trainer.max_epochs=2",
        "data.on_device=true",
        *overrides,
        f"hydra.run.dir={folder}",
        cwd=root,
    )
    return folder


def test_a_packed_job_equals_the_same_job_run_alone(packed_sweep, mnist_dir):
    """Same metrics, per-epoch losses and final weights as an ordinary run (data on device)."""
    member = packed_sweep / "sweep" / "3"
    overrides = (member / ".hydra" / "overrides.yaml").read_text()
    assert "model=lnl" in overrides and "data.color_var=0.05" in overrides
    alone = run_alone(packed_sweep, mnist_dir, "alone")
    packed, single = (json.loads((d / "metrics.json").read_text()) for d in (member, alone))
    assert packed["metrics"].keys() == single["metrics"].keys()
    for name, value in single["metrics"].items():
        assert packed["metrics"][name] == pytest.approx(value, abs=1e-9), name
    assert packed["epochs"] == single["epochs"] == 2
    assert packed["global_step"] == single["global_step"]
    assert packed["pack"]["members"] == 2

    def losses(run: Path) -> list[float]:
        with (run / "csv" / "version_0" / "metrics.csv").open() as file:
            rows = list(csv.DictReader(file))
        return [float(r["train/label_loss_epoch"]) for r in rows if r.get("train/label_loss_epoch")]

    assert len(losses(member)) == 2
    assert losses(member) == pytest.approx(losses(alone), rel=1e-6)  # ordinary: float32 means
    ours = torch.load(member / "checkpoints" / "last.ckpt", weights_only=False)
    theirs = torch.load(alone / "checkpoints" / "last.ckpt", weights_only=False)
    # last.ckpt is the last epoch's, also when val/acc did not improve in it (here: epoch 0 best)
    assert Path(single["best_checkpoint"]).name == "best_epoch000.ckpt"  # best is not last
    assert (theirs["epoch"], theirs["global_step"]) == (1, single["global_step"])
    assert (ours["epoch"], ours["global_step"]) == (1, single["global_step"])
    for name, value in theirs["state_dict"].items():
        if name.split(".")[0] in ("feature_extractor", "label_head", "bias_head"):
            torch.testing.assert_close(ours["state_dict"][name], value, rtol=1e-6, atol=1e-9)
    assert len(ours["optimizer_states"]) == 2
    assert (member / "group_acc_test.csv").is_file() and (member / "config_resolved.yaml").is_file()
    # the records the callbacks write are the same for a member as for the run alone
    records = ("samples_train.png", "samples_test.png", "group_acc_val.csv", "group_acc_test.csv")
    for name in records:
        assert (alone / name).is_file() and (member / name).is_file(), name
    assert (member / "group_acc_test.csv").read_text() == (alone / "group_acc_test.csv").read_text()
    assert Path(packed["best_checkpoint"]).name == Path(single["best_checkpoint"]).name
    assert sorted(p.name for p in (member / "checkpoints").iterdir()) == sorted(
        p.name for p in (alone / "checkpoints").iterdir()
    )
    best_ours = torch.load(packed["best_checkpoint"], weights_only=False)["state_dict"]
    best_theirs = torch.load(single["best_checkpoint"], weights_only=False)["state_dict"]
    # an ordinary run's best checkpoint holds weights only: it is tested, never resumed
    assert "optimizer_states" not in torch.load(single["best_checkpoint"], weights_only=False)
    for name, value in best_theirs.items():
        if name.split(".")[0] in ("feature_extractor", "label_head", "bias_head"):
            torch.testing.assert_close(best_ours[name], value, rtol=1e-6, atol=1e-9)

    # perf=fast: the same run as a pack of one, with the graph-ready step (eager on a CPU)
    fast = packed_sweep / "fast"
    run_ok(
        *COMMON,
        f"data.data_dir={mnist_dir}",
        "data.color_var=0.05",
        "seed=1",
        "trainer.max_epochs=2",
        "perf=fast",
        f"hydra.run.dir={fast}",
        cwd=packed_sweep,
    )
    quick = json.loads((fast / "metrics.json").read_text())
    assert quick["pack"]["members"] == 1 and quick["global_step"] == single["global_step"]
    for name, value in single["metrics"].items():
        assert quick["metrics"][name] == pytest.approx(value, abs=1e-9), name

    # stopped after one epoch and resumed from the pack's checkpoint: the same run
    resumed = packed_sweep / "resumed"
    for epochs, resume in (("1", []), ("2", ["ckpt_path=last"])):
        run_ok(
            *COMMON,
            f"data.data_dir={mnist_dir}",
            "data.color_var=0.05",
            "seed=1",
            f"trainer.max_epochs={epochs}",
            "perf=fast",
            *resume,
            f"hydra.run.dir={resumed}",
            cwd=packed_sweep,
        )
    again = json.loads((resumed / "metrics.json").read_text())
    assert (again["epochs"], again["global_step"]) == (2, quick["global_step"])
    # the second process logged epoch 1 alone: it resumed (a rerun would log epoch 0 again)
    assert (
        0 in logged_epochs(resumed, "version_0") and min(logged_epochs(resumed, "version_1")) == 1
    )
    assert again["metrics"] == quick["metrics"]
    assert (resumed / "pack" / "checkpoints" / "last.ckpt").is_file()


def test_test_ckpt_best_tests_each_members_own_best_checkpoint(packed_sweep, mnist_dir):
    """A pack of two with test_ckpt=best: member 1's final metrics are those of its run alone
    with test_ckpt=best (its epoch-0 weights here), not its last epoch's."""
    sweep, alone = packed_sweep / "best_sweep", packed_sweep / "best_alone"
    run_ok(
        "-m",
        "hydra/launcher=packed",
        *COMMON,
        f"data.data_dir={mnist_dir}",
        "data.color_var=0.02,0.05",
        "seed=1",
        "trainer.max_epochs=2",
        "test_ckpt=best",
        f"hydra.sweep.dir={sweep}",
        cwd=packed_sweep,
    )
    run_alone(packed_sweep, mnist_dir, "best_alone", "test_ckpt=best")
    member, single = (json.loads((d / "metrics.json").read_text()) for d in (sweep / "1", alone))
    last = json.loads((packed_sweep / "sweep" / "3" / "metrics.json").read_text())  # same, last
    assert member["pack"]["members"] == 2
    assert member["tested_weights"] == single["tested_weights"] == "best"
    assert Path(member["best_checkpoint"]).name == Path(single["best_checkpoint"]).name
    for name, value in single["metrics"].items():
        assert member["metrics"][name] == pytest.approx(value, abs=1e-9), name
    assert member["metrics"] != pytest.approx(last["metrics"], abs=1e-6)  # e.g. its bias_acc


def logged_epochs(run: Path, version: str) -> set[int]:
    with (run / "csv" / version / "metrics.csv").open() as file:
        return {int(row["epoch"]) for row in csv.DictReader(file) if row.get("epoch")}


def test_the_launcher_groups_jobs_that_can_share_a_pack(packed_sweep):
    sweep = packed_sweep / "sweep"
    packs = sorted(p.name for p in (sweep / "packs").iterdir())
    assert packs == ["jobs_0-1", "jobs_2-3"]
    runs = [json.loads((sweep / j / "metrics.json").read_text()) for j in "0123"]
    assert [r["method"] for r in runs] == ["baseline", "baseline", "lnl", "lnl"]
    assert [Path(r["pack"]["folder"]).name for r in runs] == ["jobs_0-1"] * 2 + ["jobs_2-3"] * 2
    # each job its own W&B run, with its own config and final metrics
    for job, run in zip("0123", runs, strict=True):
        (record,) = (sweep / job / "wandb").glob("offline-run-*/run-*.wandb")
        wandb_run = read_run(record)
        assert wandb_run["config"]["color_var"] == (0.02, 0.05)[int(job) % 2]
        assert wandb_run["summary"]["test/acc"] == pytest.approx(run["metrics"]["test/acc"])


def config(**changes) -> OmegaConf:
    base = {
        "seed": 0,
        "test_ckpt": "last",
        "paths": {"output_dir": "runs/0"},
        "data": {"color_var": 0.02, "batch_size": 128},
        "model": {"lambda_": 0.01, "mu": 0.1, "init_from": None},
        "trainer": {"max_epochs": 100},
    }
    cfg = OmegaConf.create(base)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_pack_keys_keep_apart_what_one_optimizer_step_cannot_serve():
    same = config(seed=3, **{"data.color_var": 0.05, "model.lambda_": 0.1, "model.mu": 0.3})
    assert pack_key(config()) == pack_key(same)
    for changes in (
        {"model.mu": 0.0},  # a baseline: no second f+g step
        {"model.lambda_": 0.0},  # no entropy term: h's BatchNorm sees fewer batches
        {"model.init_from": "x.ckpt"},
        {"data.batch_size": 64},
        {"trainer.max_epochs": 10},
    ):
        assert pack_key(config()) != pack_key(config(**changes)), changes
    with pytest.raises(ConfigError, match="'trainer.max_epochs'"):
        check_pack([config(), config(**{"trainer.max_epochs": 10})])
    with pytest.raises(ConfigError, match="'test_ckpt'"):  # one final test for the pack
        check_pack([config(), config(test_ckpt="best")])


def test_methods_that_cannot_pack_train_alone_in_a_packed_sweep(tmp_path, mnist_dir):
    run_ok(
        "-m",
        "hydra/launcher=packed",
        "experiment=colored_mnist",
        "debug=fast",
        "data.batch_size=32",
        "print_config=false",
        f"data.data_dir={mnist_dir}",
        "model=baseline,group_dro",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    baseline, group_dro = (
        json.loads((tmp_path / "sweep" / str(i) / "metrics.json").read_text()) for i in (0, 1)
    )
    assert baseline["method"] == "baseline" and "pack" in baseline  # a pack of one
    assert group_dro["method"] == "group_dro" and "pack" not in group_dro  # an ordinary run
    assert (tmp_path / "sweep" / "1" / "checkpoints" / "last.ckpt").is_file()


def test_after_a_device_side_assert_the_later_packs_are_not_run_but_recorded(tmp_path, monkeypatch):
    """A device-side assert poisons the CUDA context: every later pack of the sweep would fail
    with it. They are recorded as not run, naming the pack that failed; an ordinary error
    (here a ConfigError) lets the sweep go on."""
    from hydra.core.utils import JobReturn

    import lnl_lightning.train as train
    from hydra_plugins.lnl_lightning_launcher.packed_launcher import PackedLauncher

    trained = []

    def run_packed(cfgs, pack_dir):
        trained.append(pack_dir.name)
        if pack_dir.name == "p1":
            raise ConfigError("not this one")
        if pack_dir.name == "p2":
            raise RuntimeError("CUDA error: device-side assert triggered")
        return [{"val/acc": 0.5} for _ in cfgs]

    monkeypatch.setattr(train, "train_runs", run_packed)

    def job(name):
        cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / name)}})
        cfg.optimized_metric = "val/acc"
        return JobReturn(), cfg

    packs = [(tmp_path / f"p{n}", [job(f"job{n}")]) for n in range(1, 5)]
    PackedLauncher()._train_packs(packs)
    assert trained == ["p1", "p2"]
    errors = {
        n: json.loads((tmp_path / f"job{n}" / "error.json").read_text())["error"]
        for n in range(1, 5)
    }
    assert errors[1] == "ConfigError: not this one"
    assert "device-side assert" in errors[2]
    for n in (3, 4):
        assert errors[n].startswith(f"not run: pack {tmp_path / 'p2'} failed")
        assert "rerun the sweep" in errors[n]


def test_a_pack_cut_short_leaves_each_member_its_last_finished_epoch(
    tmp_path, mnist_dir, monkeypatch
):
    """Each member's checkpoints/last.ckpt is written after every epoch, not only once fit,
    validate and test are done: a pack stopped after its 2nd of 3 epochs (a time limit, a
    kill) leaves every member the weights of epoch 1, which a warm start reads."""
    from hydra import compose, initialize_config_module

    from lnl_lightning.config import CONFIG_MODULE, build
    from lnl_lightning.engine.packed import unpack_runs
    from lnl_lightning.records.members import PackMembers as MemberRuns
    from lnl_lightning.train import build_model
    from lnl_lightning.train import train_runs as run_packed

    class Cut(Exception):
        pass

    weights = {}
    end_of_epoch = MemberRuns.on_train_epoch_end

    def cut_after_epoch_1(self, trainer, pack):
        end_of_epoch(self, trainer, pack)
        if trainer.current_epoch == 1:
            weights.update({k: m.state_dict() for k, m in enumerate(unpack_runs(pack))})
            raise Cut

    monkeypatch.setattr(MemberRuns, "on_train_epoch_end", cut_after_epoch_1)
    cfgs = []
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        for seed in (0, 1):
            cfg = compose(
                "train",
                overrides=[
                    *COMMON,
                    f"data.data_dir={mnist_dir}",
                    f"seed={seed}",
                    "trainer.max_epochs=3",
                    f"paths.output_dir={tmp_path / f'seed{seed}'}",
                ],
            )
            cfgs.append(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    with pytest.raises(Cut):
        run_packed(cfgs, tmp_path / "pack")
    for k, seed in enumerate((0, 1)):
        run = tmp_path / f"seed{seed}"
        assert not (run / "metrics.json").exists()
        saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
        assert (
            saved["epoch"] == 1 and saved["global_step"] == 2 * 3 * 3
        )  # 3 batches, 3 optimizer steps each
        assert saved["state_dict"].keys() == weights[k].keys()
        assert all(torch.equal(saved["state_dict"][n], v) for n, v in weights[k].items())
        assert len(saved["optimizer_states"]) == 2
        assert logged_epochs(run, "version_0") == {0, 1}
    # a warm start reads it as it reads an ordinary run's last checkpoint
    last = tmp_path / "seed0" / "checkpoints" / "last.ckpt"
    warm = OmegaConf.merge(cfgs[0], {"model": {"init_from": str(last)}})
    datamodule = build(warm.data)
    model = build_model(warm, datamodule.bias_spec, datamodule.test_names)
    for name, value in model.feature_extractor.state_dict().items():
        saved = weights[0][f"feature_extractor.{name}"]  # float64: trained in 64-true
        assert torch.equal(value, saved.to(value.dtype)), name


def test_the_packed_launcher_is_found_outside_the_repository(tmp_path, mnist_dir):
    """Run where the repository is not on the path (as an installed package is run): Hydra
    lists the hydra_plugins namespace, which misses an editable install's mapped packages."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lnl_lightning",
            "-m",
            "hydra/launcher=packed",
            "experiment=colored_mnist",
            "debug=fast",
            f"data.data_dir={mnist_dir}",
            "data.batch_size=32",
            "seed=0,1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        env={**env, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Pack of 2 runs done" in done.stdout + done.stderr
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 2
