"""Hydra callback that ends a multirun with a list of the jobs that failed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lnl_lightning.files import ERROR_FILE, METRICS_FILE

log = logging.getLogger("lnl_lightning.sweep")


class FailedJobsReport(Callback):
    """After a multirun, log each failed job's folder and error (from its ``error.json``)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = sorted(sweep_dir.glob(f"*/{ERROR_FILE}"))
        done = sorted(sweep_dir.glob(f"*/{METRICS_FILE}"))
        if not failed:
            log.info("Multirun finished: %d job(s) completed in %s", len(done), sweep_dir)
            return
        log.error("Multirun finished: %d job(s) completed, %d failed:", len(done), len(failed))
        for path in failed:
            log.error("  %s: %s", path.parent, json.loads(path.read_text())["error"])
