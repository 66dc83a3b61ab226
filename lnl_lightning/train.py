"""Build everything from the config, fit, validate and test, and write each run's records.

One loop for one run or several trained as a pack (``perf.packed``, ``hydra/launcher=packed``):
:func:`train_runs`. A pack's members each get the folder, logs, checkpoints and records of an
ordinary run (:mod:`lnl_lightning.records.members`); the pack itself has a folder with its
Lightning checkpoint (for resuming) and the list of its members.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar

from lnl_lightning.config import build, unknown_setting
from lnl_lightning.data.contract import BiasSpec
from lnl_lightning.engine.callbacks import RunFolders, TrainThroughput
from lnl_lightning.engine.loggers import build_loggers, finish_loggers
from lnl_lightning.errors import ConfigError
from lnl_lightning.records.checkpoints import AtomicCheckpointIO, check_networks, load_checkpoint
from lnl_lightning.records.files import write_text_atomic
from lnl_lightning.records.folder import (
    CHECKPOINTS,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    METRICS_FILE,
    RunFolder,
    RunSummary,
    write_config,
    write_summary,
)
from lnl_lightning.records.identity import check_pack, logged_fields, packable
from lnl_lightning.run_checks import (
    check_config,
    describe_networks,
    resume_path,
    without_validation,
)
from lnl_lightning.selection import selection_rule

log = logging.getLogger(__name__)

__all__ = ["build_model", "build_networks", "check_config", "run", "train_runs"]


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


def describe_run(cfg: DictConfig, model: Any, folder: Path) -> str:
    """One line: what trains, the sizes of its networks and where its records go."""

    def size(name: str) -> str:
        count = sum(p.numel() for p in getattr(model, name).parameters())
        return f"{count / 1e6:.1f} M" if count >= 1e6 else f"{count / 1e3:.1f} K"

    nets = ", ".join(
        f"{short} {size(name)}"
        for short, name in (("f", "feature_extractor"), ("g", "label_head"), ("h", "bias_head"))
        if hasattr(model, name)
    )
    data = cfg.data._target_.rsplit(".", 1)[-1].removesuffix("DataModule")
    return f"Training {cfg.method} on {data}, {nets} parameters; records in {folder}"


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


def build_model(
    cfg: DictConfig,
    spec: BiasSpec,
    test_names: tuple[str, ...],
    val_names: tuple[str, ...] = ("val",),
) -> Any:
    """The method's module (``cfg.model``) over f, g, h from ``cfg.net``, evaluated on the
    data's validation and test splits (``val_names``, ``test_names``).

    Call after seeding: f, g, h are drawn first, then whatever the method builds itself
    (``make_networks`` builds more networks from the same ``net`` config, e.g. LfF's twin).
    """
    networks = build_networks(cfg.net, spec)
    try:
        return build(cfg.model, _partial_=True)(
            **networks,
            bias_spec=spec,
            test_names=test_names,
            val_names=val_names,
            make_networks=functools.partial(build_networks, cfg.net, spec),
        )
    except TypeError as err:
        unknown = unknown_setting(err, cfg.model)
        if unknown is None:
            raise
        raise unknown from None


def run(cfg: DictConfig, begin: Callable[[], None] | None = None) -> dict[str, float]:
    """Train and evaluate one configuration; return its final val and test metrics.

    With ``perf.packed`` it trains as a pack of one (batches built on the device), in
    ``<run folder>/pack``; a method that cannot pack trains as an ordinary run. ``begin`` is
    called once the checks have passed, before anything is written (by the first process).
    """
    if cfg.get("perf") and cfg.perf.packed:
        if packable(cfg):
            return train_runs([cfg], Path(cfg.paths.output_dir) / "pack", begin)[0]
        log.warning(
            "perf.packed trains LNL and baseline runs (model.step=official); %s trains as an "
            "ordinary run",
            cfg.method,
        )
    return train_runs([cfg], begin=begin)[0]


def train_runs(
    cfgs: Sequence[DictConfig],
    pack_dir: Path | None = None,
    begin: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """Train and evaluate ``cfgs`` (resolved job configs); return each run's final metrics.

    Without ``pack_dir``: one ordinary run. With it: the runs as one pack
    (:mod:`lnl_lightning.engine.packed`), its checkpoint and log in ``pack_dir``.
    Each run's folder (``paths.output_dir``) gets ``config_resolved.yaml``, logger files,
    ``checkpoints/``, ``samples_*.png``, ``group_acc_<split>.{csv,png}`` and ``metrics.json``.
    """
    started = time.time()
    cfgs, packed = list(cfgs), pack_dir is not None
    if not packed and len(cfgs) != 1:
        raise ValueError("several runs train together as a pack: give pack_dir")
    first = cfgs[0]
    if packed:
        check_pack(cfgs)
        for cfg in cfgs:  # resuming: from the pack's checkpoint, checked below
            check_config(OmegaConf.merge(cfg, {"ckpt_path": None}))
    else:
        check_config(first)

    datamodule, member_datamodules = build_data(cfgs, packed)
    model = build_members(cfgs, datamodule, packed)
    folders = [
        RunFolder(Path(cfg.paths.output_dir), cfg, [], dm)
        for cfg, dm in zip(cfgs, member_datamodules, strict=True)
    ]
    if packed:
        for folder in folders:
            folder.loggers = build_loggers(_own_wandb_run(folder.config))
        callbacks, ckpt_path = (
            pack_callbacks(first, folders, pack_dir),
            pack_resume(first, pack_dir),
        )
        trainer_cfg = OmegaConf.merge(first.trainer, {"default_root_dir": str(pack_dir)})
        loggers: list = []
    else:
        callbacks, ckpt_path = run_callbacks(first, folders), resume_path(first)
        if ckpt_path is not None:
            check_networks(
                load_checkpoint(ckpt_path, "ckpt_path"),
                model,
                ckpt_path,
                "ckpt_path",
                describe_networks(first),
            )
        trainer_cfg, loggers = first.trainer, build_loggers(first)
        folders[0].loggers = loggers
    trainer: pl.Trainer = build(
        trainer_cfg, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )

    if trainer.is_global_zero:
        if begin is not None:
            begin()
        for folder in folders:
            folder.path.mkdir(parents=True, exist_ok=True)
            write_config(folder.path, folder.config)
            for logger in folder.loggers:
                logger.log_hyperparams(OmegaConf.to_container(folder.config, resolve=True))
                pack = {"pack": str(pack_dir)} if packed else {}
                logger.log_hyperparams({**logged_fields(folder.config), **pack})
        if packed:
            pack_dir.mkdir(parents=True, exist_ok=True)
            members = "".join(f"{folder.path}\n" for folder in folders)
            write_text_atomic(pack_dir / "members.txt", members)
            log.info("Training %d runs as one pack in %s", len(cfgs), pack_dir)
        else:
            if first.print_config:
                print_config_tree(first)
            log.info("%s", describe_run(first, model, folders[0].path))

    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    clock = next((c for c in callbacks if isinstance(c, TrainThroughput)), None)
    rate = clock.last_rate if clock is not None else None

    # the final metrics: of the weights training ended with, or of the best by validation
    tested, ckpt = first.test_ckpt, None
    if tested == "best" and packed:
        load_best_members(model, [callbacks_best(callbacks, trainer, k) for k in range(len(cfgs))])
    elif tested == "best" and not one_epoch(first):
        ckpt = "best"  # (of one epoch, the weights training ended with: ckpt None)
    # verbose=False: the final metrics are logged once, by the module, not in tables too
    trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    final = [dict(results) for results in model.member_results]
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    for metrics, results in zip(final, model.member_results, strict=True):
        metrics.update(results)

    for k, (folder, metrics) in enumerate(zip(folders, final, strict=True)):
        if trainer.is_global_zero:
            member_rate = None if rate is None else round(rate, 1)
            summary = RunSummary(
                metrics=metrics,
                method=folder.config.method,
                task_name=folder.config.task_name,
                tested_weights=tested,
                best_checkpoint=callbacks_best(callbacks, trainer, k)
                or (
                    str(folder.path / CHECKPOINTS / LAST_CHECKPOINT)
                    if tested == "best" and one_epoch(first) and not packed
                    else None
                ),
                epochs=trainer.current_epoch,
                train_images_per_s=member_rate,
                global_step=trainer.global_step,
                step=trainer.fit_loop.epoch_loop._batches_that_stepped,
                wall_time_s=round(
                    clock.wall_time_s() if clock is not None else time.time() - started, 1
                ),
                config_path=str((folder.path / CONFIG_FILE).resolve()),
                selection=selection_rule(OmegaConf.to_container(folder.config, resolve=True)),
                pack=None
                if not packed
                else {
                    "folder": str(pack_dir.resolve()),
                    "members": len(cfgs),
                    "train_images_per_s": None if rate is None else round(rate, 1) * len(cfgs),
                },
            )
            write_summary(folder.path, summary)
            log.info("Metrics written to %s", folder.path / METRICS_FILE)
        if packed:
            for logger in folder.loggers:
                logger.finalize("success")
        finish_loggers(folder.loggers, metrics)
    if packed:
        log.info("Pack of %d runs done in %.0f s: %s", len(cfgs), time.time() - started, pack_dir)
    return final


def build_data(cfgs: list[DictConfig], packed: bool) -> tuple[Any, list[Any]]:
    """The datamodule the trainer reads, and each run's own (a pack's members read theirs,
    side by side; members with equal data settings share one)."""
    if not packed:
        datamodule = build(cfgs[0].data)
        return datamodule, [datamodule]
    from lnl_lightning.data.packed import PackedDataModule

    datamodules, member_data, index = [], [], {}
    for cfg in cfgs:
        key = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True)
        if key not in index:
            index[key] = len(datamodules)
            datamodules.append(build(cfg.data))
        member_data.append(index[key])
    seeds = [int(cfg.seed) for cfg in cfgs]
    packed_data = PackedDataModule(datamodules, member_data, seeds)
    return packed_data, [datamodules[i] for i in member_data]


def build_members(cfgs: list[DictConfig], datamodule: Any, packed: bool) -> Any:
    """Each run's module, built after its own seed (so it starts as it would alone); a pack's
    members packed into one module."""
    members = []
    for cfg in cfgs:
        pl.seed_everything(cfg.seed, workers=True)  # the seed, then f, g, h
        members.append(
            build_model(cfg, datamodule.bias_spec, datamodule.test_names, datamodule.val_names)
        )
    if not packed:
        return members[0]
    from lnl_lightning.engine.packed import pack_runs

    perf = cfgs[0].get("perf") or {}
    return pack_runs(members, cuda_graph=bool(perf.get("cuda_graph", False)))


def run_callbacks(cfg: DictConfig, folders: list[RunFolder]) -> list[pl.Callback]:
    """``cfg.callbacks``, built, for an ordinary run."""
    if cfg.callbacks.get("model_checkpoint") is not None and (
        without_validation(cfg) or one_epoch(cfg)
    ):
        # nothing to select by (the official protocol), or one candidate only (debug=fast):
        # last.ckpt holds the weights the best checkpoint would, written once
        cfg.callbacks.model_checkpoint = None
    callbacks = [build(node) for node in cfg.callbacks.values() if node is not None]
    if not cfg.trainer.get("enable_progress_bar", True):  # the flag alone turns the bar off
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return [RunFolders(folders), *callbacks]


def one_epoch(cfg: DictConfig) -> bool:
    """The run trains one epoch: its best weights by validation are its last."""
    return cfg.trainer.get("max_epochs") == 1


def pack_callbacks(cfg: DictConfig, folders: list[RunFolder], pack_dir: Path) -> list[pl.Callback]:
    """The members' ``callbacks`` for a pack: the checkpoint callbacks become the pack's own
    last checkpoint and each member's last and best ones (:class:`PackMembers`)."""
    from lnl_lightning.records.members import PackMembers

    selector = cfg.callbacks.get("model_checkpoint")
    monitor = None if selector is None or without_validation(cfg) else selector.get("monitor")
    members = PackMembers(
        folders,
        pack_dir,
        monitor=monitor,
        mode=selector.get("mode", "max") if selector is not None else "max",
    )
    if selector is not None and selector.get("filename"):
        members.filename = selector.filename
    callbacks: list[pl.Callback] = [members]
    for node in cfg.callbacks.values():
        if node is None:
            continue
        callback = build(node)
        if isinstance(callback, ModelCheckpoint):
            continue
        if isinstance(callback, ProgressBar) and not cfg.trainer.get("enable_progress_bar", True):
            continue
        callbacks.append(callback)
    if not any(isinstance(c, TrainThroughput) for c in callbacks):
        callbacks.append(TrainThroughput())  # the pack's images/s, in each member's summary
    last = ModelCheckpoint(
        dirpath=pack_dir / CHECKPOINTS,
        filename=LAST_CHECKPOINT.removesuffix(".ckpt"),
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    return [*callbacks, last]


def pack_resume(cfg: DictConfig, pack_dir: Path) -> Path | None:
    """A pack resumes (``ckpt_path`` set) from its own ``checkpoints/last.ckpt`` only."""
    if not cfg.ckpt_path:
        return None
    path = pack_dir / CHECKPOINTS / LAST_CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"ckpt_path: a packed run resumes from its pack's {path}, not found")
    return path


def load_best_members(model: Any, paths: list[str | None]) -> None:
    """A pack's ``test_ckpt=best``: each member's best checkpoint into its slice of the pack."""
    from lnl_lightning.engine.packed import load_member_weights

    model.trainer.strategy.barrier()  # every member's best is written
    for k, path in enumerate(paths):
        if path is None:
            raise ConfigError(
                f"test_ckpt=best: {model.members[k].method} member {k} of the pack has no best "
                "checkpoint (its validation metric was never computed); use test_ckpt=last"
            )
        state = load_checkpoint(Path(path), "test_ckpt")["state_dict"]
        load_member_weights(model, k, state)


def callbacks_best(callbacks: list[pl.Callback], trainer: pl.Trainer, k: int) -> str | None:
    """Run ``k``'s checkpoint selected by validation (None without one: last.ckpt selects
    nothing)."""
    from lnl_lightning.records.members import PackMembers

    for callback in callbacks:
        if isinstance(callback, PackMembers):
            return callback.best_checkpoint(k)
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None) is not None:
            return getattr(callback, "best_model_path", None) or None
    return None


def _own_wandb_run(cfg: DictConfig) -> DictConfig:
    """W&B: one run per member in one process (``reinit="create_new"``)."""
    if "wandb" not in (cfg.get("logger") or {}):
        return cfg
    cfg = cfg.copy()
    OmegaConf.update(cfg, "logger.wandb.reinit", "create_new", force_add=True)
    return cfg
