"""MNIST's four IDX files through torchvision, with errors that say which file and what to do."""

from __future__ import annotations

import math
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
    extract_archives(raw)
    check_idx_files(raw, download)
    try:
        return (
            MNIST(str(data_dir), train=True, download=download),
            MNIST(str(data_dir), train=False, download=download),
        )
    except (RuntimeError, ValueError, AssertionError) as err:  # torchvision's, bad or missing files
        damaged = damaged_mnist_file(raw)
        if damaged is not None:
            raise DataError(
                f"{damaged} is damaged (truncated or not an IDX file: {damaged_reason(damaged)}). "
                f"Delete it (with data.download=true it is fetched again) or replace it with "
                f"the original file."
            ) from err
        missing = [n for n in MNIST_FILES if not (raw / n).is_file()]
        raise DataNotFoundError(
            f"MNIST not found (missing from {raw}: {', '.join(missing) or 'none'}) and could not "
            f"be downloaded ({err}). {how}"
        ) from err
    except OSError as err:
        raise DataNotFoundError(f"MNIST could not be read ({err}). {how}") from err


def extract_archives(raw: Path) -> None:
    """Each of the four files present only as its ``.gz`` archive: decompressed beside it (as
    torchvision does when it downloads them), so the archives work with data.download=false."""
    import gzip
    import shutil

    from lnl_lightning.records.files import write_atomic

    for name in MNIST_FILES:
        archive = raw / f"{name}.gz"
        if (raw / name).is_file() or not archive.is_file():
            continue

        def extract(tmp: Path, archive: Path = archive) -> None:
            with gzip.open(archive, "rb") as source, open(tmp, "wb") as target:
                shutil.copyfileobj(source, target)

        try:
            write_atomic(raw / name, extract)
        except (OSError, EOFError) as err:
            raise DataError(
                f"{archive} could not be decompressed into {raw / name} ({err}): check that "
                f"the archive is whole and that {raw} is writable, or put the decompressed "
                f"file there yourself"
            ) from err


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


IDX_MAGIC = {1: 0x801, 3: 0x803}  # unsigned bytes, 1 dimension (labels) or 3 (images)


def check_idx_files(raw: Path, download: bool) -> None:
    """Each of the four files that is present: an IDX file of the right kind and exactly as
    long as its header says; images and labels of a split the same in number. Without
    ``download``, the missing files are named."""
    counts: dict[str, int] = {}
    missing = []
    for name in MNIST_FILES:
        path = raw / name
        if not path.is_file():
            if not (raw / f"{name}.gz").is_file():
                missing.append(name)
            continue
        counts[name] = idx_count(path, ndim=3 if "images" in name else 1)
    if missing and not download:
        raise DataNotFoundError(
            f"MNIST files missing from {raw}: {', '.join(missing)} (data.download=false). Put "
            f"the original IDX files (or their .gz archives) there, point data.data_dir at the "
            f"folder that holds MNIST/raw/, or set data.download=true"
        )
    for split in ("train", "t10k"):
        images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        if images in counts and labels in counts and counts[images] != counts[labels]:
            raise DataError(
                f"{raw / images} holds {counts[images]} images but {raw / labels} "
                f"{counts[labels]} labels: one of them is from another copy of MNIST; replace "
                f"both with the original files"
            )


def idx_count(path: Path, ndim: int) -> int:
    """The number of items of an IDX file of ``ndim`` dimensions, or a DataError naming it."""
    import struct

    what = "image" if ndim == 3 else "label"
    fix = "Delete it (with data.download=true it is fetched again) or replace it with the original"
    with open(path, "rb") as handle:
        header = handle.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim:
        raise DataError(
            f"{path} is damaged: {len(header)} bytes, shorter than an IDX header. {fix}"
        )
    (magic,) = struct.unpack(">i", header[:4])
    if magic != IDX_MAGIC[ndim]:
        raise DataError(
            f"{path} is damaged or not an MNIST {what} file: its magic number is {magic:#x}, "
            f"{IDX_MAGIC[ndim]:#x} expected. {fix}"
        )
    dims = struct.unpack(f">{ndim}i", header[4:])
    expected = len(header) + math.prod(dims)
    size = path.stat().st_size
    if size != expected:
        raise DataError(
            f"{path} is damaged (truncated or not an IDX file): {size} bytes, but its header "
            f"({' x '.join(map(str, dims))}) says {expected}. {fix}"
        )
    return dims[0]
