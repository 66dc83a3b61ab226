"""Model selection as a declared rule: what picks a run's tested weights and a sweep's winner.

A run's rule (``conf/selection/``) names a validation metric, ``selection.metric``: with
``test_ckpt=best`` it picks the epoch whose weights are tested (the best checkpoint's monitor),
and it is what a sweeper maximises (``optimized_metric``). :func:`selection_rule` describes the
rule a config follows, including configs recorded before the rule was a setting; every run
writes it into ``metrics.json``, and the report keeps runs of different rules apart.

Whether a rule uses bias labels is declared with it (:func:`uses_bias_labels`): plain accuracy
on a validation split distributed like training needs none; a group metric needs each image's
bias group, and a validation split coloured at random (``val_random``) needs the bias attribute
known to colour it so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lnl_lightning.errors import ConfigError

# Colored MNIST's validation splits for each data.val_colors, by metric prefix
VAL_NAMES = {"train": ("val",), "random": ("val_random",), "both": ("val", "val_random")}
# metrics that need the label alone (and images distributed like training, for ``val``)
LABEL_ONLY = {"val": ("acc",), "train": ("acc", "label_loss", "images_per_s")}
# the rules of conf/selection/ and the metric each maximises (records made before the rule was
# a setting are named by their metric)
RULE_METRICS = {
    "aligned": "val/acc",
    "unbiased": "val_random/acc",
    "worst_group": "val_random/acc_worst_group",
}
RULE_NAMES = {metric: name for name, metric in RULE_METRICS.items()}


def uses_bias_labels(metric: str) -> bool:
    """Whether selecting by ``metric`` needs the bias attribute of the validation images."""
    stage, _, name = str(metric).partition("/")
    return name not in LABEL_ONLY.get(stage, ())


def validation_names(data: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The metric prefixes of the validation splits ``data`` gives (``val`` unless it has
    ``val_colors``)."""
    colors = (data or {}).get("val_colors")
    return VAL_NAMES.get(str(colors), ("val",)) if colors is not None else ("val",)


def selection_rule(config: Mapping[str, Any]) -> dict[str, Any]:
    """The rule a resolved config follows: its name, the weights tested (``last``, or ``best
    <metric>``), the metric a sweep maximises, and whether any of it uses bias labels."""
    chosen = config.get("selection") or {}
    checkpoint = (config.get("callbacks") or {}).get("model_checkpoint") or {}
    metric = checkpoint.get("monitor") or chosen.get("metric") or "val/acc"
    sweep = str(config.get("optimized_metric") or metric)
    best = config.get("test_ckpt") == "best"
    weights = f"best {metric}" if best else "last"
    used = [m for m in ((metric,) if best else ()) + (sweep,) if uses_bias_labels(m)]
    name = chosen.get("name") or RULE_NAMES.get(sweep, "custom")
    named = RULE_METRICS.get(name)  # the metric of conf/selection/<name>.yaml
    if (
        named not in (None, sweep)
        or chosen.get("metric") not in (None, sweep)
        or (best and metric != sweep)
    ):
        name = "custom"  # the metrics were set one by one, not as the named rule
    return {
        "name": name,
        "weights": weights,
        "sweep_metric": sweep,
        "uses_bias_labels": bool(used),
    }


def describe_rule(rule: Mapping[str, Any]) -> str:
    """In words a reader knows: ``unbiased (tests the last epoch's weights; a sweep maximises
    val_random/acc; uses bias labels)``."""
    weights = "the last epoch's" if rule["weights"] == "last" else f"the epoch {rule['weights']}'s"
    labels = "uses bias labels" if rule["uses_bias_labels"] else "no bias labels"
    return (
        f"{rule['name']} (tests {weights} weights; a sweep maximises {rule['sweep_metric']}; "
        f"{labels})"
    )


def identity_of(rule: Mapping[str, Any]) -> str:
    """What tells two rules apart in a run's identity: the weights and the sweep metric."""
    return f"weights {rule['weights']}, sweep {rule['sweep_metric']}"


def check_selection(cfg: Mapping[str, Any]) -> None:
    """``selection.metric`` and ``optimized_metric`` name a split the data validates on."""
    logged = validation_names(cfg.get("data"))
    metric = str((cfg.get("selection") or {}).get("metric"))
    if metric.partition("/")[0] not in logged:
        raise ConfigError(
            f"selection.metric={metric} must be a validation metric of this data, whose "
            f"validation splits are {', '.join(f'{n}/' for n in logged)}{hint(metric, cfg)}"
        )
    sweep = str(cfg.get("optimized_metric"))
    if sweep.partition("/")[0] not in (*logged, "train"):
        raise ConfigError(
            f"optimized_metric={sweep} is not logged by this data, whose validation splits are "
            f"{', '.join(f'{n}/' for n in logged)}{hint(sweep, cfg)}"
        )


def hint(metric: str, cfg: Mapping[str, Any]) -> str:
    stage = metric.partition("/")[0]
    if "val_colors" not in (cfg.get("data") or {}):
        return " (only Colored MNIST has val_random/: data.val_colors)"
    for colors, names in VAL_NAMES.items():
        if stage in names:
            return f": add data.val_colors={colors} (or both)"
    return ""
