"""Callbacks for CLI tests: a signal at a chosen training batch (a kill at a known point), and
a record of the batches a process trains (what tells a resume from a rerun). Used through the
CLI: ``+callbacks.kill._target_=tests.helpers.signal_callback.SignalAtBatch``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl


class SignalAtBatch(pl.Callback):
    """In training batch ``batch`` of epoch ``epoch``, send this process ``signum``: after the
    batch, or with ``optimizer_step=k`` just before its k-th optimizer step (inside a
    two-pass step, where a user's Ctrl-C can land)."""

    def __init__(
        self, epoch: int, batch: int, signum: str = "SIGTERM", optimizer_step: int | None = None
    ) -> None:
        self.epoch, self.batch, self.signum = epoch, batch, getattr(signal, signum)
        self.optimizer_step = optimizer_step
        self._steps = 0
        self._in_batch = False

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, i: int
    ) -> None:
        self._steps = 0
        self._in_batch = (trainer.current_epoch, i) == (self.epoch, self.batch)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        self._steps += 1
        if self._in_batch and self._steps == self.optimizer_step:
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if self._in_batch and self.optimizer_step is None:
            os.kill(os.getpid(), self.signum)


class RecordBatches(pl.Callback):
    """Append ``<epoch> <batch>`` for every training batch this process trains to ``path``:
    what only a real resume shows (a rerun from scratch ends the same on a CPU)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        with open(self.path, "a") as file:
            file.write(f"{trainer.current_epoch} {i}\n")


def record_batches(path: Any) -> list[str]:
    """Overrides that add :class:`RecordBatches` writing to ``path``."""
    return [
        "+callbacks.record._target_=tests.helpers.signal_callback.RecordBatches",
        f"+callbacks.record.path={path}",
    ]


def recorded(path: Any) -> list[tuple[int, int]]:
    """The ``(epoch, batch)`` pairs :class:`RecordBatches` wrote."""
    with open(path) as file:
        return [tuple(map(int, line.split())) for line in file]


class DiskFullAtEpochEnd(pl.Callback):
    """Raise what a full disk raises (ENOSPC) when epoch ``epoch`` ends, after its checkpoint."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import errno

        if trainer.current_epoch == self.epoch:
            raise OSError(errno.ENOSPC, "No space left on device", "metrics.csv")


class BreakPipesAtBatch(pl.Callback):
    """At the end of training batch ``batch`` of epoch ``epoch``: stdout and stderr become pipes
    nobody reads (what ``| tee`` leaves when Ctrl-C kills ``tee`` too), then Ctrl-C (SIGINT)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if (trainer.current_epoch, i) != (self.epoch, self.batch):
            return
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone: every later write gets EPIPE
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        os.kill(os.getpid(), signal.SIGINT)


class CheckpointDiskFullFromEpoch(pl.Callback):
    """From epoch ``epoch`` on, checkpoint files are written as onto a full disk: into
    ``/dev/full``, whether the writer gives ``torch.save`` a path (PyTorch's C++ writer then
    fails with a ``RuntimeError``) or an open file (``OSError`` ENOSPC)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch != self.epoch:
            return
        import torch

        real_save = torch.save

        def save_onto_a_full_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            if isinstance(f, (str, os.PathLike)):
                return real_save(obj, "/dev/full", *args, **kwargs)
            with open("/dev/full", "wb") as full:
                return real_save(obj, full, *args, **kwargs)

        torch.save = save_onto_a_full_disk
