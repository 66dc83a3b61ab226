"""Time reading a full-size imdb.mat (460,723 entries, IMDB-WIKI's struct layout).

The real file cannot be downloaded here, so a synthetic one with the same fields, types
and size is written first (into --dir, default a temp folder). Usage:

    python benchmarks/imdb_mat_load.py [--entries 460723] [--dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.io import savemat

from lnl_lightning.data.imdb_face import IMDBFaceDataModule


def write_fake_mat(path: Path, entries: int) -> None:
    rng = np.random.default_rng(0)
    years = rng.integers(1920, 1995, entries)
    imdb = {
        "dob": (years - 1) * 365.2425 + 367 + rng.integers(0, 365, entries),
        "photo_taken": rng.integers(1960, 2015, entries).astype(np.uint16),
        "full_path": np.array(
            [
                f"{i % 100:02d}/nm{i:07d}_rm{i * 7:09d}_{y}-1-1_2008.jpg"
                for i, y in enumerate(years)
            ],
            dtype=object,
        ),
        "gender": np.where(rng.random(entries) < 0.02, np.nan, rng.integers(0, 2, entries)),
        "name": np.array([f"Person Name {i}" for i in range(entries)], dtype=object),
        "face_location": np.array([rng.random(4) * 500 for _ in range(entries)], dtype=object),
        "face_score": np.where(rng.random(entries) < 0.1, -np.inf, rng.random(entries) * 6),
        "second_face_score": np.where(rng.random(entries) < 0.7, np.nan, rng.random(entries) * 3),
        "celeb_names": np.array([f"Person Name {i}" for i in range(20284)], dtype=object),
        "celeb_id": rng.integers(1, 20284, entries).astype(np.uint16),
    }
    savemat(path, {"imdb": imdb})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=460_723)
    parser.add_argument(
        "--dir", type=Path, default=None, help="data_dir (imdb_crop/imdb.mat inside)"
    )
    args = parser.parse_args()
    data_dir = args.dir or Path(tempfile.mkdtemp())
    path = data_dir / "imdb_crop" / "imdb.mat"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        write_fake_mat(path, args.entries)
        size_mb = path.stat().st_size / 1e6
        print(f"wrote {path} ({size_mb:.0f} MB) in {time.perf_counter() - start:.1f} s")
    for cache in path.parent.glob("imdb_index_*.npz"):
        cache.unlink()
    datamodule = IMDBFaceDataModule(str(data_dir))
    for attempt in ("first load (parse imdb.mat, write the index)", "second load (cached index)"):
        start = time.perf_counter()
        faces, _ = datamodule._faces()
        print(f"{attempt}: {len(faces['age'])} faces kept in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
