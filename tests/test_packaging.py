"""`pip install .` (not editable) carries the configs: the CLI runs from the built wheel.

Built and installed without the network: no build isolation (the environment's setuptools,
a dev dependency, builds it) and no package index.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_configs_and_the_cli_runs_from_it(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=3600,  # a hang guard only
    )
    wheel = next(tmp_path.glob("lnl_lightning-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (ROOT / "conf").rglob("*.yaml"):
        assert f"lnl_lightning/conf/{config.relative_to(ROOT / 'conf').as_posix()}" in names
    for module in (ROOT / "lnl_lightning").rglob("*.py"):
        assert module.relative_to(ROOT).as_posix() in names  # every subpackage is listed

    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=3600,  # a hang guard only
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import lnl_lightning; print(lnl_lightning.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(site))
    shown = subprocess.run(
        [sys.executable, "-m", "lnl_lightning", "experiment=colored_mnist", "--cfg", "job"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,  # a hang guard only
    )
    assert shown.returncode == 0, shown.stderr
    assert "task_name: colored_mnist" in shown.stdout and "lambda_: 0.01" in shown.stdout
