"""The authors' Colored MNIST arrays: ``mnist_10color_jitter_var_<sigma^2>.npy``, one per sigma^2.

Each file is ``np.save`` of a Python 2 dict (the official loader reads it with
``np.load(path, encoding="latin1").item()``) with ``train_image`` (60000, 28, 28, 3) uint8,
``train_label`` (60000,) int8 in MNIST's training order, ``test_image`` (10000, 28, 28, 3)
uint8, ``test_label`` (10000,) int8 and ``test_gray`` (10000, 28, 28) uint8 (the plain MNIST
test images). It is read without running its pickle (:mod:`.safe_npy`) and checked key by key.

The arrays do not store an image's colour class; its bias group is the nearest of the per-digit
mean stroke colours of the training images (the fit split's, not the validation images').
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lnl_lightning.data.mnist_colors import NUM_DIGITS
from lnl_lightning.data.safe_npy import load_pickled_npy
from lnl_lightning.errors import DataError, DataNotFoundError

ARRAYS_FILE = "mnist_10color_jitter_var_{:.03f}.npy"
IMAGE_SIDE = 28
# key: (what it holds, its shape with N for the split's size)
ARRAY_KEYS = {
    "train_image": ("uint8 RGB images", ("train", IMAGE_SIDE, IMAGE_SIDE, 3)),
    "train_label": ("integer digits 0-9", ("train",)),
    "test_image": ("uint8 RGB images", ("test", IMAGE_SIDE, IMAGE_SIDE, 3)),
    "test_label": ("integer digits 0-9", ("test",)),
    "test_gray": ("uint8 grey images", ("test", IMAGE_SIDE, IMAGE_SIDE)),
}
WHERE_TO_GET = (
    "The files are distributed by the authors of Learning Not to Learn (the link is in "
    "dataset/colored_mnist/README.md of github.com/feidfoe/learning-not-to-learn); put them "
    "in one folder and give it as data.arrays_dir."
)


def arrays_path(arrays_dir: Path, color_var: float) -> Path:
    """The file of sigma^2 ``color_var`` (named as the official loader names it)."""
    return arrays_dir / ARRAYS_FILE.format(color_var)


def find_arrays(arrays_dir: Path, color_var: float) -> Path:
    """:func:`arrays_path`, or a clear error naming the file and what the folder holds."""
    path = arrays_path(arrays_dir, color_var)
    if path.is_file():
        return path
    present = sorted(p.name for p in arrays_dir.glob("mnist_10color_jitter_var_*.npy"))
    held = f"it holds {', '.join(present)}" if present else "it holds none of these files"
    raise DataNotFoundError(
        f"data.source=arrays with data.color_var={color_var}: {path} not found ({held}). "
        f"{WHERE_TO_GET}"
    )


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The five arrays of one file, checked: keys, dtypes, shapes and label values."""
    content = load_pickled_npy(path)
    if not isinstance(content, dict):
        raise DataError(f"{path} holds a {type(content).__name__}; expected a dict of arrays")
    content = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}
    missing = [k for k in ARRAY_KEYS if k not in content]
    if missing:
        raise DataError(
            f"{path} lacks the keys {missing}; expected {list(ARRAY_KEYS)}, found {list(content)}"
        )
    sizes: dict[str, int] = {}
    for key, (what, shape) in ARRAY_KEYS.items():
        array = content[key]
        if not isinstance(array, np.ndarray):
            raise DataError(f"{path}: '{key}' is a {type(array).__name__}; expected {what}")
        integer = np.issubdtype(array.dtype, np.integer)
        if (array.dtype != np.uint8) if what.startswith("uint8") else not integer:
            raise DataError(f"{path}: '{key}' has dtype {array.dtype}; expected {what}")
        split = shape[0]
        sizes.setdefault(split, array.shape[0] if array.ndim else -1)
        expected = (sizes[split], *shape[1:])
        if array.shape != expected:
            raise DataError(
                f"{path}: '{key}' has shape {array.shape}; expected {expected} "
                f"(({split} images, 28, 28{', 3' if len(shape) == 4 else ''}))"
            )
        if what.startswith("integer") and len(array) and (array.min() < 0 or array.max() > 9):
            raise DataError(
                f"{path}: '{key}' holds values from {array.min()} to {array.max()}; expected "
                f"digits 0-9"
            )
    return {key: content[key] for key in ARRAY_KEYS}


def stroke_colors(images: torch.Tensor) -> torch.Tensor:
    """Each uint8 ``(N, 3, H, W)`` image's mean colour over its non-black pixels, in [0, 1]."""
    stroke = images.amax(1, keepdim=True) > 0
    count = stroke.sum((1, 2, 3)).clamp_min(1)
    return (images.float() * stroke).sum((2, 3)) / count[:, None] / 255.0


def channels_first(arrays: dict[str, np.ndarray], key: str) -> torch.Tensor:
    """``arrays[key]``, ``(N, 28, 28, 3)``, as a ``(N, 3, 28, 28)`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(arrays[key].transpose(0, 3, 1, 2)))


def digit_means(colors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-digit mean of ``(N, 3)`` colours (NaN for a digit without images)."""
    counts = labels.bincount(minlength=NUM_DIGITS)
    sums = torch.zeros(NUM_DIGITS, colors.shape[1]).index_add_(0, labels, colors.float())
    return sums / counts[:, None]


def bias_groups(
    images: dict[str, torch.Tensor], train_labels: torch.Tensor, path: Path
) -> dict[str, torch.Tensor]:
    """Each image's colour class: the nearest of the training images' per-digit mean colours."""
    counts = train_labels.bincount(minlength=NUM_DIGITS)
    if (counts == 0).any():
        absent = (counts == 0).nonzero().flatten().tolist()
        raise DataError(f"{path}: the training split has no image of the digits {absent}")
    means = digit_means(stroke_colors(images["train"]), train_labels)
    return {
        split: torch.cdist(stroke_colors(split_images), means).argmin(1)
        for split, split_images in images.items()
    }


def array_splits(
    arrays: dict[str, np.ndarray],
    fit_index: torch.Tensor,
    val_index: torch.Tensor,
    grey_test: bool,
    path: Path,
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``{split: (uint8 (N, 3, 28, 28) images, labels, colour classes)}`` from :func:`read_arrays`.

    ``fit_index`` and ``val_index`` pick the training and validation images from the training
    arrays. ``grey_test``: the test split shows ``test_gray`` (on three channels), for the Gray
    oracle; its colour classes stay those of ``test_image``.
    """
    train_images = channels_first(arrays, "train_image")
    test_images = channels_first(arrays, "test_image")
    train_labels = torch.from_numpy(arrays["train_label"].astype(np.int64))
    test_labels = torch.from_numpy(arrays["test_label"].astype(np.int64))
    images = {
        "train": train_images[fit_index],
        "val": train_images[val_index],
        "test": test_images,
    }
    groups = bias_groups(images, train_labels[fit_index], path)
    if grey_test:
        grey = torch.from_numpy(np.ascontiguousarray(arrays["test_gray"]))
        images["test"] = grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    labels = {"train": train_labels[fit_index], "val": train_labels[val_index], "test": test_labels}
    return {split: (images[split], labels[split], groups[split]) for split in images}
