"""Build everything from the config, fit, validate and test, and write metrics.json."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar

from lnl_lightning.checkpoints import (
    AtomicCheckpointIO,
    check_fits,
    check_networks,
    load_checkpoint,
)
from lnl_lightning.config import build, unknown_setting
from lnl_lightning.data.contract import BiasSpec
from lnl_lightning.data.mnist_colors import describe_data
from lnl_lightning.errors import ConfigError
from lnl_lightning.files import METRICS_FILE, write_text_atomic
from lnl_lightning.identity import check_same_run
from lnl_lightning.loggers import build_loggers, finish_loggers
from lnl_lightning.recipe_checks import check_recipe

log = logging.getLogger(__name__)

TEST_CKPT_CHOICES = ("last", "best")


def print_config_tree(cfg: DictConfig) -> None:
    """Print the resolved config as a rich tree, one branch per top-level group."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("config", guide_style="dim")
    for key, value in cfg.items():
        branch = tree.add(str(key), guide_style="dim")
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)


NETS_FOR_TARGET = {
    "pixel": "net=colored_mnist (28x28 Colored MNIST) or net=resnet18_color",
    "image": "net=resnet18",
}


def build_networks(net_cfg: DictConfig, spec: BiasSpec) -> dict[str, Any]:
    """f, g and h from ``cfg.net``; the heads' class counts come from the datamodule's spec.

    h must predict what the data's bias target is (``BiasSpec.target_kind``): checked here,
    before any work, rather than found as a shape error in the first step.
    """
    feature_extractor = build(net_cfg.feature_extractor)  # in this order: the seed's draws
    label_head = build(net_cfg.label_head, num_classes=spec.num_classes)
    bias_head = build(net_cfg.bias_head, num_classes=spec.num_bias_classes)
    kind = getattr(bias_head, "target_kind", None)
    if kind is not None and kind != spec.target_kind:
        what = {"pixel": "a per-pixel colour-bin map", "image": "one bias class per image"}
        raise ConfigError(
            f"net.bias_head ({type(bias_head).__name__}) predicts {what[kind]}, but the data "
            f"gives {what[spec.target_kind]}: use {NETS_FOR_TARGET[spec.target_kind]}"
        )
    return {
        "feature_extractor": feature_extractor,
        "label_head": label_head,
        "bias_head": bias_head,
    }


def build_model(cfg: DictConfig, spec: BiasSpec, test_names: tuple[str, ...]) -> Any:
    """The method's module (``cfg.model``) over f, g, h from ``cfg.net``.

    Call after seeding: f, g, h are drawn first, then whatever the method builds itself
    (``make_networks`` builds more networks from the same ``net`` config, e.g. LfF's twin).
    """
    networks = build_networks(cfg.net, spec)
    try:
        return build(cfg.model, _partial_=True)(
            **networks,
            bias_spec=spec,
            test_names=test_names,
            make_networks=functools.partial(build_networks, cfg.net, spec),
        )
    except TypeError as err:
        unknown = unknown_setting(err, cfg.model)
        if unknown is None:
            raise
        raise unknown from None


def check_config(cfg: DictConfig) -> None:
    """Checks on top-level keys that no component owns, made before any work."""
    check_recipe(cfg)
    if not str(cfg.optimized_metric).startswith(("val/", "train/")):
        raise ConfigError(
            f"optimized_metric must be a val/... (or train/...) metric, never a test one, "
            f"got '{cfg.optimized_metric}'"
        )
    if cfg.test_ckpt not in TEST_CKPT_CHOICES:
        raise ConfigError(f"test_ckpt must be one of {TEST_CKPT_CHOICES}, got '{cfg.test_ckpt}'")
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
    check_devices(cfg.trainer)
    perf = cfg.get("perf") or {}
    if perf.get("cuda_graph") and str(cfg.trainer.get("precision")) in ("16-mixed", "16"):
        # the captured step drives the raw optimizers: no loss scaler, float16 gradients underflow
        raise ConfigError(
            f"perf.cuda_graph=true cannot train under trainer.precision="
            f"{cfg.trainer.precision} (float16 gradients need a loss scaler, which the captured "
            f"step does not have): use trainer.precision=bf16-mixed or 32-true, or "
            f"perf.cuda_graph=false"
        )
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is not None and max_epochs != -1 and max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs must be >= 1 (or -1: no limit), got {max_epochs}")
    if cfg.ckpt_path:
        path = resume_path(cfg)
        check_fits(load_checkpoint(path, "ckpt_path"), cfg.method, path, "ckpt_path", resume=True)
    check_same_run(cfg, Path(cfg.paths.output_dir))


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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; return the final val and test metrics.

    Writes into ``cfg.paths.output_dir``: ``config_resolved.yaml``, ``checkpoints/``,
    logger files and ``metrics.json`` (callbacks add the accuracy matrices and samples).
    """
    if cfg.get("perf") and cfg.perf.packed:  # perf=fast: this run as a pack of one
        from lnl_lightning.packed_train import packable, run_packed

        if packable(cfg):
            return run_packed([cfg], Path(cfg.paths.output_dir) / "pack")[0]
        log.warning(
            "perf.packed trains LNL and baseline runs (model.step=official); %s trains as an "
            "ordinary run",
            cfg.method,
        )
    started = time.time()
    check_config(cfg)
    out_dir = Path(cfg.paths.output_dir)

    datamodule = build(cfg.data)
    pl.seed_everything(cfg.seed, workers=True)
    model = build_model(cfg, datamodule.bias_spec, datamodule.test_names)
    if cfg.ckpt_path:
        path = resume_path(cfg)
        check_networks(
            load_checkpoint(path, "ckpt_path"), model, path, "ckpt_path", describe_networks(cfg)
        )
    if without_validation(cfg) and cfg.callbacks.get("model_checkpoint") is not None:
        # nothing to select by: last.ckpt holds the last epoch's weights (the official protocol)
        cfg.callbacks.model_checkpoint = None
    callbacks = [build(node) for node in cfg.callbacks.values() if node is not None]
    if not cfg.trainer.get("enable_progress_bar", True):  # the flag alone turns the bar off
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = build_loggers(cfg)
    trainer: pl.Trainer = build(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )

    config_path = out_dir / "config_resolved.yaml"
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(config_path, OmegaConf.to_yaml(cfg, resolve=True))
        if cfg.print_config:
            print_config_tree(cfg)
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
            logger.log_hyperparams(run_fields(cfg))  # top level, for grouping and filtering

    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_path(cfg))
    throughput = _last_throughput(trainer)  # before validate/test replace the logged values

    ckpt = "best" if cfg.test_ckpt == "best" else None  # None: the weights as training left them
    metrics: dict[str, float] = {}
    for result in (
        # verbose=False: the final metrics are logged once, by the module, not in tables too
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False),
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False),
    ):
        metrics.update({k: float(v) for k, v in result[0].items()})

    if trainer.is_global_zero:
        summary = {
            "metrics": dict(sorted(metrics.items())),
            "method": cfg.method,
            "task_name": cfg.task_name,
            "tested_weights": cfg.test_ckpt,
            "best_checkpoint": _best_checkpoint(trainer),
            "epochs": trainer.current_epoch,
            "train_images_per_s": throughput,
            "global_step": trainer.global_step,
            "wall_time_s": round(time.time() - started, 1),
            "config_path": str(config_path.resolve()),
        }
        write_text_atomic(out_dir / METRICS_FILE, json.dumps(summary, indent=2) + "\n")
        log.info("Metrics written to %s", out_dir / METRICS_FILE)
    finish_loggers(loggers, metrics)
    return metrics


def run_fields(cfg: DictConfig) -> dict[str, Any]:
    """The fields a study is grouped and filtered by, as top-level logger config."""
    return {
        "method": cfg.method,
        "lambda": cfg.model.get("lambda_"),
        "mu": cfg.model.get("mu"),
        "color_var": cfg.data.get("color_var"),
        "data": describe_data(cfg.data) if cfg.data.get("color_var") is not None else None,
        "seed": cfg.seed,
        "study": cfg.task_name,
    }


def _last_throughput(trainer: pl.Trainer) -> float | None:
    value = trainer.callback_metrics.get("train/images_per_s")
    return None if value is None else round(float(value), 1)


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The checkpoint selected by validation (None without one: last.ckpt selects nothing)."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None) is not None:
            return getattr(callback, "best_model_path", None) or None
    return None
