"""Atomic file writes: a kill during a write leaves the previous file, never half of a new one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            write(tmp)
        except OSError as err:  # name the file the caller asked for, not the temporary one
            err.filename = str(path)
            raise
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


def write_torch_atomic(path: Path, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, through a Python file: a full disk then raises
    ``OSError`` (ENOSPC), which the CLI explains, where PyTorch's C++ writer given a path
    raises a bare ``RuntimeError``."""
    import torch

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            torch.save(obj, file)

    return write_atomic(path, save)


def is_first_process() -> bool:
    """Rank 0 of a run (any run not started as one of several processes is)."""
    ranks = (os.environ.get(k, "0") for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))
    return not any(r.isdigit() and int(r) > 0 for r in ranks)


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` while a run writes there: a second run given the same folder is
    refused at once, naming the folder and the process that holds it.

    Only the first process of a run takes it (not the other ranks of a DDP run, which share the
    folder); where file locks do not exist (Windows), nothing is locked.
    """
    if fcntl is None or not is_first_process():
        yield
        return
    from lnl_lightning.errors import ConfigError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(
                f"hydra.run.dir: {folder} is in use by another run ({holder}); two runs in one "
                f"folder overwrite each other's records: give this one its own hydra.run.dir"
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
