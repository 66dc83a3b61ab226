"""A run selected by the unbiased rule (selection=unbiased, data.val_colors=both): its best
checkpoint is the epoch the randomly coloured validation says, and its records name the rule."""

from __future__ import annotations

import csv
import json

from omegaconf import OmegaConf

from ..helpers.cli import run_ok


def test_the_unbiased_rule_tests_the_epoch_its_validation_picks_and_records_the_rule(
    tmp_path, mnist_dir
):
    folder = tmp_path / "run"
    run_ok(
        "experiment=colored_mnist",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=32",
        "data.val_fraction=0.3",  # 180 held-out digits, coloured both ways
        "trainer.max_epochs=4",
        "data.val_colors=both",
        "selection=unbiased",
        "test_ckpt=best",
        "seed=1",  # where the two validations disagree on the best epoch (checked below)
        f"hydra.run.dir={folder}",
        cwd=tmp_path,
    )
    (log,) = folder.glob("csv/**/metrics.csv")
    with log.open() as file:
        rows = [r for r in csv.DictReader(file) if r.get("val_random/acc")]
    by_epoch = {int(r["epoch"]): float(r["val_random/acc"]) for r in rows}
    assert sorted(by_epoch) == [0, 1, 2, 3, 4] and all(r.get("val/acc") for r in rows)
    final = by_epoch.pop(4)  # the last row: the tested weights validated once more
    best = max(by_epoch, key=lambda e: (by_epoch[e], -e))  # the first epoch of the highest
    aligned = {int(r["epoch"]): float(r["val/acc"]) for r in rows if int(r["epoch"]) < 4}
    assert best != max(aligned, key=lambda e: (aligned[e], -e)), "no test of the rule here"
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["best_checkpoint"].endswith(f"best_epoch{best:03d}.ckpt")
    assert summary["tested_weights"] == "best"
    assert abs(summary["metrics"]["val_random/acc"] - by_epoch[best]) < 1e-6
    assert abs(final - by_epoch[best]) < 1e-6
    assert summary["selection"] == {
        "name": "unbiased",
        "weights": "best val_random/acc",
        "sweep_metric": "val_random/acc",
        "uses_bias_labels": True,
    }
    config = OmegaConf.load(folder / "config_resolved.yaml")
    assert config.selection.name == "unbiased" and config.optimized_metric == "val_random/acc"
    assert (folder / "group_acc_val_random.csv").is_file()
