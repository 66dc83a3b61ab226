"""A callback that signals its own process at a chosen training batch: a kill at a known point.

Used through the CLI: ``+callbacks.kill._target_=tests.helpers.signal_callback.SignalAtBatch``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl


class SignalAtBatch(pl.Callback):
    """After training batch ``batch`` of epoch ``epoch``, send this process ``signum``."""

    def __init__(self, epoch: int, batch: int, signum: str = "SIGTERM") -> None:
        self.epoch, self.batch, self.signum = epoch, batch, getattr(signal, signum)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if (trainer.current_epoch, i) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signum)
