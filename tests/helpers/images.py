"""Generated datasets in the publishers' real formats: Kaggle Dogs vs. Cats, IMDB-WIKI, a CSV."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image


def save_jpeg(path: Path, brightness: int, rng: np.random.Generator, size: int = 24) -> None:
    """A small RGB JPEG around a given grey level, with a textured square 'animal'."""
    pixels = np.clip(rng.normal(brightness, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    pixels[6:18, 6:18] = np.clip(pixels[6:18, 6:18].astype(int) + 40, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def make_dogs_cats(
    root: Path, per_cell: int = 30, unlisted: int = 6, corrupt: tuple[str, ...] = ()
) -> Path:
    """Kaggle-style ``train/`` with dark and bright cats and dogs, plus the official lists.

    Cats/dogs ``0 .. per_cell-1`` are dark, ``per_cell .. 2*per_cell-1`` bright; the next
    ``unlisted`` of each class are in neither list. Names in ``corrupt`` are written as
    garbage bytes (but stay listed).
    """
    rng = np.random.default_rng(0)
    dark, bright = [], []
    for animal in ("cat", "dog"):
        for i in range(2 * per_cell + unlisted):
            name = f"{animal}.{i}.jpg"
            is_dark = i < per_cell
            save_jpeg(root / "train" / name, 40 if is_dark else 210, rng)
            if i < 2 * per_cell:
                (dark if is_dark else bright).append(name)
    for name in corrupt:
        (root / "train" / name).write_bytes(b"not a jpeg at all")
    (root / "list_dark.txt").write_text("\n".join(dark) + "\n")
    (root / "list_bright.txt").write_text("\n".join(bright) + "\n")
    return root


def datenum(day: date) -> float:
    """Matlab serial date number of a calendar day."""
    return float(day.toordinal() + 366)


def make_imdb(root: Path, per_cell: int = 12) -> dict[str, list]:
    """``imdb_crop/`` with JPEG crops and an ``imdb.mat`` in IMDB-WIKI's struct layout.

    Kept faces: ``per_cell`` of each (gender, age) with ages 22, 35 and 50. Also written,
    and to be filtered out: a low face score, a second face, unknown gender, a -inf score,
    and an impossible age. Returns the kept faces' paths, ages and genders.
    """
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    rows = []  # full_path, dob, photo_taken, gender, face_score, second_face_score
    kept = {"path": [], "age": [], "gender": []}
    n = 0
    for gender in (0, 1):
        for age in (22, 35, 50):
            for _ in range(per_cell):
                path = f"{n % 100:02d}/nm{n:07d}_rm0_{1990 - age}-03-04_1990.jpg"
                rows.append(
                    (path, datenum(date(1990 - age, 3, 4)), 1990, float(gender), 3.0, np.nan)
                )
                kept["path"].append(path)
                kept["age"].append(age)
                kept["gender"].append(gender)
                n += 1
    bad = [
        (0.5, np.nan, 0.0, 30),  # face score too low
        (3.0, 2.0, 1.0, 30),  # a second face
        (3.0, np.nan, np.nan, 30),  # unknown gender
        (-np.inf, np.nan, 1.0, 30),  # no face
        (3.0, np.nan, 0.0, 150),  # impossible age
    ]
    for score, second, gender, age in bad:
        path = f"{n % 100:02d}/nm{n:07d}_rm0_bad.jpg"
        rows.append((path, datenum(date(1990 - age, 1, 1)), 1990, gender, score, second))
        n += 1
    crop = root / "imdb_crop"
    for row in rows:
        save_jpeg(crop / row[0], int(rng.integers(60, 200)), rng)
    columns = list(zip(*rows, strict=True))
    imdb = {
        "full_path": np.array(columns[0], dtype=object),
        "dob": np.array(columns[1], dtype=np.float64),
        "photo_taken": np.array(columns[2], dtype=np.uint16),
        "gender": np.array(columns[3], dtype=np.float64),
        "face_score": np.array(columns[4], dtype=np.float64),
        "second_face_score": np.array(columns[5], dtype=np.float64),
        "name": np.array([f"person {i}" for i in range(len(rows))], dtype=object),
        "celeb_id": np.arange(len(rows), dtype=np.uint16),
    }
    savemat(crop / "imdb.mat", {"imdb": imdb})
    return kept


def make_image_csv(root: Path, per_cell: int = 12, with_split: bool = False) -> Path:
    """Images plus ``labels.csv`` (path,label,bias[,split]): birds and planes on grass or sky.

    Most birds are on grass and most planes in the sky (3:1).
    """
    rng = np.random.default_rng(2)
    rows = []
    for label, usual in (("bird", "grass"), ("plane", "sky")):
        for bias in ("grass", "sky"):
            count = 3 * per_cell if bias == usual else per_cell
            for i in range(count):
                path = f"images/{label}_{bias}_{i}.jpg"
                save_jpeg(root / path, 80 if bias == "grass" else 190, rng)
                split = ("train", "train", "val", "test")[i % 4]
                rows.append({"path": path, "label": label, "bias": bias, "split": split})
    with (root / "labels.csv").open("w", newline="") as f:
        columns = ["path", "label", "bias", *(["split"] if with_split else [])]
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return root / "labels.csv"
