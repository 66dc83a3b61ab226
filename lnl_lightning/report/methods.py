"""How the report names and draws each method: from the method's own config (``display``).

A method's yaml says it once (``model.display: {label, color, marker}``, e.g. LNL, tab:blue,
s). A run's resolved config carries it, so a run of a method defined outside this package is
drawn as its config says; the package's own methods are known without any run (the rows of
published numbers). A method without a display is named as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import OmegaConf

from lnl_lightning.config import CONFIG_DIR
from lnl_lightning.schemas import DISPLAY, Display


def style_of(method: str, display: Mapping[str, Any]) -> Display:
    """``display`` (a method's ``model.display``) as a :class:`Display`; unnamed: ``method``."""
    return Display(
        str(display.get("label") or method), display.get("color"), display.get("marker") or "o"
    )


@functools.cache
def configured() -> dict[str, Display]:
    """``{method: Display}`` of every method that the package's model and experiment files set."""
    found: dict[str, Display] = {}
    paths = [
        *sorted((CONFIG_DIR / "model").glob("*.yaml")),
        *sorted((CONFIG_DIR / "experiment").glob("*.yaml")),
    ]
    for path in paths:
        node = OmegaConf.load(path)
        model = node.get("model", {}) if path.parent.name == "experiment" else node
        if "method" in model and DISPLAY in model:
            found.setdefault(str(model.method), style_of(str(model.method), model[DISPLAY]))
    return found


class Methods:
    """The styles of the configured methods, updated by those the runs' configs give."""

    def __init__(self, displays: Iterable[tuple[str, Mapping[str, Any]]] = ()) -> None:
        self.styles = dict(configured())
        self.styles.update((method, style_of(method, display)) for method, display in displays)

    def label(self, method: str) -> str:
        """How tables and legends name ``method`` ("LNL" for lnl); an unknown one as it is."""
        style = self.styles.get(method)
        return style.label if style else method

    def style(self, method: str) -> Display | None:
        return self.styles.get(method)
