"""Config helpers: instantiation with clear errors, and the typed schemas of the groups."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import MissingMandatoryValue

from lnl_lightning.errors import ConfigError, DataError
from lnl_lightning.schemas import (
    DISPLAY,
    check_booleans,
    field_type,
    locate,
    remember_fields,
    schema_name,
    schema_of,
    targets_in,
)

CONFIG_MODULE = "lnl_lightning.conf"
TestCkpt = Literal["last", "best"]  # the weights a run is tested with: its last, or best val
TestCkptChoice = field_type("test_ckpt", TestCkpt)
# where the yaml files are, found without importing the package (its import registers these)
CONFIG_DIR = Path(find_spec(CONFIG_MODULE).submodule_search_locations[0])

# ${pid:} in a folder name: runs started in the same second by one shell loop get their own
if not OmegaConf.has_resolver("pid"):
    OmegaConf.register_new_resolver("pid", os.getpid)


def warm_start(runs_dir: str, *keys: str, _root_: DictConfig) -> str:
    """``${warm_start:DIR,data.color_var,seed}``: the last checkpoint of the finished run under
    DIR with this run's values of those keys, found from the run records (records/folder.py)."""
    from lnl_lightning.records.folder import warm_start_checkpoint

    return warm_start_checkpoint(runs_dir, *keys, _root_=_root_)


if not OmegaConf.has_resolver("warm_start"):
    OmegaConf.register_new_resolver("warm_start", warm_start)


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets the project's own errors through unwrapped.

    A method's ``display`` (how reports draw it) stays in the config and is not passed on.
    """
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    try:
        if isinstance(target, str) and target.startswith("lnl_lightning."):
            check_booleans(node, locate(target))
        with without_display(node):
            return instantiate(node, **kwargs)
    except MissingMandatoryValue as err:
        raise ConfigError(
            f"{err.full_key} must be given (it has no default): add {err.full_key}=<value> to "
            f"the command"
        ) from None
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ConfigError, DataError)):
            raise cause from None
        if isinstance(cause, TypeError) and (unknown := unknown_setting(cause, node)):
            raise unknown from None
        raise


@contextmanager
def without_display(node: Any) -> Iterator[None]:
    """``node`` without its ``display`` key for the while, then as it was."""
    if not isinstance(node, DictConfig) or DISPLAY not in node:
        yield
        return
    with read_write(node), open_dict(node):
        display = node._get_node(DISPLAY)
        del node[DISPLAY]
        try:
            yield
        finally:
            node[DISPLAY] = display


def unknown_setting(err: TypeError, node: Any) -> ConfigError | None:
    """The clear error for ``err``, a component given a keyword it does not take, else None."""
    unknown = re.search(r"unexpected keyword argument '(\w+)'", str(err))
    if unknown is None or not isinstance(node, DictConfig):
        return None
    key = ".".join(k for k in (node._get_full_key(""), unknown[1]) if k)
    return ConfigError(
        f"{key} is not a setting of {node.get('_target_')}: remove it (a + override adds a "
        f"key, which the component must also take)"
    )


# --------------------------------------------------------------------------- schemas
# Typed schemas of the config groups (Hydra's structured configs): a value of the wrong type
# (``trainer.max_epochs=abc``) is refused while the config is composed, with the key named.
# Each yaml of a group lists its schema first in its defaults; keys a schema does not list
# can still be added (``+trainer.detect_anomaly=true``). The project's own components (data,
# model, net) have schemas derived from their signatures (schemas.py); below, the rest.


@dataclass
class TrainerSchema:
    """The ``trainer`` group: the Lightning Trainer's arguments the configs set."""

    _target_: str = "pytorch_lightning.Trainer"
    default_root_dir: str = MISSING
    max_epochs: int = 100
    accelerator: str = "auto"
    devices: Any = 1  # a count, a list of ids, -1 or "auto"
    num_nodes: int = 1
    precision: Any = "32-true"  # "32-true", "64-true", "bf16-mixed", 16, ...
    strategy: Any = "auto"
    sync_batchnorm: bool = False
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 50
    deterministic: Any = False  # true, false or "warn"
    enable_progress_bar: bool = True
    enable_model_summary: bool = False  # Lightning's module table; a run logs its counts
    limit_train_batches: Any = 1.0  # a fraction (float) or a number of batches (int)
    limit_val_batches: Any = 1.0
    limit_test_batches: Any = 1.0


@dataclass
class PerfSchema:
    """The ``perf`` group: speed options (tested to train the same run)."""

    packed: bool = False  # train as a pack of one: batches built on the device
    cuda_graph: bool = False  # a pack on a GPU: replay the training step from a CUDA graph


@dataclass
class SelectionSchema:
    """The ``selection`` group: a named rule and the validation metric it maximises."""

    name: str = MISSING
    metric: str = MISSING


@dataclass
class TrainSchema:
    """Top-level keys of ``train.yaml`` (the groups are typed by their own schemas)."""

    task_name: str = "train"
    tags: list[str] = field(default_factory=list)
    method: str = MISSING
    seed: int = 0
    ckpt_path: str | None = None
    test_ckpt: TestCkptChoice = TestCkptChoice("last")
    print_config: bool = False
    optimized_metric: str = "val/acc"
    selection: Any = MISSING
    data: Any = MISSING
    net: Any = MISSING
    model: Any = MISSING
    trainer: Any = MISSING
    callbacks: Any = None
    logger: Any = None
    paths: Any = MISSING
    perf: Any = None


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore (safe to call more than once)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainSchema)
    # outside the groups, so that --help does not offer them as choices
    store.store(name="trainer_schema", node=TrainerSchema)
    store.store(name="perf_schema", node=PerfSchema)
    store.store(name="selection_schema", node=SelectionSchema)
    # each component the group yaml files build: its constructor's settings (schemas.py)
    targets = targets_in(CONFIG_DIR)
    remember_fields(CONFIG_DIR, targets)  # from the disk cache: no torch to import
    for target, keys in targets.items():
        store.store(name=schema_name(target), node=schema_of(target, keys))


register_configs()
