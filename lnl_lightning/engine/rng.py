"""Python's, NumPy's and torch's generator states, for checkpoints: a resume draws on as the
run it continues would have."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def rng_states() -> dict[str, Any]:
    """Python's, NumPy's and torch's generator states, as plain data and tensors."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` saved."""
    random.setstate(states["python"])
    name, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    saved = states["cuda"]
    if saved and torch.cuda.is_available():
        # one state per GPU of the saving machine: restore those this machine has
        count = torch.cuda.device_count()
        if len(saved) != count:
            log.warning(
                "the checkpoint holds the CUDA generator states of %d GPU(s), this machine "
                "has %d: restoring the first %d",
                len(saved),
                count,
                min(len(saved), count),
            )
        for index, state in enumerate(saved[:count]):
            torch.cuda.set_rng_state(state, index)
