"""Colored MNIST with the sigma^2 protocol of Learning Not to Learn (Kim et al., CVPR 2019).

Protocol:

- Ten mean colours, one per digit class (:data:`PAPER_PALETTE`, in [0, 255]; the colour
  map of ReBias's Biased-MNIST: the official LNL data ship as pre-generated arrays whose
  palette is not published).
- Train: every image gets one colour drawn from N(mean colour of its digit, sigma^2 I)
  in [0, 1] units, clipped to [0, 1] (``color_noise="resample"``: each channel drawn
  again until it falls inside, a truncated normal). The strokes are coloured (pixel = intensity x
  colour) and the background stays black. ``color_var`` is sigma^2; the paper's grid
  is 0.020 ... 0.050 (smaller sigma^2 = stronger bias).
- Validation: a held-out part of the training set, coloured like training (biased).
  Model selection uses only this split.
- Test: the 10k MNIST test images; each gets a colour class drawn uniformly at random,
  independent of the digit, then the same noise. Accuracy on it is unbiased accuracy.

``protocol="rebias"`` is the protocol of ReBias (Bahng et al., ICML 2020) instead: the digit
is white and the *background* is coloured with a palette colour (no noise); a training
image gets its digit's colour with probability ``rho`` and one of the nine others
otherwise; test colours are uniform. There every pixel carries the colour target.

The colours are generated once, deterministically from ``seed``, into in-memory uint8
tensors. ``bias_target`` is the official per-pixel colour map (14x14, 8 bins per
channel, background ignored) and ``bias_group`` the colour class of the image.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lnl_lightning.data.checks import check_color_bins, check_loader_settings, check_writable
from lnl_lightning.data.contract import (
    BIAS_GROUP,
    BIAS_TARGET,
    IMAGE,
    INDEX,
    LABEL,
    BiasSpec,
    color_bin_target,
    to_grey,
)
from lnl_lightning.data.device_batches import DeviceBatches
from lnl_lightning.data.sampling import ResumableLoader, run_seed
from lnl_lightning.errors import ConfigError, DataError, DataNotFoundError
from lnl_lightning.files import write_atomic

log = logging.getLogger(__name__)

PAPER_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (225, 225, 0),
    (225, 0, 225),
    (0, 255, 255),
    (255, 128, 0),
    (255, 0, 128),
    (128, 0, 255),
    (128, 128, 128),
)
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NUM_DIGITS = 10
PROTOCOLS = ("variance", "rebias")
COLOR_NOISES = ("clip", "resample")


def colorize_background(
    digits: torch.Tensor, color_class: torch.Tensor, palette: torch.Tensor
) -> torch.Tensor:
    """ReBias colouring: white digit (every non-zero pixel), background in ``palette[class]``."""
    background = (palette[color_class] * 255).round().to(torch.uint8)[:, :, None, None]
    stroke = (digits > 0).unsqueeze(1)
    return torch.where(
        stroke, torch.tensor(255, dtype=torch.uint8), background.expand(-1, -1, *digits.shape[1:])
    )


def rebias_color_classes(
    labels: torch.Tensor, rho: float, rng: np.random.Generator
) -> torch.Tensor:
    """The digit's class with probability ``rho``, else one of the other nine, uniformly."""
    aligned = torch.from_numpy(rng.random(len(labels)) < rho)
    shift = torch.from_numpy(rng.integers(1, NUM_DIGITS, len(labels)))
    return torch.where(aligned, labels, (labels + shift) % NUM_DIGITS)


def draw_colors(
    means: torch.Tensor, color_var: float, rng: np.random.Generator, noise: str = "clip"
) -> torch.Tensor:
    """One colour per row of ``means`` (``(N, 3)`` in [0, 1]), drawn from N(mean, color_var I).

    ``noise="clip"`` clips each channel to [0, 1]; ``noise="resample"`` draws each channel
    again until it falls inside (0, 1) (a truncated normal; the draws after the first come
    from ``rng`` in order, so the result is as deterministic as the clipped one).
    """
    std = math.sqrt(color_var)
    colors = means + std * torch.from_numpy(rng.standard_normal(tuple(means.shape))).float()
    if noise == "clip":
        return colors.clamp_(0.0, 1.0)
    outside = (colors <= 0.0) | (colors >= 1.0)
    while outside.any():
        redraw = torch.from_numpy(rng.standard_normal(int(outside.sum()))).float()
        colors[outside] = means[outside] + std * redraw
        outside = (colors <= 0.0) | (colors >= 1.0)
    return colors


def colorize(
    digits: torch.Tensor,
    color_class: torch.Tensor,
    palette: torch.Tensor,
    color_var: float,
    rng: np.random.Generator,
    chunk: int = 8192,
    noise: str = "clip",
) -> torch.Tensor:
    """Colour grey digits: each image gets one colour from N(palette[class], color_var I).

    Args:
        digits: uint8 ``(N, H, W)`` grey images.
        color_class: int64 ``(N,)`` index into ``palette`` for each image.
        palette: float ``(C, 3)`` mean colours in [0, 1].
        color_var: sigma^2 of the colour noise, in [0, 1] units.
        rng: the generator the noise is drawn from.
        noise: how a draw outside [0, 1] is handled (:func:`draw_colors`).

    Returns:
        uint8 ``(N, 3, H, W)``: pixel = round(intensity x colour).
    """
    colors = draw_colors(palette[color_class], color_var, rng, noise)
    out = torch.empty(len(digits), 3, *digits.shape[1:], dtype=torch.uint8)
    for start in range(0, len(digits), chunk):  # bounded float memory
        end = start + chunk
        grey = digits[start:end].float().unsqueeze(1)
        out[start:end] = (grey * colors[start:end, :, None, None]).round_().to(torch.uint8)
    return out


class ColoredImages(Dataset):
    """In-memory coloured images that return whole batches (``__getitems__``).

    Indexing a list of positions gathers the batch with one tensor operation, so a
    batch costs no per-sample Python work; :func:`pass_batch` is its collate_fn.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        target_size: int,
        num_bins: int,
        grayscale: bool = False,
    ) -> None:
        self.images, self.labels, self.groups = images, labels, groups
        self.target_size, self.num_bins = target_size, num_bins
        self.grayscale = grayscale

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        image = images.float().div_(255.0)
        return {
            IMAGE: to_grey(image) if self.grayscale else image,
            LABEL: self.labels[index],
            BIAS_TARGET: color_bin_target(images, self.target_size, self.num_bins),  # the colour
            BIAS_GROUP: self.groups[index],
            INDEX: index,
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def pass_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """collate_fn for datasets whose ``__getitems__`` already returns a batch."""
    return batch


def check_palette(palette: Any) -> torch.Tensor:
    """Validate ``data.palette`` ("paper" or 10 RGB triples in [0, 255]); return it in [0, 1]."""
    if isinstance(palette, str):
        if palette != "paper":
            raise ConfigError(
                f"data.palette must be 'paper' or a list of 10 RGB colours, got '{palette}'"
            )
        palette = PAPER_PALETTE
    colors = [list(c) for c in palette]
    if len(colors) != NUM_DIGITS:
        raise ConfigError(
            f"data.palette must hold {NUM_DIGITS} RGB colours (one per digit), got {len(colors)}"
        )
    for c in colors:
        if len(c) != 3 or not all(0 <= v <= 255 for v in c):
            raise ConfigError(f"data.palette colours must be 3 values in [0, 255], got {c}")
    return torch.tensor(colors, dtype=torch.float32) / 255.0


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


class ColoredMNISTDataModule(pl.LightningDataModule):
    """Colored MNIST (Kim et al. 2019) in the batch contract of :mod:`lnl_lightning.data.contract`.

    Args:
        data_dir: folder that holds ``MNIST/raw/`` (torchvision's layout).
        color_var: sigma^2 of the colour noise, in (0, 1] ("variance" protocol).
        protocol: "variance" (Kim et al.: coloured strokes, sigma^2) or "rebias"
            (Bahng et al.: coloured background, a share ``rho`` of aligned training images).
        rho: share of bias-aligned training images in the "rebias" protocol.
        batch_size: images per batch (per process).
        val_fraction: share of the training images held out for validation, in [0, 1).
        seed: fixes colours and the train/val split, bit for bit.
        palette: "paper" or 10 RGB colours in [0, 255].
        color_noise: "clip" (a colour channel drawn outside [0, 1] is clipped) or
            "resample" (it is drawn again until inside: a truncated normal).
        color_bins: bins per RGB channel of the per-pixel bias target.
        target_size: side of the bias target map (14, the official net's feature map).
        num_workers: DataLoader workers (0 is fastest for in-memory data).
        download: let torchvision download MNIST when it is missing.
        cache: also store the coloured tensors in ``data_dir/colored_mnist_cache``.
        test_each_epoch: also evaluate the test split after every training epoch (as a
            second validation loader), for learning curves; validation alone selects models.
        on_device: keep the images on the training device and build each batch there
            (:class:`~.device_batches.DeviceBatches`): same batches, same order, no host
            work per step. One process only.
        grayscale: the network sees each image as grey (its luminance on the three
            channels): the "Gray" oracle of the paper's figure, with no colour to learn. The
            bias target (h's colour bins) is still the image's colour.
    """

    def __init__(
        self,
        data_dir: str = "data",
        color_var: float = 0.02,
        protocol: str = "variance",
        rho: float = 0.99,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        palette: Any = "paper",
        color_noise: str = "clip",
        color_bins: int = 8,
        target_size: int = 14,
        num_workers: int = 0,
        download: bool = True,
        cache: bool = False,
        test_each_epoch: bool = False,
        on_device: bool = False,
        grayscale: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(color_var, (int, float)) or not 0.0 < color_var <= 1.0:
            raise ConfigError(
                f"data.color_var must be in (0, 1] (sigma^2 in [0,1] colour units), got {color_var}"
            )
        if protocol not in PROTOCOLS:
            raise ConfigError(f"data.protocol must be one of {PROTOCOLS}, got '{protocol}'")
        if color_noise not in COLOR_NOISES:
            raise ConfigError(
                f"data.color_noise must be one of {COLOR_NOISES}, got '{color_noise}'"
            )
        if not isinstance(rho, (int, float)) or not 0.0 <= rho <= 1.0:
            raise ConfigError(
                f"data.rho must be in [0, 1] (share of bias-aligned images), got {rho}"
            )
        check_loader_settings(batch_size, val_fraction, num_workers)
        check_color_bins(color_bins)
        self.palette = check_palette(palette)
        self.data_dir = Path(data_dir).expanduser().resolve()
        if self.data_dir.is_file():
            raise ConfigError(
                f"data.data_dir must be a folder holding MNIST/raw/, but {self.data_dir} is a file"
            )
        raw = self.data_dir / "MNIST" / "raw"
        if download and not all((raw / name).is_file() for name in MNIST_FILES):
            check_writable(raw, "data.data_dir", "unpacking or downloading MNIST")
        self.color_var = float(color_var)
        self.protocol, self.rho = protocol, float(rho)
        self.color_noise = color_noise
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.color_bins = color_bins
        self.target_size = target_size
        self.num_workers = num_workers
        self.download = download
        self.cache = cache
        self.test_each_epoch = test_each_epoch
        self.on_device = on_device
        self.grayscale = bool(grayscale)
        self.splits: dict[str, ColoredImages] = {}
        self.test_names = ("test",)
        self.bias_spec = BiasSpec(
            num_classes=NUM_DIGITS,
            num_bias_groups=NUM_DIGITS,
            num_bias_classes=color_bins,
            aligned_cells=tuple((d, d) for d in range(NUM_DIGITS)),
            class_names=tuple(str(d) for d in range(NUM_DIGITS)),
            group_names=tuple(f"color {c}" for c in range(NUM_DIGITS)),
            target_kind="pixel",
        )

    def prepare_data(self) -> None:
        load_mnist(self.data_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        tensors = self._load_cache() if self.cache else None
        if tensors is None:
            tensors = self.generate()
            if self.cache:
                self._save_cache(tensors)
        for name, (images, labels, groups) in tensors.items():
            self.splits[name] = ColoredImages(
                images, labels, groups, self.target_size, self.color_bins, self.grayscale
            )

    def train_label_groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and bias groups of the training split, by position (see the contract)."""
        self.setup("fit")
        train = self.splits["train"]
        return train.labels, train.groups

    def generate(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Colour MNIST: ``{split: (uint8 images, labels, colour classes)}`` for train/val/test."""
        train, test = load_mnist(self.data_dir, download=False)
        split_seed, train_seed, test_seed = np.random.SeedSequence(self.seed).spawn(3)

        order = torch.from_numpy(np.random.default_rng(split_seed).permutation(len(train.targets)))
        num_val = int(round(self.val_fraction * len(order)))
        fit_index, val_index = order[num_val:], order[:num_val]
        # One colour draw for all 60k training images, so the split does not change colours.
        train_rng, test_rng = np.random.default_rng(train_seed), np.random.default_rng(test_seed)
        test_groups = torch.from_numpy(test_rng.integers(0, NUM_DIGITS, len(test.targets)))
        if self.protocol == "rebias":
            train_groups = rebias_color_classes(train.targets, self.rho, train_rng)
            train_images = colorize_background(train.data, train_groups, self.palette)
            test_images = colorize_background(test.data, test_groups, self.palette)
        else:
            train_groups = train.targets
            train_images = colorize(
                train.data,
                train_groups,
                self.palette,
                self.color_var,
                train_rng,
                noise=self.color_noise,
            )
            test_images = colorize(
                test.data,
                test_groups,
                self.palette,
                self.color_var,
                test_rng,
                noise=self.color_noise,
            )
        return {
            "train": (train_images[fit_index], train.targets[fit_index], train_groups[fit_index]),
            "val": (train_images[val_index], train.targets[val_index], train_groups[val_index]),
            "test": (test_images, test.targets.clone(), test_groups),
        }

    def _cache_file(self) -> Path:
        palette_id = hashlib.sha1(self.palette.numpy().tobytes()).hexdigest()[:8]
        bias = f"rho{self.rho:.4f}" if self.protocol == "rebias" else f"var{self.color_var:.4f}"
        if self.protocol == "variance" and self.color_noise != "clip":
            bias += f"_{self.color_noise}"
        key = f"{bias}_val{self.val_fraction:.3f}_seed{self.seed}_pal{palette_id}"
        return self.data_dir / "colored_mnist_cache" / f"{key}.pt"

    def _load_cache(self) -> dict | None:
        path = self._cache_file()
        return torch.load(path) if path.exists() else None

    def _save_cache(self, tensors: dict) -> None:
        write_atomic(self._cache_file(), lambda tmp: torch.save(tensors, tmp))

    def _loader(self, split: str) -> DataLoader | DeviceBatches:
        if self.on_device:
            return self._device_loader(split)
        loader = ResumableLoader if split == "train" else DataLoader  # train: shuffled
        return loader(
            self.splits[split],
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=pass_batch,
            persistent_workers=self.num_workers > 0,
        )

    def _device_loader(self, split: str) -> DeviceBatches:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            raise ConfigError(
                "data.on_device=true builds every batch in one process; with several processes "
                "(DDP) use data.on_device=false"
            )
        data = self.splits[split]
        loader = DeviceBatches(
            data.images[None],
            data.labels[None],
            data.groups[None],
            member_data=[0],
            batch_size=self.batch_size,
            seeds=[run_seed()] if split == "train" else None,
            target_size=self.target_size,
            num_bins=self.color_bins,
            packed=False,
            grayscale=self.grayscale,
        )
        return loader.to(trainer.strategy.root_device) if trainer is not None else loader

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.test_each_epoch:
            return [self._loader("val"), self._loader("test")]
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
