"""Image files on disk in the batch contract: shared by Dogs & Cats, IMDB-Face and user CSVs."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from lnl_lightning.data.checks import check_loader_settings
from lnl_lightning.data.contract import (
    BIAS_GROUP,
    BIAS_TARGET,
    IMAGE,
    INDEX,
    LABEL,
    color_bin_target,
)
from lnl_lightning.data.sampling import ResumableLoader
from lnl_lightning.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_UNREADABLE_FRACTION = 0.01


@dataclass
class ImageRecords:
    """One split: image paths with their label, bias group and (per-image) bias target.

    ``bias_targets`` is None when the bias target is the per-pixel colour map, which is
    computed from the image itself.
    """

    paths: list[Path]
    labels: np.ndarray
    groups: np.ndarray
    bias_targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: np.ndarray | Sequence[int]) -> ImageRecords:
        index = np.asarray(index, dtype=np.int64)
        return ImageRecords(
            [self.paths[i] for i in index],
            self.labels[index],
            self.groups[index],
            None if self.bias_targets is None else self.bias_targets[index],
        )

    def split(self, fraction: float, seed: int) -> tuple[ImageRecords, ImageRecords]:
        """Seeded random split into (rest, held-out ``fraction``)."""
        order = np.random.default_rng(seed).permutation(len(self))
        num_held = int(round(fraction * len(self)))
        return self.subset(np.sort(order[num_held:])), self.subset(np.sort(order[:num_held]))


def drop_unreadable(records: ImageRecords, split: str) -> ImageRecords:
    """Drop files PIL cannot open (warning with the count); stop if more than 1% of a split.

    ``Image.verify`` reads each file's structure without decoding the pixels, so a scan of
    tens of thousands of JPEGs takes seconds.
    """
    bad: list[int] = []
    for i, path in enumerate(records.paths):
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError):  # PIL raises these for broken files
            bad.append(i)
    if not bad:
        return records
    names = ", ".join(str(records.paths[i]) for i in bad[:5])
    if len(bad) > MAX_UNREADABLE_FRACTION * len(records):
        raise DataError(
            f"{len(bad)} of {len(records)} images of the {split} split are missing or unreadable "
            f"(more than {MAX_UNREADABLE_FRACTION:.0%}), e.g. {names}"
        )
    log.warning("Skipping %d unreadable image(s) of the %s split: %s", len(bad), split, names)
    keep = np.setdiff1d(np.arange(len(records)), bad)
    return records.subset(keep)


def image_transform(train: bool, image_size: int) -> v2.Compose:
    """uint8 CHW pipeline: random resized crop + flip for training, resize + centre crop else."""
    if train:
        steps = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        steps = [
            v2.Resize(round(image_size * 256 / 224), antialias=True),
            v2.CenterCrop(image_size),
        ]
    return v2.Compose([v2.PILToTensor(), *steps])


@contextmanager
def seeded_rng(seed: int | None) -> Iterator[None]:
    """Run the block on torch's generator seeded with ``seed``, restoring it afterwards;
    with ``None``, on the global generator as it is."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class ImageFileDataset(Dataset):
    """Reads, augments and normalises images; returns the contract's four fields.

    Args:
        records: the split's files and annotations.
        train: use the training augmentation.
        image_size: side of the square input.
        color_bins: when ``records.bias_targets`` is None, the bias target is the per-pixel
            colour map of the augmented image at ``image_size // 8`` (f's map for ResNet-18).
    """

    def __init__(
        self, records: ImageRecords, train: bool, image_size: int, color_bins: int = 8
    ) -> None:
        self.records = records
        self.transform = image_transform(train, image_size)
        self.normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.target_size = max(1, image_size // 8)
        self.color_bins = color_bins

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """``key`` is an index, or ``(index, seed)`` from a sampler that seeds augmentation."""
        i, seed = key if isinstance(key, tuple) else (key, None)
        path = self.records.paths[i]
        try:
            with Image.open(path) as image, seeded_rng(seed):
                pixels = self.transform(image.convert("RGB"))
        except OSError as err:
            raise DataError(f"could not read image {path}: {err}") from err
        if self.records.bias_targets is None:
            bias_target = color_bin_target(pixels[None], self.target_size, self.color_bins)[0]
        else:
            bias_target = torch.tensor(int(self.records.bias_targets[i]))
        return {
            IMAGE: self.normalize(pixels.float().div_(255.0)),
            LABEL: torch.tensor(int(self.records.labels[i])),
            BIAS_TARGET: bias_target,
            BIAS_GROUP: torch.tensor(int(self.records.groups[i])),
            INDEX: torch.tensor(i),
        }


def image_loader(
    records: ImageRecords,
    train: bool,
    image_size: int,
    batch_size: int,
    num_workers: int,
    color_bins: int = 8,
) -> DataLoader:
    """DataLoader over image files; for training shuffled, resumable, augmentation seeded."""
    dataset = ImageFileDataset(records, train, image_size, color_bins)
    options = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }
    if not train:
        return DataLoader(dataset, **options)
    drop_last = len(records) > batch_size  # a 1-image batch breaks BatchNorm
    return ResumableLoader(dataset, with_seeds=True, drop_last=drop_last, **options)


def check_common(batch_size: int, image_size: int, val_fraction: float, num_workers: int) -> None:
    """Validate the data keys every image datamodule shares."""
    check_loader_settings(batch_size, val_fraction, num_workers)
    if not isinstance(image_size, int) or image_size < 8:
        raise ConfigError(f"data.image_size must be an integer >= 8, got {image_size}")


class ImageSplitsDataModule(pl.LightningDataModule):
    """Loaders over ``self.splits`` ("train", "val" and one entry per name in ``test_names``).

    Subclasses fill ``splits`` in ``setup`` and set ``image_size``, ``batch_size``,
    ``num_workers`` and ``color_bins`` (used when the bias target is the colour map).
    """

    # the per-channel (mean, std) its images are normalised with: figures show them as they are
    normalization = (IMAGENET_MEAN, IMAGENET_STD)

    splits: dict[str, ImageRecords]
    test_names: tuple[str, ...]
    val_names: tuple[str, ...] = ("val",)  # held out from training, distributed like it
    image_size: int
    batch_size: int
    num_workers: int
    color_bins: int = 8

    def _loader(self, split: str, train: bool) -> DataLoader:
        return image_loader(
            self.splits[split],
            train,
            self.image_size,
            self.batch_size,
            self.num_workers,
            self.color_bins,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def train_label_groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and bias groups of the training split, by position (see the contract)."""
        self.setup("fit")
        train = self.splits["train"]
        return torch.as_tensor(train.labels, dtype=torch.long), torch.as_tensor(
            train.groups, dtype=torch.long
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(name, False) for name in self.test_names]
