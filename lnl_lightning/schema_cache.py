"""The schemas' fields kept on disk, so that composing a config imports no torch.

Deriving a schema from a constructor's signature (:mod:`lnl_lightning.schemas`) imports the
component, and with it torch and Lightning: about 4.5 s before a mistyped command could be
refused. The fields found are written once, as JSON, to ``$LNL_CACHE_DIR`` (default
``$XDG_CACHE_HOME/lnl_lightning``, else ``~/.cache/lnl_lightning``) under a fingerprint of the
package's code and configs and of the installed versions of what the signatures come from; any
change there makes a new file. A cache that cannot be read or written is ignored: the fields
are then derived each time, as without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# the installed packages whose versions a fingerprint names (their signatures may be derived)
VERSIONED = ("torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf")
KEPT = 20  # cache files kept (checkouts and versions side by side); older ones are removed
PACKAGE_DIR = Path(__file__).resolve().parent


def cache_dir() -> Path:
    """Where the cached fields go: ``LNL_CACHE_DIR``, else the user's cache folder."""
    if os.environ.get("LNL_CACHE_DIR"):
        return Path(os.environ["LNL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lnl_lightning"


def fingerprint(conf_dir: Path) -> str:
    """A hash of the package's .py files, the configs and the versions they are read with."""
    digest = hashlib.sha256(sys.version.encode())
    for name in VERSIONED:
        try:
            digest.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name} absent".encode())
    for root, pattern in ((PACKAGE_DIR, "*.py"), (conf_dir.resolve(), "*.yaml")):
        for path in sorted(root.rglob(pattern)):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def cache_file(conf_dir: Path) -> Path:
    return cache_dir() / f"schemas-{fingerprint(conf_dir)}.json"


def load(conf_dir: Path) -> dict[str, Any] | None:
    """The cached fields of each target (``{target: {"keys": [...], "fields": [...]}}``), if any."""
    try:
        return json.loads(cache_file(conf_dir).read_text())
    except (OSError, ValueError):
        return None


def save(conf_dir: Path, schemas: dict[str, Any]) -> None:
    """Write the fields (atomically; silently not at all where the cache is not writable),
    keeping the :data:`KEPT` newest files."""
    try:
        path = cache_file(conf_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(schemas, indent=1, sort_keys=True))
        partial.replace(path)
        for old in sorted(path.parent.glob("schemas-*.json"), key=os.path.getmtime)[:-KEPT]:
            old.unlink(missing_ok=True)
    except (OSError, TypeError, ValueError):
        return
