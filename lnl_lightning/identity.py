"""What identifies a run: every setting of its resolved config that changes its result.

The report averages as seeds only runs whose identities are equal but for ``seed``; a resume
(``ckpt_path``) is refused into a folder whose run has another identity. A setting is part of
the identity unless listed here as one that does not change what is trained and measured:
where files are, how progress is logged, how fast it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lnl_lightning.errors import ConfigError

# dotted keys (or prefixes of them) that do not change a run's result
NOT_IDENTIFYING = (
    "paths",
    "hydra",
    "logger",
    "callbacks",
    "tags",
    "ckpt_path",
    "print_config",
    "optimized_metric",
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
)
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
    identity = {k: v for k, v in flat.items() if not _listed(k, NOT_IDENTIFYING)}
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
    recorded = folder / "config_resolved.yaml"
    if not recorded.is_file():
        return
    try:
        earlier = run_identity(OmegaConf.load(recorded))
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
