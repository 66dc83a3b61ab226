"""The schemas' fields kept on disk (lnl_lightning/schema_cache.py): a refused command is
refused before torch and Lightning are imported, and the cached schemas are the derived ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lnl_lightning import schema_cache
from lnl_lightning.config import CONFIG_DIR
from lnl_lightning.schemas import KNOWN_FIELDS, fields_of, remember_fields, schema_of, targets_in

from .helpers.cli import REPO

# Runs the CLI (training or eval) and says, on its last stderr line, which heavy modules it
# imported before it stopped
IMPORTS_OF = """
import runpy, sys
module = sys.argv.pop(1)
sys.argv[0] = module
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    heavy = [m for m in ("torch", "pytorch_lightning") if m in sys.modules]
    print("imported:", ",".join(heavy) or "-", file=sys.stderr)
"""


def refuse(cache: Path, cwd: Path, module: str, *overrides: str) -> tuple[int, str, str]:
    """Exit status, what it printed and the heavy modules imported by one refused command."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF, module, *overrides],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "LNL_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    *printed, imported = done.stderr.strip().splitlines()
    return done.returncode, "\n".join(printed), imported


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    """A cache folder holding this code's schemas (written the way a first command writes)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LNL_CACHE_DIR", str(cache))
        KNOWN_FIELDS.clear()
        remember_fields(CONFIG_DIR, targets_in(CONFIG_DIR))
    assert len(list(cache.glob("schemas-*.json"))) == 1
    return cache


@pytest.mark.parametrize(
    ("module", "overrides", "status", "message"),
    [
        ("lnl_lightning", ["trainer.max_epochs=0"], 2, "trainer.max_epochs must be >= 1"),
        ("lnl_lightning", ["optimized_metric=test/acc"], 2, "never a test one"),
        ("lnl_lightning", ["ckpt_path=last"], 2, "ckpt_path=last: there is no"),
        ("lnl_lightning", ["test_ckpt=bestt"], 1, "test_ckpt"),  # the schema's choice
        ("lnl_lightning", ["data=nope"], 1, "Could not find 'data/nope'"),
        ("lnl_lightning", ["model.lamda_=0.1"], 1, "did you mean model.lambda_=0.1"),
        ("lnl_lightning.eval", [], 2, "ckpt_path=<checkpoint file> is required"),
        ("lnl_lightning.eval", ["ckpt_path=gone.ckpt"], 2, "gone.ckpt does not exist"),
    ],
)
def test_a_mistake_in_the_config_is_refused_before_torch_is_imported(
    tmp_path, warm_cache, module, overrides, status, message
):
    args = ["experiment=colored_mnist", f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    refused, printed, imported = refuse(warm_cache, tmp_path, module, *args)
    assert refused == status and message in printed, printed
    assert imported == "imported: -", f"{imported} before refusing {overrides}"
    assert not (tmp_path / "run").exists()  # and no folder left behind


def test_the_first_command_writes_the_cache_and_refuses_alike(tmp_path):
    cache, args = tmp_path / "cache", ["experiment=colored_mnist", "trainer.max_epochs=0"]
    cold = refuse(cache, tmp_path, "lnl_lightning", *args)  # derives the schemas: imports torch
    assert len(list(cache.glob("schemas-*.json"))) == 1
    warm = refuse(cache, tmp_path, "lnl_lightning", *args)
    assert cold[:2] == warm[:2] and warm[0] == 2
    assert (cold[2], warm[2]) == ("imported: torch,pytorch_lightning", "imported: -")


def test_cached_schemas_are_the_derived_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("LNL_CACHE_DIR", str(tmp_path))
    targets = targets_in(CONFIG_DIR)
    KNOWN_FIELDS.clear()
    remember_fields(CONFIG_DIR, targets)  # derives (empty cache) and writes
    written = json.loads(schema_cache.cache_file(CONFIG_DIR).read_text())
    assert set(written) == set(targets)
    for target, keys in targets.items():
        assert written[target]["fields"] == fields_of(target, keys), target
        derived = schema_of.__wrapped__(target, keys)  # not from the functools cache
        assert OmegaConf.structured(derived) == OmegaConf.structured(schema_of(target, keys))
        assert derived.__annotations__.keys() == schema_of(target, keys).__annotations__.keys()
        for name, kind in derived.__dataclass_fields__.items():
            assert schema_of(target, keys).__dataclass_fields__[name].type == kind.type, name


def test_a_damaged_cache_is_derived_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LNL_CACHE_DIR", str(tmp_path))
    targets = targets_in(CONFIG_DIR)
    path = schema_cache.cache_file(CONFIG_DIR)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"truncated": ')
    KNOWN_FIELDS.clear()
    remember_fields(CONFIG_DIR, targets)
    assert set(json.loads(path.read_text())) == set(targets)


def test_a_changed_config_file_makes_a_new_cache(tmp_path):
    conf = shutil.copytree(CONFIG_DIR, tmp_path / "conf")
    before = schema_cache.fingerprint(conf)
    assert schema_cache.fingerprint(conf) == before
    method = conf / "model" / "lnl.yaml"
    method.write_text(method.read_text() + "\n# changed\n")
    assert schema_cache.fingerprint(conf) != before


def test_the_cache_keeps_its_newest_files(tmp_path, monkeypatch):
    monkeypatch.setenv("LNL_CACHE_DIR", str(tmp_path))
    for n in range(schema_cache.KEPT + 5):
        old = tmp_path / f"schemas-old{n:02d}.json"
        old.write_text("{}")
        os.utime(old, (n, n))
    schema_cache.save(CONFIG_DIR, {"target": {"keys": [], "fields": []}})
    kept = sorted(p.name for p in tmp_path.glob("schemas-*.json"))
    assert len(kept) == schema_cache.KEPT
    assert schema_cache.cache_file(CONFIG_DIR).name in kept and "schemas-old05.json" not in kept
    assert "schemas-old06.json" in kept
