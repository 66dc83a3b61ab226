"""Quiet by default: what third-party libraries print that a user of this package cannot act on.

- Lightning's and Fabric's info lines (seed set, accelerators found, a product tip, why fit
  stopped) go below WARNING; ``hydra.verbose=[pytorch_lightning,lightning_fabric]`` (Hydra's own
  switch) brings them back, with their debug lines.
- Warnings that do not apply to runs of this package are ignored by message (each says why).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable

LIBRARY_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning")

IGNORED_WARNINGS = (
    # Lightning on a newer torch: an internal deprecation, nothing a user can change
    r".*isinstance\(treespec, LeafSpec\)",
    # the epoch values this package logs are already reduced over all processes
    r".*when logging on epoch level in distributed setting",
    # the data modules pick their workers; on a small machine fewer is deliberate
    r".*does not have many workers",
    r".*Total length of `DataLoader` across ranks is zero",
    # short runs (debug=fast, tests): a logging interval longer than the epoch is expected
    r".*is smaller than the logging interval",
    # checkpoints are this package's own files, loaded with their contents checked
    r".*`weights_only` was not set",
    # W&B: the logger passes its settings through; a deprecated one is W&B's concern
    r".*anonymous setting has no effect",
)


def quiet_libraries(verbose: Iterable[str] | str | bool = ()) -> None:
    """Apply both, except for the loggers named in ``verbose`` (Hydra's ``hydra.verbose``)."""
    if verbose is True:
        return
    named = {verbose} if isinstance(verbose, str) else set(verbose or ())
    for name in LIBRARY_LOGGERS:
        if name not in named:
            logging.getLogger(name).setLevel(logging.WARNING)
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
