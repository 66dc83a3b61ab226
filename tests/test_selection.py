"""The selection rule of a config (lnl_lightning/selection.py) and its checks at start."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from lnl_lightning.config import CONFIG_MODULE
from lnl_lightning.errors import ConfigError
from lnl_lightning.run_checks import check_settings
from lnl_lightning.selection import selection_rule, uses_bias_labels


def rule_of(*overrides: str, experiment: str = "colored_mnist") -> dict:
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"experiment={experiment}", "paths.output_dir=/nowhere", *overrides]
        )
    check_settings(cfg)
    return selection_rule(OmegaConf.to_container(cfg, resolve=True))


def test_the_default_rule_is_the_aligned_validation_accuracy_without_bias_labels():
    assert rule_of() == {
        "name": "aligned",
        "weights": "last",
        "sweep_metric": "val/acc",
        "uses_bias_labels": False,
    }


def test_a_named_rule_sets_the_best_checkpoint_and_the_sweep_metric():
    assert rule_of("selection=unbiased", "data.val_colors=both", "test_ckpt=best") == {
        "name": "unbiased",
        "weights": "best val_random/acc",
        "sweep_metric": "val_random/acc",
        "uses_bias_labels": True,
    }
    worst = rule_of("selection=worst_group", "data.val_colors=random")
    assert worst["sweep_metric"] == "val_random/acc_worst_group" and worst["uses_bias_labels"]


def test_metrics_set_one_by_one_make_a_custom_rule_and_say_so():
    rule = rule_of("optimized_metric=val/acc_unbiased")
    assert rule["name"] == "custom" and rule["uses_bias_labels"]  # a group metric
    worst = rule_of("selection.metric=val/acc_worst_group", experiment="dogs_cats")
    assert worst["name"] == "custom" and worst["sweep_metric"] == "val/acc_worst_group"


def test_a_config_recorded_before_the_rule_was_a_setting_has_its_rule_derived():
    old = {"test_ckpt": "last", "optimized_metric": "val/acc"}  # no selection, no monitor
    assert selection_rule(old)["name"] == "aligned"
    old_best = {
        **old,
        "test_ckpt": "best",
        "callbacks": {"model_checkpoint": {"monitor": "val/acc"}},
    }
    assert selection_rule(old_best)["weights"] == "best val/acc"


@pytest.mark.parametrize(
    ("metric", "uses"),
    [
        ("val/acc", False),
        ("train/acc", False),
        ("val/acc_unbiased", True),
        ("val/acc_worst_group", True),
        ("val_random/acc", True),
        ("val/bias_acc", True),
    ],
)
def test_which_metrics_use_bias_labels(metric, uses):
    assert uses_bias_labels(metric) is uses


@pytest.mark.parametrize(
    ("overrides", "experiment", "message"),
    [
        (["selection=unbiased"], "colored_mnist", "add data.val_colors=random"),
        (["data.val_colors=random"], "colored_mnist", "selection.metric=val/acc.*val_random/"),
        (["optimized_metric=val_random/acc"], "colored_mnist", "optimized_metric=val_random"),
        (["selection=worst_group"], "dogs_cats", "only Colored MNIST has val_random/"),
        (["selection.metric=test/acc"], "colored_mnist", "never a test one"),
    ],
)
def test_a_rule_the_data_cannot_measure_is_refused_at_start(overrides, experiment, message):
    with pytest.raises(ConfigError, match=message):
        rule_of(*overrides, experiment=experiment)
