"""Your own biased data: an image folder and a CSV of labels and bias attributes.

The CSV (``data.csv_path``) has the columns ``path,label,bias`` and optionally ``split``:

- ``path``: image file, relative to the CSV's folder (or absolute).
- ``label``, ``bias``: integers or strings; the sorted distinct values become ids
  0, 1, ... (integers sorted numerically).
- ``split``: ``train``, ``val`` or ``test``. Without it, a seeded ``val_fraction`` and
  ``test_fraction`` of the rows are held out.

h predicts the bias id from f's pooled features; ``bias_group`` is the bias id too. A
(label, bias) cell counts as bias-aligned when that bias value is the most frequent one
of the label in the training split.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from lnl_lightning.data.checks import held_out_count
from lnl_lightning.data.contract import BiasSpec
from lnl_lightning.data.image_files import (
    ImageRecords,
    ImageSplitsDataModule,
    check_common,
    drop_unreadable,
)
from lnl_lightning.errors import ConfigError, DataError, DataNotFoundError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label", "bias")
SPLIT_NAMES = ("train", "val", "test")


def value_ids(values: list[str]) -> tuple[dict[str, int], tuple[str, ...]]:
    """Map distinct values to ids: numeric order if all are integers, else string order."""
    distinct = set(values)
    try:
        ordered = sorted(distinct, key=int)
    except ValueError:
        ordered = sorted(distinct)
    return {v: i for i, v in enumerate(ordered)}, tuple(ordered)


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """Rows of the CSV, checked for the required columns."""
    if not csv_path.is_file():
        raise DataNotFoundError(f"data.csv_path: no CSV file at {csv_path}")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DataError(
                f"{csv_path} must have the columns {','.join(REQUIRED_COLUMNS)} (optional: split); "
                f"missing: {', '.join(missing)}; found: {', '.join(columns) or 'none'}"
            )
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise DataError(f"{csv_path} has no rows")
    blank = [
        f"line {i + 2} ({', '.join(k for k in REQUIRED_COLUMNS if not row.get(k))})"
        for i, row in enumerate(rows)
        if not all(row.get(k) for k in REQUIRED_COLUMNS)
    ]
    if blank:
        more = f" and {len(blank) - 5} more" if len(blank) > 5 else ""
        raise DataError(
            f"{csv_path}: every row needs a {', '.join(REQUIRED_COLUMNS)}; empty in "
            f"{'; '.join(blank[:5])}{more}"
        )
    return rows


class ImageCSVDataModule(ImageSplitsDataModule):
    """Any image folder with a CSV of ``path,label,bias[,split]``.

    Args:
        csv_path: the CSV file.
        image_size: input side.
        batch_size: images per batch (per process).
        val_fraction: share of rows held out for validation when there is no split column.
        test_fraction: share of rows held out for testing when there is no split column.
        seed: fixes that split.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        csv_path: str,
        image_size: int = 224,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 4,
    ) -> None:
        super().__init__()
        check_common(batch_size, image_size, val_fraction, num_workers)
        if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
            raise ConfigError(
                f"data.test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, "
                f"got {test_fraction} and {val_fraction}"
            )
        self.csv_path = Path(csv_path).expanduser().resolve()
        self.image_size, self.batch_size = image_size, batch_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.seed, self.num_workers = seed, num_workers
        self.test_names = ("test",)
        self.splits: dict[str, ImageRecords] = {}
        self._read()  # labels and bias values fix the network's sizes, so read the CSV now

    def _read(self) -> None:
        rows = read_rows(self.csv_path)
        label_ids, label_names = value_ids([r["label"] for r in rows])
        bias_ids, bias_names = value_ids([r["bias"] for r in rows])
        root = self.csv_path.parent
        paths = [root / r["path"] for r in rows]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataNotFoundError(
                f"{len(missing)} image(s) listed in {self.csv_path} do not exist "
                f"(paths are relative to the CSV's folder), e.g. {', '.join(missing[:5])}"
            )
        labels = np.array([label_ids[r["label"]] for r in rows])
        biases = np.array([bias_ids[r["bias"]] for r in rows])
        records = ImageRecords(paths, labels, biases, biases)
        split = self._assign_splits(rows)
        self.records = {name: records.subset(np.flatnonzero(split == name)) for name in SPLIT_NAMES}

        train = self.records["train"]
        counts = Counter(zip(train.labels.tolist(), train.groups.tolist(), strict=True))
        empty = [
            label_names[c] for c in range(len(label_names)) if c not in set(train.labels.tolist())
        ]
        if empty:
            raise DataError(
                f"{self.csv_path}: label(s) {', '.join(empty)} have no samples in the train split"
            )
        aligned = tuple(
            (c, max((b for (y, b) in counts if y == c), key=lambda b, c=c: counts[(c, b)]))
            for c in range(len(label_names))
        )
        self._say_what_is_missing(bias_names)
        self.bias_spec = BiasSpec(
            num_classes=len(label_names),
            num_bias_groups=len(bias_names),
            num_bias_classes=len(bias_names),
            aligned_cells=aligned,
            class_names=label_names,
            group_names=bias_names,
        )

    def _say_what_is_missing(self, bias_names: tuple[str, ...] | list[str]) -> None:
        """What the CSV leaves out that a run would otherwise only show at its end (or never)."""
        if not len(self.records["val"]):
            log.warning(
                "%s: no validation rows (split column without 'val'): this run trains without "
                "validation, so no val/* metrics, no best checkpoint (test_ckpt=best refused) "
                "and a sweep has nothing to optimise",
                self.csv_path,
            )
        if len(bias_names) == 1:
            log.warning(
                "%s: column bias has one value (%r) in every row: there is no bias to "
                "unlearn, so a debiasing method trains as the baseline does and every image is "
                "in one group",
                self.csv_path,
                bias_names[0],
            )

    def _assign_splits(self, rows: list[dict[str, str]]) -> np.ndarray:
        if "split" in rows[0] and any(r.get("split") for r in rows):
            split = np.array([r.get("split", "") for r in rows])
            bad = sorted(set(split.tolist()) - set(SPLIT_NAMES))
            if bad:
                raise DataError(
                    f"{self.csv_path}: column split must be train, val or test; got "
                    f"{', '.join(map(repr, bad))}"
                )
            return split
        order = np.random.default_rng(self.seed).permutation(len(rows))
        num_test = int(round(self.test_fraction * len(rows)))
        if num_test < 1:
            raise ConfigError(
                f"data.test_fraction={self.test_fraction} of the {len(rows)} rows of "
                f"{self.csv_path} leaves no image to test on: give more rows, a larger "
                f"data.test_fraction, or a split column"
            )
        num_val = held_out_count(self.val_fraction, len(rows))
        split = np.full(len(rows), "train", dtype=object)
        split[order[:num_test]] = "test"
        split[order[num_test : num_test + num_val]] = "val"
        return split.astype(str)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = {name: drop_unreadable(r, name) for name, r in self.records.items()}
