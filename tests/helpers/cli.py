"""Running ``python -m lnl_lightning`` in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # runs can import tests.helpers.signal_callback
METRIC_KEYS = {
    "test/acc",
    "test/acc_aligned",
    "test/acc_conflicting",
    "test/acc_unbiased",
    "test/bias_acc",
    "val/acc",
    "val/acc_aligned",
    "val/acc_unbiased",
    "val/bias_acc",
}


def run_cli(
    *overrides: str, cwd: Path, module: str = "lnl_lightning", **env_vars: str
) -> subprocess.CompletedProcess:
    """``python -m <module> overrides`` (training by default; ``lnl_lightning.eval``)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **env_vars}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,  # a guard against a hang, not a limit a busy machine can reach
    )


def run_ok(*overrides: str, cwd: Path, **env_vars: str) -> subprocess.CompletedProcess:
    result = run_cli(*overrides, cwd=cwd, **env_vars)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def batches_into_epoch(checkpoint: dict) -> int:
    """Training batches done in the checkpoint's epoch, by Lightning's count and the loader's."""
    loop = checkpoint["loops"]["fit_loop"]
    done = loop["epoch_loop.batch_progress"]["current"]["completed"]
    assert loop["state_dict"]["combined_loader"] == [
        {"epoch": checkpoint["epoch"], "batches": done}
    ]
    return done
