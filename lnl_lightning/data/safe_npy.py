"""Read a ``.npy`` file that holds a pickled object (``np.save`` of a dict) without running code.

``np.load(path, allow_pickle=True)`` unpickles whatever the file holds, and a pickle can call
any importable function: a tampered file runs code as it loads. Here the pickle is read by an
unpickler that resolves only the few globals a dict of numpy arrays needs (the array and dtype
constructors) and refuses every other one before it is called, so nothing else can run.
Python 2's pickles (their byte strings read as latin-1, as ``np.load(encoding="latin1")``
does) and Python 3's read alike.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from lnl_lightning.errors import DataError

_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's array constructor for pickles
# The globals a pickled dict of numpy arrays refers to, under the module names that numpy 1
# (and Python 2's numpy) and numpy 2 write.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,  # what np.save writes (Python 2 included)
    (2, 0): np.lib.format.read_array_header_2_0,
}


class RefusedPickle(DataError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`; nothing of it was called."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickle(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle(f"persistent id {pid!r}")


def load_pickled_npy(path: Path) -> Any:
    """The object a ``.npy`` file of dtype object and shape () holds (``np.save`` of a dict).

    Raises:
        DataError: naming ``path``, if it is not such a file, is truncated or damaged, or its
            pickle refers to anything but numpy arrays and dtypes (nothing of it is run).
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path} could not be read ({err.strerror or err})") from err
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = HEADER_READERS.get(version)
        if read_header is None:
            raise ValueError(f"format version {version}; expected one of {sorted(HEADER_READERS)}")
        shape, _, dtype = read_header(stream)
    except Exception as err:  # numpy raises ValueError or others for a damaged header
        raise DataError(f"{path} is not a .npy file (or its header is damaged): {err}") from err
    if dtype != np.dtype(object) or shape != ():
        raise DataError(
            f"{path} holds a {dtype} array of shape {shape}; expected the pickled dict that "
            f"np.save writes for a dict (dtype object, shape ())"
        )
    try:
        holder = _ArraysOnlyUnpickler(stream, encoding="latin1").load()
    except RefusedPickle as err:
        raise DataError(
            f"{path} was refused before any of it ran: its pickle calls {err}, which a file of "
            f"numpy arrays never needs (only {sorted('.'.join(k) for k in ALLOWED_GLOBALS)}). "
            f"It may have been tampered with; use a copy from the original source."
        ) from None
    except Exception as err:  # EOFError, UnpicklingError, ValueError... on truncated data
        raise DataError(
            f"{path} is truncated or damaged (its pickle does not read: "
            f"{type(err).__name__}: {err}); download it again"
        ) from err
    if not isinstance(holder, np.ndarray) or holder.dtype != object or holder.shape != ():
        raise DataError(f"{path}: expected one pickled object, got {type(holder).__name__}")
    return holder.item()
