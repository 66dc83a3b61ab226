"""Every method through the CLI on a generated MNIST; a checkpoint evaluated without training."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ..helpers.cli import METRIC_KEYS, run_cli, run_ok
from ..helpers.signal_callback import record_batches, recorded

SMALL = ["debug=fast", "data.batch_size=32", "print_config=false"]


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory, mnist_dir):
    """One short run per method, as ``experiment=colored_mnist model=<m>`` (Gray: its own)."""
    root = tmp_path_factory.mktemp("methods")
    selections = {
        "baseline": ["experiment=colored_mnist", "model=baseline"],
        "blind_eye": ["experiment=colored_mnist", "model=blind_eye"],
        "group_dro": ["experiment=colored_mnist", "model=group_dro"],
        "lff": ["experiment=colored_mnist", "model=lff"],
        "gray": ["experiment=colored_mnist_gray"],
    }
    for method, selection in selections.items():
        run_ok(
            *selection,
            *SMALL,
            f"data.data_dir={mnist_dir}",
            f"hydra.run.dir={root / method}",
            cwd=root,
        )
    return root


@pytest.mark.parametrize("method", ["baseline", "blind_eye", "group_dro", "lff", "gray"])
def test_each_method_runs_and_labels_its_run(method, method_runs):
    summary = json.loads((method_runs / method / "metrics.json").read_text())
    assert summary["method"] == method
    assert set(summary["metrics"]) >= METRIC_KEYS
    assert (method_runs / method / "group_acc_test.csv").is_file()
    checkpoint = torch.load(method_runs / method / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["method"] == method


def test_lff_checkpoint_holds_its_twin_and_per_sample_state(method_runs):
    checkpoint = torch.load(method_runs / "lff" / "checkpoints" / "last.ckpt", weights_only=False)
    state = checkpoint["state_dict"]
    assert any(k.startswith("biased_feature_extractor.") for k in state)
    assert len(checkpoint["optimizer_states"]) == 3  # f+g, h, the twin
    seen = state["sample_seen"]
    assert len(seen) == 540 and seen.sum() == 3 * 32  # 600 - 10 % val; 3 batches of 32
    assert (state["loss_ema_biased"][seen] > 0).all()


def test_lff_resumes_with_its_per_sample_state(method_runs, tmp_path, mnist_dir):
    run_dir = tmp_path / "lff"
    shutil.copytree(method_runs / "lff", run_dir)
    record = tmp_path / "batches.txt"
    run_ok(
        *record_batches(record),
        "experiment=colored_mnist",
        "model=lff",
        *SMALL,
        "trainer.max_epochs=2",
        f"data.data_dir={mnist_dir}",
        f"hydra.run.dir={run_dir}",
        "ckpt_path=last",
        cwd=tmp_path,
    )
    first = torch.load(method_runs / "lff" / "checkpoints" / "last.ckpt", weights_only=False)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    before, after = first["state_dict"]["sample_seen"], state["sample_seen"]
    # the first epoch's images are still known (the tables came back), and more were seen
    assert after[before].all() and 96 < after.sum() <= 2 * 96
    assert recorded(record) == [(1, 0), (1, 1), (1, 2)]  # a resume: epoch 1 alone


def test_group_dro_resumes_with_its_group_weights(method_runs, tmp_path, mnist_dir):
    """Stopped after epoch 0 and resumed, GroupDRO ends as the run that went straight on."""
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    shutil.copytree(method_runs / "group_dro", resumed)
    record = tmp_path / "batches.txt"
    common = ["experiment=colored_mnist", "model=group_dro", *SMALL, "trainer.max_epochs=2"]
    common.append(f"data.data_dir={mnist_dir}")
    run_ok(
        *record_batches(record), *common, f"hydra.run.dir={resumed}", "ckpt_path=last", cwd=tmp_path
    )
    run_ok(*common, f"hydra.run.dir={straight}", cwd=tmp_path)
    assert recorded(record) == [(1, 0), (1, 1), (1, 2)]  # a resume: epoch 1 alone
    first, after, reference = (
        torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for folder in (method_runs / "group_dro", resumed, straight)
    )
    assert not torch.equal(first["group_weights"], after["group_weights"])  # q moved on
    for key, value in reference.items():  # q (not started again from uniform) and the weights
        assert torch.equal(after[key], value), key


def test_the_method_label_comes_from_the_model_yaml_not_the_weights(tmp_path, mnist_dir):
    run_ok(
        "experiment=colored_mnist",
        "model.lambda_=0",
        "model.mu=0",
        *SMALL,
        f"data.data_dir={mnist_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["method"] == "lnl"


def test_eval_reproduces_the_run_metrics_from_its_checkpoint(method_runs, tmp_path, mnist_dir):
    source = method_runs / "group_dro"
    run_ok(
        "experiment=colored_mnist",
        "model=group_dro",
        *SMALL,
        f"data.data_dir={mnist_dir}",
        f"ckpt_path={source / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
        module="lnl_lightning.eval",
    )
    trained = json.loads((source / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["metrics"] == trained["metrics"]  # same weights, same data, same numbers
    assert evaluated["method"] == "group_dro"
    assert evaluated["tested_weights"] == str((source / "checkpoints" / "last.ckpt").resolve())
    for name in ("group_acc_test.csv", "group_acc_val.csv", "config_resolved.yaml"):
        assert (tmp_path / "eval" / name).is_file(), name


def test_eval_refuses_a_checkpoint_of_another_method_by_name(method_runs, tmp_path, mnist_dir):
    result = run_cli(
        "experiment=colored_mnist",
        *SMALL,
        f"data.data_dir={mnist_dir}",
        f"ckpt_path={method_runs / 'lff' / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
        module="lnl_lightning.eval",
    )
    assert result.returncode == 2
    assert "was written by a model=lff run, but this config is model=lnl" in result.stderr
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_eval_without_a_checkpoint_says_what_it_needs(tmp_path):
    result = run_cli(cwd=tmp_path, module="lnl_lightning.eval")
    assert result.returncode == 2 and "ckpt_path=<checkpoint file> is required" in result.stderr
