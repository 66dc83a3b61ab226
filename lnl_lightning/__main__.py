"""``python -m lnl_lightning [overrides]``: compose the Hydra config and train."""

from __future__ import annotations

import errno
import logging
import math
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lnl_lightning.config import CONFIG_MODULE
from lnl_lightning.errors import ConfigError, DataError, TrainingDiverged
from lnl_lightning.records.files import is_first_process, run_lock
from lnl_lightning.records.folder import (
    ERROR_FILE,
    CommandRecord,
    begin_records,
    discard_refused,
    is_empty_folder,
    write_error,
)
from lnl_lightning.run_checks import check_settings
from lnl_lightning.streams import survive_broken_pipes

log = logging.getLogger("lnl_lightning")


class DiskFull(OSError):
    """The disk filled up during a run: what to do, instead of the traceback."""


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")
def main(cfg: DictConfig) -> float:
    """Train one configuration; return ``cfg.optimized_metric`` for sweepers (NaN if it failed).

    In a multirun a failed job is recorded in its folder (``error.json``) and the sweep
    goes on with the next job.
    """
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    command = CommandRecord.capture(cfg)
    continue_with = command.resume_command(out_dir) if command else "the same command"
    new_folder = is_empty_folder(out_dir)  # Hydra made it (it writes nothing there itself)
    began: list[bool] = []

    def begin() -> None:  # the run's checks have passed: the folder's records are its own now
        begin_records(out_dir, command)
        began.append(True)

    try:
        check_settings(cfg)  # a mistake in the config alone is refused before torch is imported
        from lnl_lightning.quiet import quiet_libraries
        from lnl_lightning.train import run

        quiet_libraries(HydraConfig.get().verbose)  # after Lightning's import has set its levels
        with run_lock(out_dir):
            metrics = run(cfg, begin=begin)
    except SystemExit as stopped:
        if not stopped_by_signal(stopped):
            raise
        from lnl_lightning.engine import callbacks

        signum = callbacks.STOPPED_BY or signal.SIGTERM
        hint = (
            f"Stopped by {signal.Signals(signum).name} after saving checkpoints/last.ckpt; "
            f"continue with: {continue_with}"
        )
        log.warning("%s", hint)
        print(hint, file=sys.stderr)
        sys.exit(128 + signum)  # the conventional status of a process ended by that signal
    except Exception as err:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            err = disk_full(err, out_dir, continue_with)  # noqa: PLW2901 - the clear error
        expected = isinstance(err, (ConfigError, DataError, TrainingDiverged, DiskFull))
        if is_first_process():
            if began or is_multirun():  # why it failed, for the report and the sweep's summary
                write_error_if_possible(out_dir, err)
            elif new_folder:  # refused before its records began: it leaves no folder behind
                discard_refused(out_dir)
        if not is_multirun():
            if not expected:
                raise
            log.error("%s", err)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        log.error("Job failed, the sweep goes on: %s", err, exc_info=not expected)
        return math.nan
    value = metrics.get(cfg.optimized_metric)
    if value is None:
        log.warning("optimized_metric '%s' was not logged", cfg.optimized_metric)
        return math.nan
    return value


def stopped_by_signal(stopped: SystemExit) -> bool:
    """Lightning's ``SIGTERMException`` (a SystemExit), which it raises only once loaded."""
    exceptions = sys.modules.get("pytorch_lightning.utilities.exceptions")
    return exceptions is not None and isinstance(stopped, exceptions.SIGTERMException)


def disk_full(err: OSError, out_dir: Path, continue_with: str) -> DiskFull:
    """What to do about a full disk, naming the file and the space left where it was written."""
    where = Path(err.filename) if err.filename else out_dir
    try:
        free = f"{shutil.disk_usage(where.parent if err.filename else where).free / 2**20:.0f} MB"
    except OSError:
        free = "unknown"
    return DiskFull(
        f"no space left on the device writing {where} (free there now: {free}): free some "
        f"space, then continue with: {continue_with} (checkpoints are written atomically: the "
        f"last one is whole)"
    )


def write_error_if_possible(out_dir: Path, err: BaseException) -> None:
    """``error.json``, unless the disk cannot take even that."""
    try:
        write_error(out_dir, err)
    except OSError as unwritten:
        log.warning("could not write %s: %s", out_dir / ERROR_FILE, unwritten)


def register_launcher() -> None:
    """Make ``hydra/launcher=packed`` known to Hydra however the package was installed: Hydra
    finds plugins by listing the ``hydra_plugins`` namespace, which does not list a package that
    an editable install maps in (``pip install -e .``, run outside the repository)."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.lnl_lightning_launcher.packed_launcher import PackedLauncher

    Plugins.instance().register(PackedLauncher)


def cli() -> None:
    """The ``lnl-lightning`` command and ``python -m lnl_lightning``."""
    survive_broken_pipes()  # before Hydra configures logging: its handlers then write safely
    register_launcher()
    try:
        main()
    except SystemExit as stopped:
        if stopped.code == 1:  # Hydra could not compose the command: a mistyped key?
            for hint in key_suggestions(sys.argv[1:]):
                print(hint, file=sys.stderr)
        raise


def key_suggestions(arguments: list[str], config_name: str = "train") -> list[str]:
    """``did you mean`` lines for the overrides whose key the composed config lacks."""
    import difflib

    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = [a for a in arguments if "=" in a and not a.startswith("-")]
    groups = [o for o in overrides if "." not in o.split("=", 1)[0]]  # experiment=..., data=...
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name, overrides=groups)
    except Exception:  # noqa: BLE001 - the group itself is wrong: Hydra has said which
        return []
    hints = []
    for override in overrides:
        key, value = override.split("=", 1)
        if key.startswith(("+", "~")) or "." not in key or key.startswith("hydra."):
            continue
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, throw_on_missing=False)
        if not isinstance(parent, DictConfig) or leaf in parent:
            continue
        close = difflib.get_close_matches(leaf, [str(k) for k in parent], n=1, cutoff=0.6)
        if close:
            hints.append(f"did you mean {parent_key}.{close[0]}={value} ?")
        else:
            hints.append(f"{parent_key} has no key {leaf}; its keys: {', '.join(map(str, parent))}")
    return hints


if __name__ == "__main__":
    cli()
