"""Run folders written as a training run writes them (composed config, metrics.json, CSV log)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from lnl_lightning.config import CONFIG_MODULE
from lnl_lightning.records.folder import RunSummary, write_config, write_summary


def composed(*overrides: str) -> DictConfig:
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(
            "train", overrides=["experiment=colored_mnist", "paths.output_dir=/nowhere", *overrides]
        )


def write_run(
    folder: Path,
    *overrides: str,
    metrics: dict[str, float] | None = None,
    epochs: int = 3,
    curve: Sequence[dict[str, float]] = (),
) -> Path:
    """A run folder: its config, its summary (none: a run still going) and its epoch log."""
    cfg = composed(*overrides)
    (folder / ".hydra").mkdir(parents=True)
    write_config(folder, cfg)
    if metrics is not None:
        summary = RunSummary(
            metrics=metrics,
            method=cfg.model.method,
            task_name=cfg.task_name,
            tested_weights="last",
            epochs=epochs,
            config_path=str(folder / "config_resolved.yaml"),
        )
        write_summary(folder, summary)
    if curve:
        log = folder / "csv" / "version_0" / "metrics.csv"
        log.parent.mkdir(parents=True)
        with log.open("w", newline="") as file:
            writer = csv.DictWriter(file, ["epoch", "test/acc", "test/bias_acc"])
            writer.writeheader()
            for epoch, values in enumerate(curve):
                writer.writerow({"epoch": epoch, **values})
    return folder


@pytest.fixture
def run_at(tmp_path):
    def make(name: str, *overrides: str, **kwargs) -> Path:
        return write_run(tmp_path / "runs" / name, *overrides, **kwargs)

    return make
