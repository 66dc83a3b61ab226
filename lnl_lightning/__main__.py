"""``python -m lnl_lightning [overrides]``: compose the Hydra config and train."""

from __future__ import annotations

import errno
import functools
import logging
import math
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lnl_lightning.config import CONFIG_MODULE
from lnl_lightning.errors import ConfigError, DataError, TrainingDiverged
from lnl_lightning.records.files import run_lock
from lnl_lightning.records.folder import (
    CommandRecord,
    begin_records,
    discard_refused,
    is_empty_folder,
    write_error,
)
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
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from lnl_lightning.train import run  # heavy imports after Hydra has parsed the command line

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    command = CommandRecord.capture(cfg)
    continue_with = command.resume_command(out_dir) if command else "the same command"
    new_folder = is_empty_folder(out_dir)  # Hydra made it (it writes nothing there itself)
    try:
        with run_lock(out_dir):
            # the folder's records change only once the run's checks have passed
            metrics = run(cfg, begin=functools.partial(begin_records, out_dir, command))
    except SIGTERMException:
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
            err = DiskFull(  # noqa: PLW2901 - the clear error in its place
                f"no space left on the device writing {err.filename or 'a run file'} in "
                f"{out_dir}: free some space, then continue with: {continue_with} "
                f"(checkpoints are written atomically: the last one is whole)"
            )
        expected = isinstance(err, (ConfigError, DataError, TrainingDiverged, DiskFull))
        refused = isinstance(err, (ConfigError, DataError))
        if refused and new_folder and not is_multirun():
            discard_refused(out_dir)  # the refused command leaves no run folder behind
        if not is_multirun():
            if not expected:
                raise
            log.error("%s", err)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        log.error("Job failed, the sweep goes on: %s", err, exc_info=not expected)
        write_error(out_dir, err)
        return math.nan
    value = metrics.get(cfg.optimized_metric)
    if value is None:
        log.warning("optimized_metric '%s' was not logged", cfg.optimized_metric)
        return math.nan
    return value


def cli() -> None:
    """The ``lnl-lightning`` command and ``python -m lnl_lightning``."""
    survive_broken_pipes()  # before Hydra configures logging: its handlers then write safely
    main()


if __name__ == "__main__":
    cli()
