"""What identifies a run, what the report groups it by, and which runs may share a pack.

- :func:`run_identity`: every setting of its resolved config that changes its result. The
  report averages as seeds only runs whose identities are equal but for ``seed``; a resume
  (``ckpt_path``) is refused into a folder whose run has another identity. A setting is part
  of the identity unless listed here as one that does not change what is trained and
  measured: where files are, how progress is logged, how fast it runs.
- :func:`run_fields`: the few of them a study is grouped and filtered by (the report's
  columns, the loggers' top-level config).
- :func:`pack_key`: runs with equal keys can train as one pack (:data:`MEMBER_KEYS` may differ).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from lnl_lightning.data.mnist_colors import describe_data
from lnl_lightning.errors import ConfigError
from lnl_lightning.records.folder import CONFIG_FILE, load_config
from lnl_lightning.selection import identity_of, selection_rule

# dotted keys (or prefixes of them) that do not change a run's result
NOT_IDENTIFYING = (
    "paths",
    "hydra",
    "logger",
    "callbacks",
    "tags",
    "ckpt_path",
    "print_config",
    "optimized_metric",  # with test_ckpt and selection: the rule, one key of its own (below)
    "test_ckpt",
    "selection",
    "perf",  # speed options, tested to train the same run
    "trainer.accelerator",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
    "trainer.max_time",
    "data.data_dir",
    "data.arrays_dir",
    "data.cache_dir",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.test_each_epoch",  # test metrics logged for the curves, never used in training
    "model.display",  # how reports draw the method
)
# keys added after runs were recorded, with the value that means what a record without the key
# meant: a key at that value is left out of an identity, so older runs compare equal to new ones
ADDED_KEYS = {"data.val_colors": "train"}
# what a resumed run may change: train for longer than first asked
MAY_CHANGE_ON_RESUME = ("trainer.max_epochs", "trainer.max_steps")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` of a nested mapping; lists and empty mappings stay values."""
    if not isinstance(tree, Mapping) or not tree:
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


def _listed(key: str, keys: tuple[str, ...]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def run_identity(config: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The identifying settings of a resolved config, as ``{dotted key: value}``.

    A warm start is identified by its being one (``model.init_from`` becomes ``warm``), not by
    where its checkpoint lies.
    """
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    flat = flatten(config)
    identity = {
        k: v
        for k, v in flat.items()
        if not _listed(k, NOT_IDENTIFYING) and (k not in ADDED_KEYS or ADDED_KEYS[k] != v)
    }
    identity["selection"] = identity_of(selection_rule(config))
    if "model.init_from" in identity:
        identity["model.init_from"] = "warm" if identity["model.init_from"] else None
    return identity


def differences(
    a: Mapping[str, Any], b: Mapping[str, Any], skip: tuple[str, ...] = ()
) -> list[str]:
    """``key: a_value -> b_value`` for each key whose value differs, ``skip`` left out."""
    keys = sorted(set(a) | set(b))
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in keys
        if a.get(k) != b.get(k) and not _listed(k, skip)
    ]


def check_same_run(cfg: DictConfig, folder: Path) -> None:
    """Refuse to run ``cfg`` in ``folder`` when it holds a run of another identity (its records
    would be overwritten by another config's); training longer is allowed on resume."""
    recorded = folder / CONFIG_FILE
    if not recorded.is_file():
        return
    try:
        earlier = run_identity(load_config(recorded))
    except Exception as err:  # noqa: BLE001 - any unreadable record: say which file
        raise ConfigError(f"hydra.run.dir: {recorded} is not a readable config ({err})") from err
    changed = differences(earlier, run_identity(cfg), skip=MAY_CHANGE_ON_RESUME)
    if changed:
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise ConfigError(
            f"hydra.run.dir: {folder} holds a run of another config ({'; '.join(changed[:5])}"
            f"{more}); its records would be overwritten: give the overrides it was run with "
            f"(its config_resolved.yaml) to continue it, or another hydra.run.dir"
        )


# The fields that tell configurations of a study apart (the seed is what repeats within one).
KEY_FIELDS = (
    "task_name",
    "method",
    "step",
    "lambda",
    "mu",
    "color_var",
    "data",
    "rho",
    "train_split",
    "task",
    "settings",
    "start",
    "epochs",
)
# model.* keys that are not a method's own settings: the shared recipe, and what has a field
NOT_SETTINGS = {
    "_target_",
    "method",
    "display",
    "lambda_",
    "mu",
    "step",
    "optimizer",
    "scheduler",
    "init_from",
    "warm_start_lr",
}


def run_fields(config: Any, summary: Any = None) -> dict[str, Any]:
    """:data:`KEY_FIELDS` and the seed of a run, from its resolved config (and, once it is
    done, its :class:`~lnl_lightning.records.folder.RunSummary`, which says how long it trained)."""

    def get(key: str) -> Any:
        return OmegaConf.select(config, key, default=None) if config is not None else None

    rebias = get("data.protocol") == "rebias"
    model = get("model")
    own = {k: v for k, v in (model or {}).items() if k not in NOT_SETTINGS}
    return {
        "task_name": getattr(summary, "task_name", None) or get("task_name"),
        "method": getattr(summary, "method", None) or get("method"),
        "lambda": get("model.lambda_"),
        "mu": get("model.mu"),
        "step": get("model.step"),
        "color_var": None if rebias else get("data.color_var"),
        "data": None if rebias or get("data.color_var") is None else describe_data(get("data")),
        "rho": get("data.rho") if rebias else None,
        "train_split": get("data.train_split"),
        "task": get("data.task"),
        "settings": " ".join(f"{k}={v}" for k, v in sorted(own.items())) or None,
        "start": "warm" if get("model.init_from") else "scratch",
        "epochs": getattr(summary, "epochs", None),
        "seed": get("seed"),
    }


def logged_fields(cfg: DictConfig) -> dict[str, Any]:
    """:func:`run_fields` as a logger's top-level config (W&B filters and groups by them);
    ``study`` is the task name."""
    fields = run_fields(cfg)
    fields.pop("epochs")
    return {**fields, "study": cfg.task_name}


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
    "model.lambda_",  # LNL's member_settings: one value per member in a pack
    "model.mu",
    "model.init_from",
    "paths",
    "logger",
    "callbacks",
    "trainer.default_root_dir",
)


def _method_class(cfg: DictConfig) -> Any:
    target = (cfg.get("model") or {}).get("_target_")
    if not target:
        return None
    try:
        return get_class(str(target))
    except Exception:  # noqa: BLE001 - not a class: building the run says what is wrong
        return None


def packable(cfg: DictConfig) -> bool:
    """Whether ``cfg.model``'s method trains as a pack (its module's ``can_pack``)."""
    can_pack = getattr(_method_class(cfg), "can_pack", None)
    return bool(can_pack and can_pack(cfg.model))


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


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".")
