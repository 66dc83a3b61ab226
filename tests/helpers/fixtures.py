"""Generated datasets and small training helpers shared by the tests."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from lnl_lightning.data.contract import BIAS_GROUP, BIAS_TARGET, IMAGE, LABEL


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format of the MNIST distribution (big-endian header)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_digits(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 grey 'digits': a bright bar whose position encodes the class, plus faint noise."""
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 3 + 2 * int(label)
        images[i, row : row + 3, 6:22] = 255
        images[i, 6:22, 12:15] = rng.integers(60, 200)
    return images


def make_mnist(root: Path, num_train: int = 600, num_test: int = 1000, seed: int = 0) -> Path:
    """A small MNIST in torchvision's layout ``root/MNIST/raw/`` with the four IDX files."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", num_train), ("t10k", num_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", fake_digits(labels, rng))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def random_batch(
    n: int = 8, num_classes: int = 10, bins: int = 8, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A batch in the contract's shapes for the Colored MNIST networks."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, bins, (n, 3, 14, 14), generator=g)
    target[:, :, :3] = -100  # some ignored background
    return {
        IMAGE: torch.rand(n, 3, 28, 28, generator=g),
        LABEL: torch.randint(0, num_classes, (n,), generator=g),
        BIAS_TARGET: target,
        BIAS_GROUP: torch.randint(0, num_classes, (n,), generator=g),
    }


def quiet_trainer(**kwargs):
    """A CPU Trainer without logger, checkpoints, progress bar, summary or validation."""
    import pytorch_lightning as pl

    settings = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "accelerator": "cpu",
    }
    return pl.Trainer(**{**settings, **kwargs})


def fit_on_batches(module, batches: list[dict], **trainer_kwargs):
    """Fit ``module`` on these batches, in order, with a quiet CPU Trainer; return the Trainer."""
    from torch.utils.data import DataLoader

    from lnl_lightning.data.colored_mnist import pass_batch

    trainer = quiet_trainer(**trainer_kwargs)
    trainer.fit(module, DataLoader(batches, batch_size=None, collate_fn=pass_batch))
    return trainer


def one_colour_per_class(
    palette: torch.Tensor, color_var: float, per_class: int, seed: int, **style
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` one-pixel images of grey 255 per palette colour, coloured by ``colorize``:
    the classes and each image's uint8 colour ``(N, 3)``."""
    from lnl_lightning.data.mnist_colors import colorize

    classes = torch.arange(len(palette)).repeat_interleave(per_class)
    digits = torch.full((len(classes), 1, 1), 255, dtype=torch.uint8)
    rng = np.random.default_rng(seed)
    return classes, colorize(digits, classes, palette, color_var, rng, **style)[:, :, 0, 0]
