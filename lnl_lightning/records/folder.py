"""A run folder's records, written and read here only.

Every run (an ordinary one, a pack's member, an evaluation) keeps in its folder:

- ``config_resolved.yaml``: exactly the config it was composed with, resolved;
- ``metrics.json``: its :class:`RunSummary` (final metrics and how it ran), written once it is
  done; a folder without one holds a run still going, stopped or failed;
- ``error.json``: why a sweep job failed (removed when the job is tried again);
- ``checkpoints/``: ``last.ckpt`` (resume, warm starts) and the best one by validation;
- ``.hydra/`` (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``) and ``<job>.log``: the
  command that last ran there and its log, written by :func:`begin_records` once the run's
  checks have passed; a refused command writes nothing into a folder (Hydra's own writing of
  them, before any check, is off: ``hydra.output_subdir: null``).

Training, evaluation, the packed launcher, sweeps and the report all go through these
functions, so a record has one layout and one schema.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from lnl_lightning.errors import ConfigError
from lnl_lightning.records.files import write_text_atomic, write_torch_atomic

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config_resolved.yaml"
METRICS_FILE = "metrics.json"
ERROR_FILE = "error.json"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
HYDRA_DIR = ".hydra"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's, for the log file
TRAINING, EVALUATION = "training", "evaluation"

# Modules that moved, old dotted path -> new: a record written before a move reads as written
# after it (``_target_`` values are part of what identifies a run).
MOVED_MODULES = {
    "lnl_lightning.models.base_module": "lnl_lightning.engine.module",
    "lnl_lightning.models.packed_runs": "lnl_lightning.engine.packed",
    "lnl_lightning.models.lnl_module": "lnl_lightning.methods.lnl",
    "lnl_lightning.models.blind_eye": "lnl_lightning.methods.blind_eye",
    "lnl_lightning.models.group_dro": "lnl_lightning.methods.group_dro",
    "lnl_lightning.models.lff": "lnl_lightning.methods.lff",
    "lnl_lightning.models.losses": "lnl_lightning.methods.losses",
    "lnl_lightning.models.networks": "lnl_lightning.nets.builders",
    "lnl_lightning.models.packing": "lnl_lightning.nets.packing",
    "lnl_lightning.models.gradient_reversal": "lnl_lightning.nets.gradient_reversal",
    "lnl_lightning.callbacks": "lnl_lightning.engine.callbacks",
    "lnl_lightning.loggers": "lnl_lightning.engine.loggers",
    "lnl_lightning.sweep": "lnl_lightning.study.sweep",
}


@dataclass
class RunFolder:
    """Where one run's records go, with what writes into it: its config, its loggers and its
    own datamodule (a pack's members each have theirs)."""

    path: Path
    config: DictConfig
    loggers: list[Any] = dataclasses.field(default_factory=list)
    datamodule: Any = None


@dataclass
class RunSummary:
    """What ``metrics.json`` holds.

    ``tested_weights`` is "last" or "best" for a training run (which weights the final metrics
    describe), the checkpoint file for an evaluation. ``step`` counts training batches, the
    step the loggers (CSV, TensorBoard, W&B) plot against; ``global_step`` is Lightning's count
    of optimizer steps (an LNL batch takes two or three). ``wall_time_s`` covers every stretch
    of a resumed run. ``selection``: the rule that picked the tested weights and that a
    sweep maximises (:func:`lnl_lightning.selection.selection_rule`). ``pack`` (a pack's
    member only): the pack's folder, its number of members and its throughput.
    """

    metrics: dict[str, float]
    method: str
    task_name: str
    tested_weights: str
    epochs: int
    config_path: str
    kind: str = TRAINING
    best_checkpoint: str | None = None
    train_images_per_s: float | None = None
    global_step: int | None = None
    step: int | None = None
    wall_time_s: float | None = None
    selection: dict[str, Any] | None = None
    pack: dict[str, Any] | None = None

    @property
    def is_evaluation(self) -> bool:
        """It tested a checkpoint and trained nothing: not a run for the report."""
        return self.kind == EVALUATION or self.tested_weights not in (None, "last", "best")

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RunSummary:
        """A summary read back; files written before a field existed get its default."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in record.items() if k in names}
        known.setdefault("metrics", {})
        for name in ("method", "task_name", "tested_weights", "config_path"):
            known.setdefault(name, None)
        known.setdefault("epochs", None)
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["metrics"] = dict(sorted(self.metrics.items()))
        if record["pack"] is None:
            del record["pack"]
        return record


def write_config(folder: Path, cfg: DictConfig) -> Path:
    """``config_resolved.yaml``: the composed config, every interpolation resolved."""
    return write_text_atomic(Path(folder) / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))


def moved(target: str) -> str:
    """``target`` with the module it names at its current path (:data:`MOVED_MODULES`)."""
    module, _, name = target.rpartition(".")
    return f"{MOVED_MODULES[module]}.{name}" if module in MOVED_MODULES else target


def _with_moved_targets(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: moved(value) if key == "_target_" and isinstance(value, str) else value
            for key, value in ((k, _with_moved_targets(v)) for k, v in node.items())
        }
    if isinstance(node, list):
        return [_with_moved_targets(item) for item in node]
    return node


def load_config(path: Path) -> DictConfig:
    """A ``config_resolved.yaml``, each ``_target_`` at its module's current path."""
    loaded = OmegaConf.to_container(OmegaConf.load(path))
    return OmegaConf.create(_with_moved_targets(loaded))


def read_config(folder: Path) -> DictConfig | None:
    """The run's resolved config (:func:`load_config`); None when the folder has none."""
    path = Path(folder) / CONFIG_FILE
    return load_config(path) if path.is_file() else None


def write_summary(folder: Path, summary: RunSummary) -> Path:
    return write_text_atomic(
        Path(folder) / METRICS_FILE, json.dumps(summary.to_dict(), indent=2) + "\n"
    )


def read_summary(folder: Path) -> RunSummary | None:
    """The run's ``metrics.json``; None when it has none (still going, stopped or failed).

    An unreadable file raises ``OSError`` or ``ValueError`` (``json.JSONDecodeError``).
    """
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    return RunSummary.from_dict(json.loads(path.read_text()))


def write_error(folder: Path, error: BaseException | str, trace: str | None = None) -> Path:
    """``error.json``: a failed job's error (``Type: message``) and traceback."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    record = {"error": text, "traceback": traceback.format_exc() if trace is None else trace}
    return write_text_atomic(Path(folder) / ERROR_FILE, json.dumps(record, indent=2) + "\n")


def clear_error(folder: Path) -> None:
    """A new try of the job: its earlier failure no longer stands."""
    (Path(folder) / ERROR_FILE).unlink(missing_ok=True)


def read_error(folder: Path) -> str | None:
    """The recorded error of a failed job; None when it has none."""
    path = Path(folder) / ERROR_FILE
    return json.loads(path.read_text()).get("error", "") if path.is_file() else None


def checkpoint_dir(folder: Path) -> Path:
    return Path(folder) / CHECKPOINTS


def save_weights_checkpoint(
    path: Path, module: torch.nn.Module, optimizer_states: list[dict], **fields: Any
) -> Path:
    """A checkpoint in the layout of an ordinary run's (``state_dict``, ``optimizer_states``,
    epoch and step), which warm starts and evaluation read: a pack member's own weights."""
    import pytorch_lightning as pl

    checkpoint = {
        "state_dict": module.state_dict(),
        "optimizer_states": optimizer_states,
        "pytorch-lightning_version": pl.__version__,
        **fields,
    }
    return write_torch_atomic(path, checkpoint)


def run_alike(runs_dir: str | Path, cfg: DictConfig, keys: Sequence[str]) -> Path:
    """The training run under ``runs_dir`` whose ``keys`` equal ``cfg``'s: found from records.

    A warm start names the baseline of the same cell (``model.init_from=${warm_start:DIR,
    data.color_var,seed}``): the run is found by what its ``config_resolved.yaml`` says, not by
    how its folder is named. Exactly one finished run must match.
    """
    wanted = {key: OmegaConf.select(cfg, key) for key in keys}
    matches = []
    for config_path in sorted(Path(runs_dir).rglob(CONFIG_FILE)):
        folder = config_path.parent
        summary, config = read_summary(folder), read_config(folder)
        if summary is None or summary.is_evaluation or config is None:
            continue
        if all(OmegaConf.select(config, key) == value for key, value in wanted.items()):
            matches.append(folder)
    cell = ", ".join(f"{key}={value}" for key, value in wanted.items())
    if len(matches) != 1:
        found = ", ".join(str(m) for m in matches) or "none"
        raise ConfigError(
            f"model.init_from: one finished run under {runs_dir} must have {cell}; found {found}"
        )
    return matches[0]


def warm_start_checkpoint(runs_dir: str, *keys: str, _root_: DictConfig) -> str:
    """The ``${warm_start:DIR,KEY,...}`` resolver: the last checkpoint of :func:`run_alike`."""
    path = checkpoint_dir(run_alike(runs_dir, _root_, keys)) / LAST_CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"model.init_from: {path} is missing (the run has no last checkpoint)")
    return str(path)


@dataclass(frozen=True)
class CommandRecord:
    """What Hydra knows of the command that started a run, captured when the job starts and
    written into the folder by :func:`begin_records` only once the run's checks pass."""

    config: DictConfig  # the job's config as composed (Hydra's .hydra/config.yaml)
    hydra: DictConfig  # {"hydra": ...}: .hydra/hydra.yaml
    overrides: list[str]  # the command line's overrides: .hydra/overrides.yaml
    log_name: str  # <job name>.log

    @classmethod
    def capture(cls, cfg: DictConfig) -> CommandRecord | None:
        """This job's record; None outside a Hydra job (a run started from Python)."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
        overrides = list(OmegaConf.to_container(hydra_cfg.hydra.overrides.task))
        return cls(copy.deepcopy(cfg), hydra_cfg, overrides, f"{hydra_cfg.hydra.job.name}.log")

    def resume_command(self, folder: Path, module: str = "lnl_lightning") -> str:
        """The command that continues this run from its ``last.ckpt``."""
        kept = [o for o in self.overrides if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
        return " ".join(
            ["python -m", module, *map(_quoted, kept), "ckpt_path=last", f"hydra.run.dir={folder}"]
        )


def _quoted(override: str) -> str:
    import shlex

    return shlex.quote(override)


def begin_records(folder: Path, command: CommandRecord | None) -> None:
    """The run's checks have passed and it owns ``folder`` from now on: an earlier try's
    ``error.json`` goes, ``.hydra/`` records this command and the log goes to ``<job>.log``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clear_error(folder)
    if command is not None:
        write_command(folder, command)
        log_to_file(folder / command.log_name)


def write_command(folder: Path, command: CommandRecord) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra writes them."""
    for name, node in (
        ("config.yaml", command.config),
        ("hydra.yaml", command.hydra),
        ("overrides.yaml", OmegaConf.create(command.overrides)),
    ):
        write_text_atomic(Path(folder) / HYDRA_DIR / name, OmegaConf.to_yaml(node))


def log_to_file(path: Path) -> None:
    """Everything logged from now on also goes to ``path`` (appended; one such file at a time)."""
    stop_log_file()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.run_log = True  # type: ignore[attr-defined]
    logging.getLogger().addHandler(handler)


def stop_log_file() -> None:
    """No more logging into the file :func:`log_to_file` named."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "run_log", False)]:
        root.removeHandler(handler)
        handler.close()


def is_empty_folder(folder: Path) -> bool:
    """``folder`` holds nothing (or does not exist): a run there writes into a new folder."""
    folder = Path(folder)
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def discard_refused(folder: Path) -> bool:
    """A refused command's folder, when the command made it (it was empty before) and nothing
    trained there: removed, so that refusals leave no run folders behind. Returns whether it
    was removed."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / CHECKPOINTS).exists() or (folder / METRICS_FILE).exists():
        return False
    stop_log_file()
    shutil.rmtree(folder, ignore_errors=True)
    return True
