"""Method labels and styles come from each method's own config (``model.display``)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lnl_lightning.config import CONFIG_DIR
from lnl_lightning.report.methods import Methods, configured, style_of

from .conftest import composed

MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("colored_mnist*.yaml"))


@pytest.mark.parametrize(
    "overrides", [[f"model={m}"] for m in MODELS] + [[f"experiment={e}"] for e in EXPERIMENTS]
)
def test_every_composed_method_is_drawn_as_the_report_knows_it(overrides):
    """A method that inherits another's file (baseline from lnl) must say its own display."""
    model = composed(*overrides).model
    display = OmegaConf.to_container(model.display)
    assert configured()[model.method] == style_of(model.method, display)


def test_each_configured_method_has_its_own_label_and_colour():
    styles = configured()
    assert {"baseline", "lnl", "blind_eye", "gray", "group_dro", "lff"} <= set(styles)
    assert styles["lnl"].label == "LNL" and styles["gray"].label == "Gray"
    colours = [style.color for style in styles.values()]
    assert None not in colours and len(set(colours)) == len(colours)
    assert len({style.label for style in styles.values()}) == len(styles)


def test_a_run_of_a_method_defined_elsewhere_is_drawn_as_its_config_says():
    methods = Methods([("toy", {"label": "Toy", "color": "black", "marker": "x"})])
    assert methods.label("toy") == "Toy" and methods.style("toy").color == "black"
    assert methods.label("lnl") == "LNL"  # the package's own are still known
    assert methods.label("unknown") == "unknown" and methods.style("unknown") is None
