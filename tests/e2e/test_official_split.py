"""``data.val_fraction=0`` (the official trainer's split) end to end through the CLI.

Every training image is trained on, nothing is validated, the test split is evaluated after
each epoch instead, and the records say so: no validation metrics, matrix or best checkpoint.
"""

from __future__ import annotations

import json

import pytest

from lnl_lightning.report import epoch_curve

from ..helpers.cli import run_ok
from ..helpers.signal_callback import record_batches, recorded

pytestmark = pytest.mark.slow  # two whole-split epochs: in CI (make test-slow)

TRAIN_IMAGES, BATCH = 600, 60  # the generated MNIST's training split, whole: 10 batches


def test_val_fraction_zero_trains_on_every_image_and_tests_each_epoch(tmp_path, mnist_dir):
    run_dir, record = tmp_path / "run", tmp_path / "batches.txt"
    run_ok(
        *record_batches(record),
        "experiment=colored_mnist",
        "data.val_fraction=0",
        f"data.batch_size={BATCH}",
        "trainer.max_epochs=2",
        "trainer.limit_test_batches=1.0",
        "print_config=false",
        "callbacks.rich_progress_bar=null",
        f"data.data_dir={mnist_dir}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    batches = TRAIN_IMAGES // BATCH  # with 10 % held out for validation: 9
    assert recorded(record) == [(e, b) for e in (0, 1) for b in range(batches)]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["metrics"] and all(k.startswith("test/") for k in summary["metrics"])
    assert summary["best_checkpoint"] is None
    assert not (run_dir / "group_acc_val.csv").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    curve = epoch_curve(run_dir)  # what the report plots: the test metrics after each epoch
    assert sorted(curve) == [0, 1] and all("test/acc" in curve[e] for e in curve)
