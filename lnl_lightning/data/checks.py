"""Checks of the data keys that several datamodules share, with messages naming the key."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lnl_lightning.errors import ConfigError


def check_loader_settings(batch_size: int, val_fraction: float, num_workers: int) -> None:
    """``data.batch_size``, ``data.val_fraction`` and ``data.num_workers``."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"data.batch_size must be a positive integer, got {batch_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    if num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")


def check_color_bins(color_bins: int) -> None:
    """``data.color_bins``: bins per RGB channel of the per-pixel colour target."""
    if color_bins < 1 or 256 % color_bins:
        raise ConfigError(f"data.color_bins must divide 256 (e.g. 8), got {color_bins}")


def check_writable(folder: Path, key: str, needed_for: str) -> None:
    """Create ``folder`` if needed and write a scratch file in it; say which key to fix if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(
            f"{key}: {needed_for} has to write into {folder}, which is not writable "
            f"({err.strerror or err}). Give {key} a writable folder, or one that already holds "
            f"the files."
        ) from err


def held_out_count(val_fraction: float, num_images: int) -> int:
    """Images ``data.val_fraction`` holds out of ``num_images``; at least one when it is > 0."""
    num_val = int(round(val_fraction * num_images))
    if val_fraction > 0 and num_val < 1:
        raise ConfigError(
            f"data.val_fraction={val_fraction} holds out {val_fraction * num_images:.3g} of the "
            f"{num_images} training images, fewer than one, so there would be nothing to "
            f"validate on: give at least {1 / num_images:.3g}, or 0 (no validation split)"
        )
    if num_val >= num_images:
        raise ConfigError(
            f"data.val_fraction={val_fraction} holds out all {num_images} training images: "
            f"give a smaller one"
        )
    return num_val
