"""Helpers the DDP tests load into their training processes (importable as tests.helpers.ddp)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch


class SaveWeightsPerRank(pl.Callback):
    """At the end of training, every process saves its parameters and buffers."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(state, self.out_dir / f"weights_rank{trainer.global_rank}.pt")
