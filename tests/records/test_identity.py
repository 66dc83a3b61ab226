"""What identifies a run: every setting that changes its result, and nothing else."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from lnl_lightning.config import CONFIG_MODULE
from lnl_lightning.errors import ConfigError
from lnl_lightning.records.folder import read_config
from lnl_lightning.records.identity import check_same_run, differences, run_identity


def compose_train(overrides: list[str], hydra: bool = False):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra)


def identity_of(overrides: list[str]) -> dict:
    return run_identity(compose_train(["paths.output_dir=/somewhere", *overrides]))


BASE = identity_of([])


@pytest.mark.parametrize(
    "override",
    [
        "model.optimizer.lr=0.02",
        "model.optimizer.momentum=0.5",
        "data.batch_size=64",
        "trainer.limit_train_batches=0.1",
        "data.seed=3",
        "data.grayscale=true",
        "trainer.max_epochs=3",
        "seed=1",
        "model.init_from=/a/b/last.ckpt",
    ],
)
def test_each_setting_that_changes_a_result_is_part_of_the_identity(override):
    assert differences(BASE, identity_of([override])), override


@pytest.mark.parametrize(
    "override",
    [
        "paths.log_dir=/elsewhere",
        "data.data_dir=/data/mnist",
        "logger=tensorboard",
        "print_config=false",
        "trainer.enable_progress_bar=false",
        "data.num_workers=0",
        "ckpt_path=last",
    ],
)
def test_paths_logging_and_resuming_are_not(override):
    assert differences(BASE, identity_of([override])) == [], override


def test_two_warm_starts_from_different_folders_are_one_configuration():
    a = identity_of(["model.init_from=/a/last.ckpt"])
    assert a == identity_of(["model.init_from=/moved/last.ckpt"])
    assert a["model.init_from"] == "warm" and BASE["model.init_from"] is None


def test_a_folder_refuses_another_config_but_lets_a_resume_train_longer(tmp_path):
    cfg = compose_train(["paths.output_dir=/somewhere"])
    (tmp_path / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    longer = OmegaConf.merge(cfg, {"trainer": {"max_epochs": 200}, "ckpt_path": "last"})
    check_same_run(longer, tmp_path)
    other = OmegaConf.merge(cfg, {"model": {"optimizer": {"lr": 0.5}}})
    with pytest.raises(ConfigError, match=r"model.optimizer.lr: 0.01 -> 0.5"):
        check_same_run(other, tmp_path)
    check_same_run(other, tmp_path / "new")  # a folder without a run takes any config


def test_default_run_folders_are_unique_per_process():
    cfg = compose_train([], hydra=True)
    assert cfg.hydra.run.dir.endswith(f"_lnl_{os.getpid()}")
    assert cfg.hydra.sweep.dir.endswith(f"_{os.getpid()}")


def test_a_run_recorded_before_its_modules_moved_is_the_same_run(tmp_path):
    """Committed folders name lnl_lightning.models.*: they read, resume and group as today's."""
    cfg = compose_train(["paths.output_dir=/somewhere", "experiment=colored_mnist"])
    written = OmegaConf.to_yaml(cfg, resolve=True)
    assert "lnl_lightning.methods.lnl.LNLModule" in written
    old = written.replace("lnl_lightning.methods.lnl.", "lnl_lightning.models.lnl_module.")
    old = old.replace("lnl_lightning.nets.builders.", "lnl_lightning.models.networks.")
    assert "lnl_lightning.models." in old and "lnl_lightning.nets." not in old
    (tmp_path / "config_resolved.yaml").write_text(old)
    assert run_identity(read_config(tmp_path)) == run_identity(cfg)
    check_same_run(cfg, tmp_path)  # a resume of the old folder is not refused
    (tmp_path / "config_resolved.yaml").write_text(old.replace("LNLModule", "Other"))
    with pytest.raises(ConfigError, match=r"model._target_"):
        check_same_run(cfg, tmp_path)
