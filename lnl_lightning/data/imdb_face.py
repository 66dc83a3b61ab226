"""IMDB-Face with an age/gender bias (Kim et al., CVPR 2019).

Input, as published by IMDB-WIKI (https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/):
``data_dir/imdb_crop/00/ ... 99/`` holds the face crops and ``data_dir/imdb_crop/imdb.mat``
the struct ``imdb`` with ``full_path``, ``dob`` (Matlab serial date), ``photo_taken``,
``gender`` (0 female, 1 male, NaN unknown), ``face_score`` and ``second_face_score``.

Faces kept: finite ``face_score`` above ``min_face_score``, no second face, known gender,
age = photo_taken - birth year in [0, 100]. The filtered index is cached next to the mat
file (``imdb_index.npz``). If the official cleaned labels of the paper's repository
(``imdb_age_gender.npy`` and ``imdb_split.npy``) are in ``data_dir``, they are used instead:
their train list is the pool for EB1/EB2 and their test list the unbiased test set.

Splits: a seeded ``test_fraction`` of all faces is the unbiased test set ("test"). Of the
rest, EB1 = women aged 0-29 + men aged 40+, EB2 = women 40+ + men 0-29. Training uses
``train_split`` (a held-out part validates) and is tested on the other EB split
(``test_eb2`` or ``test_eb1``) and on "test".

Tasks: ``gender`` (label gender; h predicts 12 age bins; bias_group is the age group
0-29 / 30-39 / 40+) and ``age`` (label the 12 age bins; h predicts gender; bias_group is
the gender).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from lnl_lightning.data.contract import BiasSpec
from lnl_lightning.data.image_files import (
    ImageRecords,
    ImageSplitsDataModule,
    check_common,
    drop_unreadable,
)
from lnl_lightning.errors import ConfigError, DataError, DataNotFoundError
from lnl_lightning.schemas import check_choice, choices

log = logging.getLogger(__name__)

AGE_EDGES = (20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70)  # 12 bins: [0,20), ..., [70, inf)
AGE_BIN_NAMES = (
    "0-19",
    "20-24",
    "25-29",
    "30-34",
    "35-39",
    "40-44",
    "45-49",
    "50-54",
    "55-59",
    "60-64",
    "65-69",
    "70+",
)
AGE_GROUP_NAMES = ("0-29", "30-39", "40+")
GENDER_NAMES = ("female", "male")
Task = Literal["gender", "age"]
Split = Literal["eb1", "eb2"]
SPLITS = choices(Split)
MATLAB_DATENUM_1970 = 719529  # datenum('1970-01-01')
OFFICIAL_FILES = ("imdb_age_gender.npy", "imdb_split.npy")


def age_bin(age: np.ndarray) -> np.ndarray:
    """Index of the 12 age bins with edges 0, 20, 25, ..., 70, inf."""
    return np.searchsorted(np.array(AGE_EDGES), age, side="right")


def age_group(age: np.ndarray) -> np.ndarray:
    """0 for ages 0-29, 1 for 30-39, 2 for 40 and over."""
    return np.searchsorted(np.array([30, 40]), age, side="right")


def birth_year(dob: np.ndarray) -> np.ndarray:
    """Calendar year of Matlab serial dates (NaN-safe: invalid dates give -1)."""
    valid = np.isfinite(dob) & (dob > 366)
    days = np.where(valid, np.floor(np.nan_to_num(dob)) - MATLAB_DATENUM_1970, 0).astype(np.int64)
    years = days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    return np.where(valid, years, -1)


def read_imdb_mat(mat_path: Path, min_face_score: float) -> dict[str, np.ndarray]:
    """Filtered faces of ``imdb.mat``: ``{"path", "age", "gender"}`` arrays."""
    from scipy.io import loadmat, whosmat

    try:
        record = loadmat(
            str(mat_path), squeeze_me=True, struct_as_record=True, variable_names=["imdb"]
        ).get("imdb")
    except (OSError, ValueError) as err:
        raise DataError(
            f"{mat_path} is not a readable MATLAB file ({err}): use imdb_crop/imdb.mat from "
            f"IMDB-WIKI's faces-only archive"
        ) from err
    if record is None:
        held = ", ".join(name for name, _, _ in whosmat(str(mat_path))) or "nothing"
        raise DataError(
            f"{mat_path} has no variable 'imdb' (it holds: {held}): this is not IMDB-WIKI's "
            f"imdb.mat (wiki.mat is the Wikipedia half); use imdb_crop/imdb.mat"
        )
    names = record.dtype.names or ()
    needed = ("full_path", "face_score", "second_face_score", "gender", "photo_taken", "dob")
    missing = [name for name in needed if name not in names]
    if missing:
        raise DataError(
            f"{mat_path}: the struct 'imdb' has no field(s) {', '.join(missing)} (it has: "
            f"{', '.join(names) or 'none'}); use IMDB-WIKI's original imdb_crop/imdb.mat"
        )

    def field(name: str) -> np.ndarray:
        return np.atleast_1d(record[name].item())

    full_path = field("full_path")
    face_score = field("face_score").astype(np.float64)
    second = field("second_face_score").astype(np.float64)
    gender = field("gender").astype(np.float64)
    age = field("photo_taken").astype(np.int64) - birth_year(field("dob").astype(np.float64))
    keep = (
        np.isfinite(face_score)
        & (face_score > min_face_score)
        & np.isnan(second)
        & np.isfinite(gender)
        & (age >= 0)
        & (age <= 100)
    )
    return {
        "path": np.array([str(p) for p in full_path[keep]]),
        "age": age[keep],
        "gender": gender[keep].astype(np.int64),
    }


def read_official_labels(data_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The paper's cleaned labels: (train pool, test set), each ``{"path", "age", "gender"}``."""
    labels = np.load(data_dir / OFFICIAL_FILES[0], allow_pickle=True, encoding="latin1").item()
    split = np.load(data_dir / OFFICIAL_FILES[1], allow_pickle=True, encoding="latin1").item()

    def key(name: object) -> str:
        return name.decode() if isinstance(name, bytes) else str(name)

    table = {key(k): v for k, v in labels.items()}

    def part(names: list) -> dict[str, np.ndarray]:
        names = [key(n) for n in names]
        return {
            "path": np.array(names),
            "age": np.array([int(table[n]["age"]) for n in names]),
            "gender": np.array([int(table[n]["gender"]) for n in names]),
        }

    return part(split["train_list"]), part(split["test_list"])


def extreme_bias_mask(age: np.ndarray, gender: np.ndarray, split: str) -> np.ndarray:
    """EB1: women 0-29 and men 40+; EB2: women 40+ and men 0-29."""
    young, old = age < 30, age >= 40
    female, male = gender == 0, gender == 1
    if split == "eb1":
        return (female & young) | (male & old)
    return (female & old) | (male & young)


class IMDBFaceDataModule(ImageSplitsDataModule):
    """IMDB-Face, trained on one extreme bias (EB1 or EB2), tested on the other and unbiased.

    Args:
        data_dir: folder holding ``imdb_crop/`` (and optionally the official .npy labels).
        task: "gender" (bias: age) or "age" (bias: gender).
        train_split: "eb1" or "eb2".
        min_face_score: faces with a lower detector score are dropped.
        test_fraction: share of all faces held out as the unbiased test set (seeded).
        val_fraction: share of the training split held out for validation.
        image_size: input side.
        batch_size: images per batch (per process).
        seed: fixes the test and validation splits.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        data_dir: str = "data/imdb",
        task: Task = "gender",
        train_split: Split = "eb1",
        min_face_score: float = 1.0,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        image_size: int = 224,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 4,
    ) -> None:
        super().__init__()
        check_common(batch_size, image_size, val_fraction, num_workers)
        task = check_choice("data.task", task, Task)
        train_split = check_choice("data.train_split", train_split, Split)
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.crop_dir = self.data_dir / "imdb_crop"
        self.task, self.train_split = task, train_split
        self.min_face_score, self.test_fraction = float(min_face_score), test_fraction
        self.val_fraction, self.image_size = val_fraction, image_size
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.other_split = "eb2" if train_split == "eb1" else "eb1"
        self.test_names = (f"test_{self.other_split}", "test")
        self.bias_spec = self._bias_spec()
        self.splits: dict[str, ImageRecords] = {}

    def _bias_spec(self) -> BiasSpec:
        bins = np.arange(len(AGE_BIN_NAMES))
        bin_low = np.array((0, *AGE_EDGES))
        young_bins, old_bins = bins[bin_low < 30], bins[bin_low >= 40]
        # (young group/bins, old group/bins) paired with (female, male) in EB1, swapped in EB2
        women_with, men_with = ("young", "old") if self.train_split == "eb1" else ("old", "young")
        if self.task == "gender":  # label gender, group age group (0 young, 2 old)
            group = {"young": 0, "old": 2}
            aligned = ((0, group[women_with]), (1, group[men_with]))
            conflicting = ((0, group[men_with]), (1, group[women_with]))
            return BiasSpec(
                2, 3, len(AGE_BIN_NAMES), aligned, conflicting, GENDER_NAMES, AGE_GROUP_NAMES
            )
        label_bins = {"young": young_bins, "old": old_bins}  # label age bin, group gender
        aligned = tuple((int(b), 0) for b in label_bins[women_with]) + tuple(
            (int(b), 1) for b in label_bins[men_with]
        )
        conflicting = tuple((int(b), 1) for b in label_bins[women_with]) + tuple(
            (int(b), 0) for b in label_bins[men_with]
        )
        return BiasSpec(len(AGE_BIN_NAMES), 2, 2, aligned, conflicting, AGE_BIN_NAMES, GENDER_NAMES)

    def _official_available(self) -> bool:
        return all((self.data_dir / name).is_file() for name in OFFICIAL_FILES)

    def prepare_data(self) -> None:
        self._faces()

    def _faces(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """(all faces or the official train pool, the official test set or None)."""
        if self._official_available():
            log.info("IMDB-Face: using the official cleaned labels in %s", self.data_dir)
            return read_official_labels(self.data_dir)
        mat_path = self.crop_dir / "imdb.mat"
        cache = self.crop_dir / f"imdb_index_score{self.min_face_score:g}.npz"
        if (
            cache.is_file()
            and mat_path.is_file()
            and cache.stat().st_mtime >= mat_path.stat().st_mtime
        ):
            with np.load(cache) as saved:
                return {k: saved[k] for k in ("path", "age", "gender")}, None
        if not mat_path.is_file():
            raise DataNotFoundError(
                f"IMDB-Face needs {mat_path} and the crops in {self.crop_dir}/00 ... 99. Download "
                f"imdb_crop.tar from https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/ and "
                f"unpack it into data.data_dir (or put the official "
                f"{' and '.join(OFFICIAL_FILES)} there)."
            )
        faces = read_imdb_mat(mat_path, self.min_face_score)
        try:
            np.savez(cache, **faces)
        except OSError as err:
            log.warning("Could not cache the filtered IMDB index in %s: %s", cache, err)
        return faces, None

    def _records(self, faces: dict[str, np.ndarray]) -> ImageRecords:
        age, gender = faces["age"], faces["gender"]
        paths = [self.crop_dir / p.removeprefix("imdb_crop/") for p in faces["path"]]
        if self.task == "gender":
            return ImageRecords(paths, gender, age_group(age), age_bin(age))
        return ImageRecords(paths, age_bin(age), gender, gender)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        pool, official_test = self._faces()
        if official_test is None:
            order = np.random.default_rng(self.seed).permutation(len(pool["age"]))
            num_test = int(round(self.test_fraction * len(order)))
            test_faces = {k: v[np.sort(order[:num_test])] for k, v in pool.items()}
            pool = {k: v[np.sort(order[num_test:])] for k, v in pool.items()}
        else:
            test_faces = official_test
        records = self._records(pool)
        split_of = {
            name: records.subset(
                np.flatnonzero(extreme_bias_mask(pool["age"], pool["gender"], name))
            )
            for name in SPLITS
        }
        train_pool = drop_unreadable(split_of[self.train_split], self.train_split)
        other = drop_unreadable(split_of[self.other_split], self.other_split)
        test = drop_unreadable(self._records(test_faces), "test")
        train, val = train_pool.split(self.val_fraction, self.seed)
        if not len(train) or not len(test):
            raise DataError(
                f"IMDB-Face: empty split (train {len(train)}, test {len(test)}) in {self.data_dir}"
            )
        log.info(
            "IMDB-Face (%s task): train %d, val %d, %s %d, test %d",
            self.task,
            len(train),
            len(val),
            self.other_split,
            len(other),
            len(test),
        )
        self.splits = {"train": train, "val": val, self.test_names[0]: other, "test": test}
