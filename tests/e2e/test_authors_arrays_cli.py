"""The authors' arrays through the CLI: every method, a packed sweep, device batches, the report
and W&B, on files written as Python 2 wrote them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lnl_lightning.report import collect, summarize

from ..helpers.authors_arrays import authors_arrays, write_authors_arrays
from ..helpers.cli import METRIC_KEYS, run_ok
from ..helpers.wandb_records import read_run

METHODS = ("baseline", "lnl", "blind_eye", "group_dro", "lff")


@pytest.fixture(scope="module")
def arrays_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("arrays_cli")
    for color_var in (0.02, 0.05):
        write_authors_arrays(root / "arrays", authors_arrays(color_var)[0], color_var)
    common = [
        "data.source=arrays",
        f"data.arrays_dir={root / 'arrays'}",
        "data.data_dir=/nonexistent",  # the arrays need no MNIST
        "debug=fast",
        "data.batch_size=32",
        "print_config=false",
    ]
    run_ok(
        "-m",
        "experiment=colored_mnist",
        f"model={','.join(METHODS)}",
        "logger=[csv,wandb]",
        *common,
        f"hydra.sweep.dir={root / 'methods'}",
        "hydra.sweep.subdir=${method}",
        cwd=root,
        WANDB_MODE="offline",
    )
    run_ok(
        "experiment=colored_mnist_gray", *common, f"hydra.run.dir={root / 'methods/gray'}", cwd=root
    )
    run_ok(
        "-m",
        "hydra/launcher=packed",
        "experiment=colored_mnist",
        "data.color_var=0.02,0.05",
        *common,
        f"hydra.sweep.dir={root / 'packed'}",
        cwd=root,
    )
    run_ok(
        "experiment=colored_mnist",
        "data.on_device=true",
        *common,
        f"hydra.run.dir={root / 'on_device'}",
        cwd=root,
    )
    return root


@pytest.mark.parametrize("method", [*METHODS, "gray"])
def test_every_method_trains_and_tests_on_the_arrays(arrays_runs, method):
    folder = arrays_runs / "methods" / method
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["method"] == method and set(summary["metrics"]) >= METRIC_KEYS
    config = OmegaConf.load(folder / "config_resolved.yaml")
    assert config.data.source == "arrays" and config.data.grayscale == (method == "gray")


def test_the_report_and_wandb_say_the_runs_read_the_arrays(arrays_runs):
    rows = summarize(collect(arrays_runs / "methods")[0])
    assert {row.fields["method"] for row in rows} == {*METHODS, "gray"}
    assert {row.fields["data"] for row in rows} == {"arrays"}
    (record,) = (arrays_runs / "methods" / "lnl" / "wandb").glob("offline-run-*/run-*.wandb")
    wandb_run = read_run(record)
    assert wandb_run["config"]["data"] == "arrays"
    assert wandb_run["config"]["color_var"] == 0.02


def test_a_packed_sweep_reads_each_members_own_file(arrays_runs):
    runs = [json.loads((arrays_runs / "packed" / j / "metrics.json").read_text()) for j in "01"]
    assert [r["pack"]["members"] for r in runs] == [2, 2]
    assert runs[0]["metrics"]["test/acc"] != runs[1]["metrics"]["test/acc"]
    for job, color_var in zip("01", (0.02, 0.05), strict=True):
        config = OmegaConf.load(arrays_runs / "packed" / job / "config_resolved.yaml")
        assert config.data.color_var == color_var and config.data.source == "arrays"


def test_device_batches_train_on_the_arrays_as_the_loader_does(arrays_runs):
    on_device, loader = (
        json.loads((arrays_runs / folder / "metrics.json").read_text())
        for folder in ("on_device", "methods/lnl")
    )
    assert on_device["global_step"] == loader["global_step"] > 0
    for name, value in loader["metrics"].items():
        assert on_device["metrics"][name] == pytest.approx(value, abs=1e-6), name
