"""Atomic file writes: a kill during a write leaves the previous file, never half of a new one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

METRICS_FILE = "metrics.json"  # a finished run's final metrics, in its run folder
ERROR_FILE = "error.json"  # a failed sweep job's error, in its run folder


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is 0600: give it what open() would
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def load_checkpoint(path: Path, key: str) -> dict:
    """Load a Lightning checkpoint (tensors and plain data only) or say clearly why not.

    ``key`` is the config key that named the file, for the message.
    """
    import pickle
    import zipfile

    import torch

    from lnl_lightning.errors import ConfigError

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key} must be a checkpoint file, but {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as err:
        raise ConfigError(
            f"{key}: {path} is not a readable checkpoint (truncated or corrupt?): {err}"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{key}: {path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint
