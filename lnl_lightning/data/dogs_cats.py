"""Dogs & Cats with a colour bias (Kim et al., CVPR 2019).

Input, as published:

- ``data_dir/train/`` is the Kaggle "Dogs vs. Cats" training folder (``cat.0.jpg``,
  ``dog.0.jpg``, ...), https://www.kaggle.com/c/dogs-vs-cats-redux-kernels-edition.
- ``list_bright.txt`` and ``list_dark.txt`` (file names, one per line) are the official
  brightness lists from the paper's repository (feidfoe/learning-not-to-learn,
  dataset/dogs_and_cats/). ``lists_dir`` holds them; they are downloaded there if absent.

Splits: TB1 = dark cats + bright dogs, TB2 = bright cats + dark dogs. ``train_split=tb1``
trains on TB1 (a held-out part validates) and tests on TB2, the opposite bias, as
``test_tb2``; ``tb2`` the reverse. Images in neither list are not used. With
``split_source=luminance`` the lists are replaced by the darkest and brightest thirds of
each class by mean luminance (computed once, cached as CSV).

Batches: the label is 0 cat / 1 dog; ``bias_target`` the per-pixel colour bins of the
augmented image at f's resolution; ``bias_group`` 0 dark / 1 bright.
"""

from __future__ import annotations

import csv
import logging
import urllib.request
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from lnl_lightning.data.checks import check_writable
from lnl_lightning.data.contract import BiasSpec
from lnl_lightning.data.image_files import (
    ImageRecords,
    ImageSplitsDataModule,
    check_common,
    drop_unreadable,
)
from lnl_lightning.errors import DataError, DataNotFoundError
from lnl_lightning.schemas import check_choice

log = logging.getLogger(__name__)

CLASSES = ("cat", "dog")
GROUPS = ("dark", "bright")
LIST_FILES = {"dark": "list_dark.txt", "bright": "list_bright.txt"}
LISTS_URL = (
    "https://raw.githubusercontent.com/feidfoe/learning-not-to-learn/master/dataset/dogs_and_cats/"
)
Split = Literal["tb1", "tb2"]
SplitSource = Literal["lists", "luminance"]


def download_lists(lists_dir: Path) -> None:
    """Fetch the two official brightness lists into ``lists_dir``."""
    lists_dir.mkdir(parents=True, exist_ok=True)
    for name in LIST_FILES.values():
        with urllib.request.urlopen(LISTS_URL + name, timeout=30) as response:
            data = response.read()
        tmp = lists_dir / f"{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(lists_dir / name)


def read_lists(lists_dir: Path, download: bool) -> dict[str, str]:
    """``{file name: 'dark' | 'bright'}`` from the official lists (downloaded if missing)."""
    missing = [n for n in LIST_FILES.values() if not (lists_dir / n).is_file()]
    if missing and download:
        check_writable(lists_dir, "data.lists_dir", "downloading the brightness lists")
        try:
            download_lists(lists_dir)
            log.info("Downloaded the Dogs & Cats brightness lists into %s", lists_dir)
        except OSError as err:
            log.warning("Could not download the brightness lists: %s", err)
    missing = [n for n in LIST_FILES.values() if not (lists_dir / n).is_file()]
    if missing:
        raise DataNotFoundError(
            f"Dogs & Cats needs {' and '.join(LIST_FILES.values())} in {lists_dir} (missing: "
            f"{', '.join(missing)}). Download them from {LISTS_URL} into data.lists_dir, or use "
            f"data.split_source=luminance."
        )
    brightness = {}
    for group, name in LIST_FILES.items():
        for line in (lists_dir / name).read_text().splitlines():
            if line.strip():
                brightness[Path(line.strip()).name] = group
    return brightness


def mean_luminance(path: Path) -> float:
    """Mean grey level of an image in [0, 255], decoded at reduced size (fast for JPEG)."""
    with Image.open(path) as image:
        image.draft("L", (64, 64))
        return float(np.asarray(image.convert("L").resize((64, 64))).mean())


def luminance_groups(paths: list[Path], labels: np.ndarray, cache: Path) -> dict[str, str]:
    """Darkest and brightest third of each class by mean luminance; cached in ``cache`` (CSV)."""
    values: dict[str, float] = {}
    if cache.is_file():
        with cache.open() as f:
            values = {row["file"]: float(row["luminance"]) for row in csv.DictReader(f)}
    todo = [p for p in paths if p.name not in values]
    for path in todo:
        try:
            values[path.name] = mean_luminance(path)
        except OSError:
            continue  # unreadable: dropped later with the others
    if todo:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            with tmp.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["file", "luminance"])
                writer.writerows(sorted(values.items()))
            tmp.replace(cache)
        except OSError as err:
            log.warning("Could not cache luminance values in %s: %s", cache, err)
    groups: dict[str, str] = {}
    for label in range(len(CLASSES)):
        names = [
            p.name for p, y in zip(paths, labels, strict=True) if y == label and p.name in values
        ]
        names.sort(key=lambda n: values[n])
        third = len(names) // 3
        groups.update({n: "dark" for n in names[:third]})
        groups.update({n: "bright" for n in names[len(names) - third :]})
    return groups


class DogsCatsDataModule(ImageSplitsDataModule):
    """Dogs & Cats, trained on one brightness bias (TB1 or TB2) and tested on the other.

    Args:
        data_dir: folder holding Kaggle's ``train/``.
        lists_dir: folder of list_bright.txt / list_dark.txt (default: ``data_dir``).
        train_split: "tb1" (dark cats, bright dogs) or "tb2" (bright cats, dark dogs).
        split_source: "lists" (official) or "luminance" (thirds by mean luminance).
        image_size: input side (224 in the paper).
        color_bins: bins per RGB channel of the per-pixel bias target.
        batch_size: images per batch (per process).
        val_fraction: share of the training split held out for validation.
        seed: fixes the train/val split.
        num_workers: DataLoader workers.
        download: fetch the lists when they are missing.
    """

    def __init__(
        self,
        data_dir: str = "data/dogs_cats",
        lists_dir: str | None = None,
        train_split: Split = "tb1",
        split_source: SplitSource = "lists",
        image_size: int = 224,
        color_bins: int = 8,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 4,
        download: bool = True,
    ) -> None:
        super().__init__()
        check_common(batch_size, image_size, val_fraction, num_workers)
        train_split = check_choice("data.train_split", train_split, Split)
        split_source = check_choice("data.split_source", split_source, SplitSource)
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.lists_dir = Path(lists_dir).expanduser().resolve() if lists_dir else self.data_dir
        self.train_split, self.split_source = train_split, split_source
        self.image_size, self.color_bins = image_size, color_bins
        self.batch_size, self.val_fraction, self.seed = batch_size, val_fraction, seed
        self.num_workers, self.download = num_workers, download
        self.test_split = "tb2" if train_split == "tb1" else "tb1"
        self.test_names = (f"test_{self.test_split}",)
        # (label, group): TB1 pairs cats with dark and dogs with bright.
        tb1_cells = ((0, 0), (1, 1))
        aligned = tb1_cells if train_split == "tb1" else ((0, 1), (1, 0))
        self.bias_spec = BiasSpec(
            num_classes=2,
            num_bias_groups=2,
            num_bias_classes=color_bins,
            aligned_cells=aligned,
            class_names=CLASSES,
            group_names=GROUPS,
            target_kind="pixel",
        )
        self.splits: dict[str, ImageRecords] = {}

    def prepare_data(self) -> None:
        self._images()
        if self.split_source == "lists":
            read_lists(self.lists_dir, self.download)

    def _images(self) -> tuple[list[Path], np.ndarray]:
        train_dir = self.data_dir / "train"
        paths = sorted(p for p in train_dir.glob("*.jpg") if p.name.split(".")[0] in CLASSES)
        if not paths:
            raise DataNotFoundError(
                f"No cat.*.jpg / dog.*.jpg images in {train_dir}. Unpack Kaggle's Dogs vs. Cats "
                f"train.zip there (https://www.kaggle.com/c/dogs-vs-cats-redux-kernels-edition), "
                f"or point data.data_dir at the folder that holds train/."
            )
        labels = np.array([CLASSES.index(p.name.split(".")[0]) for p in paths])
        return paths, labels

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        paths, labels = self._images()
        if self.split_source == "lists":
            brightness = read_lists(self.lists_dir, self.download)
        else:
            brightness = luminance_groups(paths, labels, self.data_dir / "luminance.csv")
        groups = np.array(
            [GROUPS.index(brightness[p.name]) if p.name in brightness else -1 for p in paths]
        )
        log.info(
            "Dogs & Cats: %d images, %d in neither brightness group (not used)",
            len(paths),
            int((groups < 0).sum()),
        )
        everything = ImageRecords(paths, labels, groups)
        # TB1: label == group (cat-dark, dog-bright); TB2: label != group.
        tb1 = everything.subset(np.flatnonzero((groups >= 0) & (labels == groups)))
        tb2 = everything.subset(np.flatnonzero((groups >= 0) & (labels != groups)))
        train_pool, test = (tb1, tb2) if self.train_split == "tb1" else (tb2, tb1)
        train_pool = drop_unreadable(train_pool, self.train_split)
        test = drop_unreadable(test, self.test_split)
        train, val = train_pool.split(self.val_fraction, self.seed)
        if not len(train) or not len(test):
            raise DataError(
                f"Dogs & Cats: empty split (train {len(train)}, test {len(test)}) "
                f"in {self.data_dir}"
            )
        self.splits = {"train": train, "val": val, self.test_names[0]: test}
