"""Hydra callback that ends a multirun with a list of the jobs that failed, and exit status 1."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lnl_lightning.records.folder import ERROR_FILE, METRICS_FILE, read_error

log = logging.getLogger("lnl_lightning.study.sweep")


class FailedJobsReport(Callback):
    """After a multirun, log each failed job's folder and error (from its ``error.json``).

    A sweep goes on past a failed job, but the process then exits with status 1, so that
    scripts (``make compare``) see that something failed. Each job removes its folder's old
    ``error.json`` when it starts, so only this sweep's failures count.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = sorted(sweep_dir.rglob(ERROR_FILE))
        done = sorted(sweep_dir.rglob(METRICS_FILE))
        if not failed:
            log.info("Multirun finished: %d job(s) completed in %s", len(done), sweep_dir)
            return
        log.error("Multirun finished: %d job(s) completed, %d failed:", len(done), len(failed))
        for path in failed:
            log.error("  %s: %s", path.parent, read_error(path.parent))
        sys.exit(1)


class WritableRunFolder(Callback):
    """Before Hydra makes the run (or sweep) folder: if it cannot be made or written, say so
    naming the key and exit with status 2, instead of Hydra's traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(folder: str, key: str) -> None:
        from lnl_lightning.data.checks import check_writable
        from lnl_lightning.errors import ConfigError

        try:
            check_writable(
                Path(folder), f"{key} (or LNL_LOG_DIR, where default folders go)", "the run"
            )
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
