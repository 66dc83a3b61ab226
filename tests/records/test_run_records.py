"""The run folder's records: one schema, written and read back by one module."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from lnl_lightning.records.folder import (
    ERROR_FILE,
    METRICS_FILE,
    RunSummary,
    clear_error,
    read_config,
    read_error,
    read_summary,
    write_config,
    write_error,
    write_summary,
)
from lnl_lightning.records.identity import KEY_FIELDS, logged_fields, run_fields


def summary(**changes) -> RunSummary:
    fields = dict(
        metrics={"val/acc": 0.5, "test/acc": 0.25},
        method="lnl",
        task_name="study",
        tested_weights="last",
        epochs=3,
        config_path="/x/config_resolved.yaml",
    )
    return RunSummary(**{**fields, **changes})


def test_a_summary_reads_back_as_written_with_sorted_metrics_and_no_pack_key(tmp_path):
    write_summary(tmp_path, summary(global_step=30))
    record = json.loads((tmp_path / METRICS_FILE).read_text())
    assert list(record["metrics"]) == ["test/acc", "val/acc"]
    assert "pack" not in record and record["kind"] == "training"
    assert read_summary(tmp_path) == summary(global_step=30)
    write_summary(tmp_path, summary(pack={"folder": "/p", "members": 2}))
    assert json.loads((tmp_path / METRICS_FILE).read_text())["pack"]["members"] == 2


def test_older_summaries_without_newer_fields_still_read(tmp_path):
    old = {"metrics": {"test/acc": 0.4}, "method": "baseline", "epochs": 100, "extra": 1}
    (tmp_path / METRICS_FILE).write_text(json.dumps(old))
    read = read_summary(tmp_path)
    assert read.metrics == {"test/acc": 0.4} and read.epochs == 100
    assert read.kind == "training" and read.pack is None
    assert read_summary(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("changes", "evaluation"),
    [
        ({}, False),
        ({"tested_weights": None}, False),  # written before the field existed
        ({"tested_weights": "best"}, False),
        ({"kind": "evaluation"}, True),
        ({"tested_weights": "/runs/a/checkpoints/last.ckpt"}, True),
    ],
)
def test_an_evaluation_is_told_from_a_training_run(changes, evaluation):
    assert summary(**changes).is_evaluation is evaluation


def test_an_error_is_recorded_read_and_cleared(tmp_path):
    try:
        raise ValueError("data.color_var must be > 0")
    except ValueError as err:
        write_error(tmp_path, err)
    assert read_error(tmp_path) == "ValueError: data.color_var must be > 0"
    assert "Traceback" in json.loads((tmp_path / ERROR_FILE).read_text())["traceback"]
    clear_error(tmp_path)
    assert read_error(tmp_path) is None
    clear_error(tmp_path)  # nothing to clear: no error


def test_the_config_is_written_resolved(tmp_path):
    cfg = OmegaConf.create({"seed": 3, "task_name": "t", "paths": {"out": "${task_name}/x"}})
    write_config(tmp_path, cfg)
    assert read_config(tmp_path).paths.out == "t/x"
    assert read_config(tmp_path / "missing") is None


def test_run_fields_are_the_report_columns_and_the_logged_ones_add_the_study():
    cfg = OmegaConf.create(
        {
            "task_name": "grid",
            "method": "blind_eye",
            "seed": 2,
            "model": {
                "_target_": "x.Y",
                "lambda_": 0.01,
                "confusion_weight": 0.1,
                "init_from": "a/checkpoints/last.ckpt",
            },
            "data": {"protocol": "rebias", "rho": 0.99, "color_var": 0.02},
        }
    )
    fields = run_fields(cfg, summary(method="blind_eye", epochs=7))
    assert set(fields) == {*KEY_FIELDS, "seed"}
    assert fields["settings"] == "confusion_weight=0.1" and fields["start"] == "warm"
    assert fields["rho"] == 0.99 and fields["color_var"] is None  # the ReBias protocol
    assert fields["epochs"] == 7 and fields["seed"] == 2
    logged = logged_fields(cfg)
    assert logged["study"] == "grid" and "epochs" not in logged
