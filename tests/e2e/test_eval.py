"""``python -m lnl_lightning.eval`` gives back, on whole splits, what each kind of run reported.

LNL (tested on its best checkpoint, ``test_ckpt=best``), the baseline, and a member of a packed
sweep: each run's checkpoint, evaluated in a fresh process, must give the run's own metrics and
label x bias matrices, over every validation and test image.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from ..helpers.cli import run_ok

pytestmark = pytest.mark.slow  # whole splits, several runs: in CI (make test-slow)

WHOLE_SPLITS = (
    "debug=fast",  # 3 training batches an epoch, and then:
    "trainer.limit_val_batches=1.0",
    "trainer.limit_test_batches=1.0",
    "data.batch_size=32",
    "print_config=false",
)
VAL_IMAGES, TEST_IMAGES = 60, 1000  # the generated MNIST: 10 % of 600, and its test split
PACKED_MEMBER = "pack/1"  # the sweep's second job: model=lnl data.color_var=0.05


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_dir) -> Path:
    root = tmp_path_factory.mktemp("eval")
    data = f"data.data_dir={mnist_dir}"
    run_ok(
        "experiment=colored_mnist",
        *WHOLE_SPLITS,
        "trainer.max_epochs=4",
        "test_ckpt=best",
        data,
        f"hydra.run.dir={root / 'lnl'}",
        cwd=root,
    )
    run_ok(
        "experiment=colored_mnist",
        "model=baseline",
        *WHOLE_SPLITS,
        data,
        f"hydra.run.dir={root / 'baseline'}",
        cwd=root,
    )
    run_ok(
        "-m",
        "hydra/launcher=packed",
        "experiment=colored_mnist",
        *WHOLE_SPLITS,
        "data.color_var=0.02,0.05",
        data,
        f"hydra.sweep.dir={root / 'pack'}",
        cwd=root,
    )
    return root


def group_counts(path: Path) -> dict[tuple[str, str], tuple[str, int]]:
    with path.open() as file:
        return {
            (row["label"], row["bias_group"]): (row["accuracy"], int(row["count"]))
            for row in csv.DictReader(file)
        }


def evaluate(checkpoint: Path, selection: list[str], out: Path, mnist_dir: Path) -> dict:
    run_ok(
        *selection,
        *WHOLE_SPLITS,
        f"data.data_dir={mnist_dir}",
        f"ckpt_path={checkpoint}",
        f"hydra.run.dir={out}",
        cwd=out.parent,
        module="lnl_lightning.eval",
    )
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize(
    "run, selection",
    [
        ("lnl", ["experiment=colored_mnist"]),
        ("baseline", ["experiment=colored_mnist", "model=baseline"]),
        (PACKED_MEMBER, ["experiment=colored_mnist", "data.color_var=0.05"]),
    ],
)
def test_eval_gives_back_the_run_metrics_on_whole_splits(run, selection, runs, tmp_path, mnist_dir):
    folder = runs / run
    trained = json.loads((folder / "metrics.json").read_text())
    tested = trained["best_checkpoint"] if trained["tested_weights"] == "best" else None
    checkpoint = Path(tested) if tested else folder / "checkpoints" / "last.ckpt"
    evaluated = evaluate(checkpoint, selection, tmp_path / "eval", mnist_dir)
    assert evaluated["method"] == trained["method"]
    assert evaluated["metrics"].keys() == trained["metrics"].keys()
    for name, value in trained["metrics"].items():
        assert evaluated["metrics"][name] == pytest.approx(value, abs=1e-6), name
    for split, images in (("val", VAL_IMAGES), ("test", TEST_IMAGES)):
        cells = group_counts(folder / f"group_acc_{split}.csv")
        assert sum(count for _, count in cells.values()) == images  # every image, not 2 batches
        assert group_counts(tmp_path / "eval" / f"group_acc_{split}.csv") == cells


def test_test_ckpt_best_tests_the_best_validation_epoch_not_the_last(runs, tmp_path, mnist_dir):
    trained = json.loads((runs / "lnl" / "metrics.json").read_text())
    best = Path(trained["best_checkpoint"])
    assert trained["tested_weights"] == "best" and best.is_file()
    epoch = torch.load(best, weights_only=False)["epoch"]
    history = val_acc_by_epoch(runs / "lnl", trained["epochs"])
    assert sorted(history) == [0, 1, 2, 3]
    assert history[epoch] == max(history.values())  # the best of validation, the first if tied
    assert epoch != 3  # in this run the best is not the last epoch ...
    last = evaluate(
        runs / "lnl" / "checkpoints" / "last.ckpt",
        ["experiment=colored_mnist"],
        tmp_path / "last",
        mnist_dir,
    )
    # ... so the weights training left behind give other numbers than the reported ones
    assert last["metrics"]["val/acc"] < trained["metrics"]["val/acc"]


def val_acc_by_epoch(folder: Path, epochs: int) -> dict[int, float]:
    """val/acc after each training epoch, from the run's CSV log (not the final validation)."""
    (metrics,) = folder.glob("csv/**/metrics.csv")
    history = {}
    with metrics.open() as file:
        for row in csv.DictReader(file):
            if row.get("val/acc") and int(row["epoch"]) < epochs:
                history.setdefault(int(row["epoch"]), float(row["val/acc"]))
    return history
