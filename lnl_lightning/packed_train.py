"""Train several runs as one pack (:mod:`lnl_lightning.models.packing`), each an ordinary run.

A sweep over sigma^2, seeds, lambda or mu on Colored MNIST trains K networks that differ only
in numbers; packed, they train in one process as one K-times-wider network, which on a GPU
costs little more than one of them. Each member still is an ordinary run: its config is
composed by Hydra as its own job's, it starts from the weights its own run would start from,
and it gets its own run folder with ``config_resolved.yaml``, logger files (per-epoch CSV,
W&B run), ``group_acc_<split>.{csv,png}``, ``checkpoints/last.ckpt`` (the format
``model.init_from`` reads) and ``metrics.json``, so sweeps, reports and warm starts see no
difference. The pack itself has a folder with its Lightning checkpoint (for resuming) and log.

Used by the ``hydra/launcher=packed`` launcher; :func:`pack_key` says which jobs can share a
pack.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.loggers import Logger, WandbLogger

from lnl_lightning.callbacks import CheckpointOnInterrupt, TrainThroughput
from lnl_lightning.checkpoints import AtomicCheckpointIO
from lnl_lightning.config import build
from lnl_lightning.data.packed import PackedDataModule
from lnl_lightning.errors import ConfigError
from lnl_lightning.figures import save_group_matrix
from lnl_lightning.files import METRICS_FILE, write_atomic, write_text_atomic
from lnl_lightning.loggers import build_loggers, finish_loggers, log_group_matrix
from lnl_lightning.models.base_module import DebiasModule
from lnl_lightning.models.packed_runs import pack_runs, unpack_runs
from lnl_lightning.train import build_model, check_config, run_fields

log = logging.getLogger(__name__)

# What may differ between the members of one pack: the rest of their configs must be equal.
MEMBER_KEYS = (
    "seed",
    "method",
    "tags",
    "data.color_var",
    "data.seed",
    "data.rho",
    "data.palette",
    "data.protocol",
    "data.data_dir",
    "model.lambda_",
    "model.mu",
    "model.init_from",
    "paths",
    "logger",
    "callbacks",
    "trainer.default_root_dir",
)


PACKABLE_MODEL = "lnl_lightning.models.lnl_module.LNLModule"


def packable(cfg: DictConfig) -> bool:
    """Packs hold LNL and baseline runs (their official step); other methods train alone."""
    return cfg.model.get("_target_") == PACKABLE_MODEL and cfg.model.get("step") == "official"


def pack_key(cfg: DictConfig) -> str:
    """Jobs with the same key can train in one pack (everything but :data:`MEMBER_KEYS`)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in MEMBER_KEYS:
        *parents, last = key.split(".")
        node = container
        for parent in parents:
            node = node.get(parent) or {}
        if isinstance(node, dict):
            node.pop(last, None)
    model = cfg.model
    # a pack holds baselines or LNL runs, with or without the entropy term, warm or not
    container["pack"] = {
        "unlearn": float(model.get("mu", 0)) > 0,
        "entropy": float(model.get("lambda_", 0)) > 0,
        "warm": bool(model.get("init_from")),
    }
    return json.dumps(container, sort_keys=True, default=str)


def check_pack(cfgs: Sequence[DictConfig]) -> None:
    """Refuse configs that cannot train as one pack, naming the first key that differs."""
    keys = [json.loads(pack_key(cfg)) for cfg in cfgs]
    for cfg, key in zip(cfgs[1:], keys[1:], strict=True):
        if key != keys[0]:
            where = _first_difference(keys[0], key)
            raise ConfigError(
                f"runs in one pack may differ only in seed, data (color_var, seed, rho, palette, "
                f"protocol), model.lambda_, model.mu and model.init_from; "
                f"{cfg.paths.output_dir} differs from {cfgs[0].paths.output_dir} in '{where}'"
            )
    for cfg in cfgs:
        if cfg.test_ckpt != "last":
            raise ConfigError("packed runs test the weights training ends with: test_ckpt=last")


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".")


def run_packed(cfgs: Sequence[DictConfig], pack_dir: Path) -> list[dict[str, float]]:
    """Train ``cfgs`` (resolved job configs) as one pack; return each member's final metrics."""
    started = time.time()
    check_pack(cfgs)
    for cfg in cfgs:  # resuming: from the pack's checkpoint, checked below
        check_config(OmegaConf.merge(cfg, {"ckpt_path": None}))
    first = cfgs[0]

    # One datamodule per distinct dataset; each member reads its own.
    datamodules, member_data, data_index = [], [], {}
    for cfg in cfgs:
        key = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True)
        if key not in data_index:
            data_index[key] = len(datamodules)
            datamodules.append(build(cfg.data))
        member_data.append(data_index[key])
    spec = datamodules[0].bias_spec
    members = []
    for cfg in cfgs:
        pl.seed_everything(cfg.seed)  # as its own run: the seed, then f, g, h
        members.append(build_model(cfg, spec, datamodules[0].test_names))
    datamodule = PackedDataModule(datamodules, member_data, [int(cfg.seed) for cfg in cfgs])
    perf = first.get("perf") or {}
    pack = pack_runs(members, cuda_graph=bool(perf.get("cuda_graph", False)))
    member_dirs = [Path(cfg.paths.output_dir) for cfg in cfgs]
    member_loggers = [build_loggers(_own_wandb_run(cfg)) for cfg in cfgs]
    for cfg, out_dir, loggers in zip(cfgs, member_dirs, member_loggers, strict=True):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
            logger.log_hyperparams({**run_fields(cfg), "pack": str(pack_dir)})
    pack_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(pack_dir / "members.txt", "".join(f"{d}\n" for d in member_dirs))
    log.info("Training %d runs as one pack in %s", len(cfgs), pack_dir)

    throughput = TrainThroughput()
    writer = MemberRuns(member_loggers, throughput, member_dirs, pack_dir)
    trainer_cfg = OmegaConf.merge(first.trainer, {"default_root_dir": str(pack_dir)})
    callbacks: list[pl.Callback] = [
        throughput,
        writer,
        ModelCheckpoint(dirpath=pack_dir / "checkpoints", save_last=True, save_top_k=0),
        CheckpointOnInterrupt(),
    ]
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(
            RichProgressBar(refresh_rate=max(1, int(trainer_cfg.get("log_every_n_steps", 50))))
        )
    trainer: pl.Trainer = build(
        trainer_cfg, callbacks=callbacks, logger=False, plugins=[AtomicCheckpointIO()]
    )
    resume = pack_dir / "checkpoints" / "last.ckpt"
    resume_from = resume if first.ckpt_path and resume.is_file() else None
    if first.ckpt_path and resume_from is None:
        raise ConfigError(f"ckpt_path: a packed run resumes from its pack's {resume}, not found")
    trainer.fit(pack, datamodule=datamodule, ckpt_path=resume_from)

    trainer.validate(pack, datamodule=datamodule)
    final = [dict(r) for r in pack.member_results]
    counts = [dict(c) for c in pack.member_counts]
    trainer.test(pack, datamodule=datamodule)
    for k in range(len(cfgs)):
        final[k].update(pack.member_results[k])
        counts[k].update(pack.member_counts[k])

    results = []
    # each member's checkpoints/last.ckpt was written at the end of each epoch (MemberRuns)
    for k, (cfg, out_dir) in enumerate(zip(cfgs, member_dirs, strict=True)):
        for stage, (correct, total) in counts[k].items():
            csv_path, png_path = save_group_matrix(
                correct,
                total,
                out_dir,
                f"group_acc_{stage}",
                spec.class_names,
                spec.group_names,
                title=f"{stage} accuracy per (label, bias group)",
            )
            log_group_matrix(member_loggers[k], stage, csv_path, png_path)
        writer.write(k, {**final[k], "epoch": trainer.current_epoch}, trainer.global_step)
        rate = throughput.last_rate
        member_rate = None if rate is None else round(rate, 1)
        summary = {
            "metrics": dict(sorted(final[k].items())),
            "method": cfg.method,
            "task_name": cfg.task_name,
            "tested_weights": "last",
            "best_checkpoint": None,
            "epochs": trainer.current_epoch,
            "train_images_per_s": member_rate,
            "global_step": trainer.global_step,
            "wall_time_s": round(time.time() - started, 1),
            "config_path": str((out_dir / "config_resolved.yaml").resolve()),
            "pack": {
                "folder": str(pack_dir.resolve()),
                "members": len(cfgs),
                "train_images_per_s": None if member_rate is None else member_rate * len(cfgs),
            },
        }
        write_text_atomic(out_dir / METRICS_FILE, json.dumps(summary, indent=2) + "\n")
        for logger in member_loggers[k]:
            logger.finalize("success")
        finish_loggers(member_loggers[k], final[k])
        results.append(final[k])
    log.info("Pack of %d runs done in %.0f s: %s", len(cfgs), time.time() - started, pack_dir)
    return results


def _own_wandb_run(cfg: DictConfig) -> DictConfig:
    """W&B: one run per member in one process (``reinit="create_new"``)."""
    if "wandb" not in (cfg.get("logger") or {}):
        return cfg
    cfg = cfg.copy()
    OmegaConf.update(cfg, "logger.wandb.reinit", "create_new", force_add=True)
    return cfg


def _save_member_checkpoint(member: Any, trainer: pl.Trainer, path: Path, pack_dir: Path) -> None:
    """The member's weights and optimizer states, in the layout of an ordinary run's checkpoint."""
    checkpoint = {
        "state_dict": member.state_dict(),
        "optimizer_states": member.packed_optimizer_states,
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "pytorch-lightning_version": pl.__version__,
        "packed_from": str(pack_dir),
    }
    write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))


class MemberRuns(pl.Callback):
    """After each training epoch (and its validation), each member's metrics to its loggers
    and its weights to its ``checkpoints/last.ckpt``, so a run cut short (a time limit, a
    kill) still leaves each member's last finished epoch, ready to warm-start from."""

    def __init__(
        self,
        member_loggers: list[list[Logger]],
        throughput: TrainThroughput,
        member_dirs: list[Path],
        pack_dir: Path,
    ) -> None:
        self.member_loggers, self.throughput = member_loggers, throughput
        self.member_dirs, self.pack_dir = member_dirs, pack_dir

    def write(self, k: int, metrics: dict[str, float], step: int) -> None:
        for logger in self.member_loggers[k]:
            logger.log_metrics(metrics, step=step)
            if not isinstance(logger, WandbLogger):
                logger.save()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: DebiasModule) -> None:
        # after this epoch's validation, as in an ordinary run's logs: one row per epoch
        validated = pl_module.results_epoch == trainer.current_epoch
        for k, train_metrics in enumerate(pl_module.train_metrics()):
            metrics = {**train_metrics, **(pl_module.member_results[k] if validated else {})}
            if self.throughput.last_rate is not None:
                metrics["train/images_per_s"] = self.throughput.last_rate
            self.write(k, {**metrics, "epoch": trainer.current_epoch}, trainer.global_step)
        pl_module._stop_if_diverged()  # never a member's NaN weights over its last checkpoint
        for member, out_dir in zip(unpack_runs(pl_module), self.member_dirs, strict=True):
            path = out_dir / "checkpoints" / "last.ckpt"
            _save_member_checkpoint(member, trainer, path, self.pack_dir)
