"""Experiment loggers from ``cfg.logger``, with W&B falling back to offline mode."""

from __future__ import annotations

import csv
import logging
import netrc
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, WandbLogger

from lnl_lightning.config import build

log = logging.getLogger(__name__)


def has_wandb_credentials() -> bool:
    """True when W&B can authenticate: WANDB_API_KEY or an api.wandb.ai entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_reachable(timeout: float = 3.0) -> bool:
    """True when the W&B server (``WANDB_BASE_URL`` or api.wandb.ai) accepts a connection."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=timeout):
            return True
    except OSError:
        return False


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Instantiate every logger in ``cfg.logger`` (empty or null: no logger)."""
    loggers: list[Logger] = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        if name == "wandb" and not os.environ.get("WANDB_MODE"):
            reason = None
            if not has_wandb_credentials():
                reason = "No W&B credentials"
            elif not wandb_reachable():
                reason = "W&B server unreachable"
            if reason:
                os.environ["WANDB_MODE"] = "offline"
                folder = Path(node.save_dir) / "wandb"
                log.warning(
                    "%s: logging offline into %s. Upload later with: wandb sync %s",
                    reason,
                    folder,
                    folder / "offline-run-*",
                )
        loggers.append(build(node))
    return loggers


def log_group_matrix(loggers: list[Logger], stage: str, csv_path: Path, png_path: Path) -> None:
    """Send the class x bias matrix to W&B as an image and as a table."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            with csv_path.open() as f:
                header, *rows = list(csv.reader(f))
            logger.log_image(key=f"group_acc/{stage}", images=[str(png_path)])
            logger.log_table(key=f"group_acc_table/{stage}", columns=header, data=rows)


def finish_loggers(loggers: list[Logger], metrics: dict[str, float]) -> None:
    """Final metrics as the W&B summary; finish the run so each job is its own W&B run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(metrics)
            logger.experiment.finish()
