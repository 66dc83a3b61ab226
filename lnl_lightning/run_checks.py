"""Checks of a run's config that no component owns, made before any work."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from lnl_lightning.config import TestCkpt
from lnl_lightning.errors import ConfigError
from lnl_lightning.recipe_checks import check_recipe
from lnl_lightning.records.folder import METRICS_FILE, read_summary
from lnl_lightning.schemas import check_choice
from lnl_lightning.selection import check_selection


def check_config(cfg: DictConfig) -> None:
    """Checks on top-level keys that no component owns, made before any work."""
    from lnl_lightning.records.checkpoints import check_fits, load_checkpoint
    from lnl_lightning.records.identity import check_same_run

    check_settings(cfg)
    path = resume_path(cfg)
    if path is not None:
        check_fits(load_checkpoint(path, "ckpt_path"), cfg.method, path, "ckpt_path", resume=True)
    check_same_run(cfg, Path(cfg.paths.output_dir))  # before: another config is the first news
    if path is not None:
        check_not_finished(cfg, path)


def check_settings(cfg: DictConfig) -> None:
    """The checks of :func:`check_config` that need no run folder: made before Lightning is
    imported (and all but the device count before torch), so such a mistake is refused at once."""
    check_recipe(cfg)
    if str(cfg.optimized_metric).startswith("test"):
        raise ConfigError(
            f"optimized_metric must be a validation metric (val/..., val_random/...) or a "
            f"train/... one, never a test one (it follows selection.metric unless set), "
            f"got '{cfg.optimized_metric}'"
        )
    check_choice("test_ckpt", cfg.test_ckpt, TestCkpt)
    check_selection(cfg)
    if cfg.test_ckpt == "best" and without_validation(cfg):
        raise ConfigError(
            "test_ckpt=best selects by validation accuracy, but data.val_fraction=0 leaves no "
            "validation data: use test_ckpt=last"
        )
    strategy = cfg.trainer.get("strategy")
    spawned = isinstance(strategy, DictConfig) and strategy.get("start_method") == "spawn"
    if spawned and "csv" in (cfg.get("logger") or {}):
        raise ConfigError(
            "trainer=ddp_spawn does not work with logger=csv (Lightning's CSV logger loses its "
            "header across the spawned processes): use logger=tensorboard or logger=wandb"
        )
    perf = cfg.get("perf") or {}
    if perf.get("cuda_graph") and str(cfg.trainer.get("precision")) in ("16-mixed", "16"):
        # the captured step drives the raw optimizers: no loss scaler, float16 gradients underflow
        raise ConfigError(
            f"perf.cuda_graph=true cannot train under trainer.precision="
            f"{cfg.trainer.precision} (float16 gradients need a loss scaler, which the captured "
            f"step does not have): use trainer.precision=bf16-mixed or 32-true, or "
            f"perf.cuda_graph=false"
        )
    limit = cfg.trainer.get("limit_train_batches")
    if isinstance(limit, int | float) and limit == 0:
        raise ConfigError(
            f"trainer.limit_train_batches={limit} trains nothing (the run would test its "
            f"initial weights and record them as trained): give a positive number of batches "
            f"or a fraction, or test a checkpoint with python -m lnl_lightning.eval ckpt_path=..."
        )
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is not None and max_epochs != -1 and max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs must be >= 1 (or -1: no limit), got {max_epochs}")
    resume_path(cfg)  # ckpt_path=last names a file
    check_devices(cfg.trainer)


def check_not_finished(cfg: DictConfig, checkpoint: Path) -> None:
    """Resuming a run in its own folder after it has finished trains nothing: say so, instead
    of testing it again and rewriting its ``metrics.json``."""
    folder = Path(cfg.paths.output_dir)
    summary = read_summary(folder) if (folder / METRICS_FILE).is_file() else None
    max_epochs = cfg.trainer.get("max_epochs")
    if summary is None or summary.is_evaluation or max_epochs in (None, -1):
        return
    if summary.epochs is not None and summary.epochs >= max_epochs:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: {folder} holds a finished run ({summary.epochs} "
            f"epochs, {folder / METRICS_FILE}), so there is nothing to resume: train it longer "
            f"with trainer.max_epochs > {summary.epochs}, or test it again with python -m "
            f"lnl_lightning.eval ckpt_path={checkpoint}"
        )


def describe_networks(cfg: DictConfig) -> str:
    """The method and feature extractor a config builds, for messages."""
    return f"model={cfg.method}, net of {cfg.net.feature_extractor._target_}"


def without_validation(cfg: DictConfig) -> bool:
    """``data.val_fraction=0``: all training images train (the official protocol), none validate."""
    return cfg.data.get("val_fraction") == 0


def check_devices(trainer_cfg: DictConfig) -> None:
    """``trainer.accelerator`` and ``trainer.devices`` against what this machine has."""
    import torch

    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    devices = trainer_cfg.get("devices", "auto")
    gpus = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator}, but no GPU is visible here "
            f"(torch.cuda.device_count() == 0): use trainer.accelerator=cpu or auto"
        )
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0):
        available, what = gpus, "GPU(s)"
    elif accelerator in ("cpu", "auto"):
        available, what = os.cpu_count() or 1, "CPU core(s) (one process per device)"
    else:
        return  # another accelerator: Lightning checks it
    wanted = len(devices) if isinstance(devices, ListConfig) else devices
    if isinstance(wanted, str) and wanted.lstrip("-").isdigit():
        wanted = int(wanted)
    if isinstance(wanted, int) and (wanted == 0 or wanted < -1 or wanted > available):
        raise ConfigError(
            f"trainer.devices={devices}: this machine has {available} {what}; give a number "
            f"from 1 to {available}, -1 or auto for all of them"
        )


def resume_path(cfg: DictConfig) -> Path | None:
    """``ckpt_path`` as a file; ``last`` means checkpoints/last.ckpt of this run's folder."""
    if not cfg.ckpt_path:
        return None
    if cfg.ckpt_path == "last":
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path=last: there is no {path}; give hydra.run.dir=<the run folder> "
                f"of the run to resume, or ckpt_path=<a checkpoint file>"
            )
        return path
    return Path(cfg.ckpt_path)
