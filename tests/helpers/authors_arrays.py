"""Files in the layout of the authors' Colored MNIST arrays, written as Python 2 wrote them.

``np.save`` of a dict writes a ``.npy`` header (dtype object, shape ()) and then a pickle
(protocol 2) of the 0-d object array that holds the dict. Python 2's numpy names its array
constructor ``numpy.core.multiarray._reconstruct`` and pickles every ``str`` (dict keys, dtype
codes, the arrays' raw bytes) as a byte string (``SHORT_BINSTRING``/``BINSTRING``): that is
what this writer emits, so no Python 2 is needed to make such a file.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lnl_lightning.data.mnist_colors import SUPPLEMENT_PALETTE, colorize

from .fixtures import fake_digits

_RECONSTRUCT = np.empty(0).__reduce__()[0]
PY2_NAMES = {id(_RECONSTRUCT): ("numpy.core.multiarray", "_reconstruct")}


class Python2Pickler(pickle._Pickler):  # the pure-Python pickler, whose opcodes we choose
    """Protocol 2 as Python 2 wrote it: str and bytes as byte strings, Python 2 module names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_byte_string(self, obj: Any) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_byte_string
    dispatch[str] = save_byte_string

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module, name = PY2_NAMES.get(id(obj), (obj.__module__, name or obj.__qualname__))
        module = {"builtins": "__builtin__"}.get(module, module)
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)


def npy_of_object(obj: Any, pickler: type[pickle.Pickler] = Python2Pickler) -> bytes:
    """The bytes ``np.save(path, obj)`` writes for a dict (header, then the pickle)."""
    holder = np.empty((), dtype=object)
    holder[()] = obj
    out = io.BytesIO()
    header = {"descr": "|O", "fortran_order": False, "shape": ()}
    np.lib.format.write_array_header_1_0(out, header)
    pickler(out, protocol=2).dump(holder)
    return out.getvalue()


def authors_arrays(
    color_var: float = 0.02, num_train: int = 600, num_test: int = 200, seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The five arrays of one file, made like the authors' (flat colours on binary strokes),
    and the test images' colour classes (which the files do not store)."""
    rng = np.random.default_rng(seed)
    palette = torch.tensor(SUPPLEMENT_PALETTE, dtype=torch.float32) / 255
    arrays: dict[str, np.ndarray] = {}
    classes = np.empty(0)
    for split, n in (("train", num_train), ("test", num_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        grey = fake_digits(labels, rng)
        classes = labels if split == "train" else rng.integers(0, 10, n)
        colored = colorize(
            torch.from_numpy(grey), torch.from_numpy(classes), palette, color_var, rng
        )
        arrays[f"{split}_image"] = colored.permute(0, 2, 3, 1).numpy().copy()
        arrays[f"{split}_label"] = labels.astype(np.int8)
    arrays["test_gray"] = grey
    return arrays, classes


def write_authors_arrays(folder: Path, arrays: dict[str, Any], color_var: float = 0.02) -> Path:
    """``folder/mnist_10color_jitter_var_<color_var>.npy`` holding ``arrays`` (Python 2 style)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"mnist_10color_jitter_var_{color_var:.03f}.npy"
    path.write_bytes(npy_of_object(arrays))
    return path


class WritesAFile:
    """An object whose unpickling writes ``marker``: what a tampered file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)
