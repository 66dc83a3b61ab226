"""``python -m lnl_lightning.eval ckpt_path=<checkpoint> [overrides]``: test without training.

Builds the data, networks and method from the config (as ``python -m lnl_lightning`` would),
loads the checkpoint's weights and writes, into the run folder, ``metrics.json`` with the
validation and test metrics, ``config_resolved.yaml`` and the label x bias accuracy
matrices ``group_acc_<split>.{csv,png}``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from lnl_lightning.config import CONFIG_MODULE
from lnl_lightning.errors import ConfigError, DataError
from lnl_lightning.records.folder import (
    CONFIG_FILE,
    EVALUATION,
    METRICS_FILE,
    CommandRecord,
    RunSummary,
    begin_records,
    discard_refused,
    is_empty_folder,
    load_config,
    write_config,
    write_summary,
)
from lnl_lightning.streams import survive_broken_pipes

log = logging.getLogger("lnl_lightning")


def evaluate(cfg: DictConfig, command: CommandRecord | None = None) -> dict[str, float]:
    """Validate and test ``cfg.ckpt_path`` on ``cfg``'s data; return the metrics.

    ``command`` (the Hydra job's) goes into the folder's ``.hydra/`` once the checks pass."""
    import pytorch_lightning as pl

    from lnl_lightning.config import build
    from lnl_lightning.engine.loggers import build_loggers, finish_loggers
    from lnl_lightning.records.checkpoints import check_fits, check_networks, load_checkpoint
    from lnl_lightning.run_checks import check_devices, describe_networks, without_validation
    from lnl_lightning.train import build_model

    checkpoint = checkpoint_named(cfg)
    saved = load_checkpoint(checkpoint, "ckpt_path")  # a clear error for a damaged file
    check_fits(saved, cfg.method, checkpoint, "ckpt_path", resume=False)
    check_devices(cfg.trainer)
    if cfg.model.get("init_from"):  # a warm start's source: the checkpoint holds every weight
        with open_dict(cfg):
            cfg.model.init_from = None
    out_dir = Path(cfg.paths.output_dir)
    datamodule = build(cfg.data)
    pl.seed_everything(cfg.seed, workers=True)
    model = build_model(cfg, datamodule.bias_spec, datamodule.test_names, datamodule.val_names)
    check_networks(saved, model, checkpoint, "ckpt_path", describe_networks(cfg))
    callbacks = [build(cfg.callbacks.group_matrix)] if cfg.callbacks.get("group_matrix") else []
    loggers = build_loggers(cfg)
    trainer: pl.Trainer = build(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, enable_progress_bar=False
    )
    if trainer.is_global_zero:
        begin_records(out_dir, command)
        write_config(out_dir, cfg)
    metrics: dict[str, float] = {}
    runs = [] if without_validation(cfg) else [trainer.validate]
    for step in (*runs, trainer.test):
        result = step(model, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False)
        metrics.update({k: float(v) for k, v in result[0].items()})
    if trainer.is_global_zero:
        summary = RunSummary(
            metrics=metrics,
            kind=EVALUATION,  # the report leaves it out: it trained nothing
            method=cfg.method,
            task_name=cfg.task_name,
            tested_weights=str(checkpoint.resolve()),
            epochs=trainer.current_epoch,
            config_path=str((out_dir / CONFIG_FILE).resolve()),
        )
        write_summary(out_dir, summary)
        log.info("Metrics written to %s", out_dir / METRICS_FILE)
    finish_loggers(loggers, metrics)
    return metrics


def checkpoint_named(cfg: DictConfig) -> Path:
    """The file ``ckpt_path`` names, or the error saying it is missing (no torch needed)."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError(
            "ckpt_path=<checkpoint file> is required: the checkpoint to evaluate, e.g. a run's "
            "checkpoints/last.ckpt"
        )
    checkpoint = Path(str(cfg.ckpt_path)).expanduser()
    if not checkpoint.is_file():
        raise ConfigError(f"ckpt_path must be a checkpoint file, but {checkpoint} does not exist")
    return checkpoint


# Keys that are the evaluation's own, never the training run's: where it writes, what it tests.
EVAL_OWN = ("ckpt_path", "task_name", "paths", "print_config", "optimized_metric", "test_ckpt")


def run_config(composed: DictConfig, overrides: list[str]) -> DictConfig:
    """The config to evaluate ``composed.ckpt_path`` with: its run folder's
    ``config_resolved.yaml`` (as it trained), then what the command line gave on top (a key,
    or a whole group such as ``data=...``) and the evaluation's own keys. With
    ``experiment=...`` on the command line, or no run folder beside the checkpoint: the
    composed config alone, as given."""
    if OmegaConf.is_missing(composed, "ckpt_path") or not composed.ckpt_path:
        return composed
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    recorded = Path(str(composed.ckpt_path)).expanduser().parent.parent / CONFIG_FILE
    if "experiment" in keys or not recorded.is_file():
        return composed
    try:
        cfg = load_config(recorded)
    except Exception as err:  # noqa: BLE001 - any unreadable record: say which file
        raise ConfigError(
            f"ckpt_path: the run's {recorded} is not a readable config ({err}); give the "
            f"experiment it trained with (experiment=...)"
        ) from err
    trained_in = OmegaConf.select(cfg, "paths.output_dir")
    if trained_in:  # the resolved folders (loggers, checkpoints) follow the evaluation's own
        cfg = OmegaConf.create(
            moved(OmegaConf.to_container(cfg), str(trained_in), str(composed.paths.output_dir))
        )
    OmegaConf.set_struct(cfg, False)
    for key in (*EVAL_OWN, *keys):
        value = OmegaConf.select(composed, key, throw_on_missing=False)
        if key.startswith("hydra") or (value is None and key not in EVAL_OWN):
            continue
        OmegaConf.update(
            cfg,
            key,
            OmegaConf.to_container(value, resolve=True)
            if isinstance(value, DictConfig | ListConfig)
            else value,
            merge=False,
        )
    log.info("Evaluating with the run's config, %s, and the command line's overrides", recorded)
    return cfg


def moved(node: Any, old: str, new: str) -> Any:
    """``node`` with every path below the folder ``old`` rewritten below ``new``: the recorded
    config is resolved, so the run's logger, trainer and checkpoint folders are written out."""
    if isinstance(node, dict):
        return {key: moved(value, old, new) for key, value in node.items()}
    if isinstance(node, list):
        return [moved(value, old, new) for value in node]
    root = old.rstrip("/")
    if isinstance(node, str) and (node == root or node.startswith(root + "/")):
        return new.rstrip("/") + node[len(root) :]
    return node


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="eval")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    out_dir = Path(cfg.paths.output_dir)
    new_folder = is_empty_folder(out_dir)
    try:
        checkpoint_named(cfg)  # the usual mistake, refused before torch is imported
        import pytorch_lightning  # noqa: F401 - sets its loggers' levels, which the next line lowers

        from lnl_lightning.quiet import quiet_libraries

        quiet_libraries(HydraConfig.get().verbose)
        overrides = list(HydraConfig.get().overrides.task)
        evaluate(run_config(cfg, overrides), CommandRecord.capture(cfg))
    except (ConfigError, DataError) as err:
        if new_folder:
            discard_refused(out_dir)  # a refused evaluation leaves no folder behind
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    survive_broken_pipes()
    main()


if __name__ == "__main__":
    cli()
