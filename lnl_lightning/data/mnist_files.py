"""MNIST's four IDX files through torchvision, with errors that say which file and what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lnl_lightning.errors import DataError, DataNotFoundError

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def load_mnist(data_dir: Path, download: bool) -> tuple[Any, Any]:
    """MNIST train and test sets through torchvision; a clear error if the files are missing."""
    from torchvision.datasets import MNIST

    raw = data_dir / "MNIST" / "raw"
    how = (
        f"MNIST is expected in {raw} as the four IDX files {', '.join(MNIST_FILES)} "
        f"(the .gz archives also work). Download them from https://yann.lecun.com/exdb/mnist/ "
        f"(or any torchvision mirror) into that folder, or point data.data_dir at the folder "
        f"that holds MNIST/raw/."
    )
    try:
        return (
            MNIST(str(data_dir), train=True, download=download),
            MNIST(str(data_dir), train=False, download=download),
        )
    except (RuntimeError, ValueError) as err:  # torchvision's errors for bad or missing files
        damaged = damaged_mnist_file(raw)
        if damaged is not None:
            raise DataError(
                f"{damaged} is damaged (truncated or not an IDX file: {damaged_reason(damaged)}). "
                f"Delete it (with data.download=true it is fetched again) or replace it with "
                f"the original file."
            ) from err
        raise DataNotFoundError(
            f"MNIST not found and could not be downloaded ({err}). {how}"
        ) from err
    except OSError as err:
        raise DataNotFoundError(f"MNIST could not be read ({err}). {how}") from err


def damaged_mnist_file(raw: Path) -> Path | None:
    """The first of the four MNIST files in ``raw`` that exists but does not read."""
    for name in MNIST_FILES:
        path = raw / name
        if path.is_file() and damaged_reason(path) is not None:
            return path
    return None


def damaged_reason(path: Path) -> str | None:
    """Why an IDX file does not read (None if it does)."""
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    try:
        read_sn3_pascalvincent_tensor(str(path), strict=False)
    except Exception as err:  # struct, shape and dtype errors alike
        return f"{type(err).__name__}: {err}"
    return None
