"""Shared fixtures: datasets generated (tests/helpers) in their real formats, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers.fixtures import make_mnist


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding a generated MNIST/raw/ (600 train, 1000 test images)."""
    return make_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def dogs_cats_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kaggle-style Dogs vs. Cats folder with the official list files (30 per cell)."""
    from .helpers.images import make_dogs_cats

    return make_dogs_cats(tmp_path_factory.mktemp("dogs_cats"))


@pytest.fixture(scope="session")
def imdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IMDB-WIKI-style imdb_crop/ with imdb.mat (12 faces per gender x age 22/35/50)."""
    from .helpers.images import make_imdb

    root = tmp_path_factory.mktemp("imdb")
    make_imdb(root)
    return root


@pytest.fixture(scope="session")
def image_csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of images with labels.csv (no split column)."""
    from .helpers.images import make_image_csv

    return make_image_csv(tmp_path_factory.mktemp("image_csv"))


@pytest.fixture(scope="session")
def experiment_overrides(mnist_dir, dogs_cats_dir, imdb_dir, image_csv_path):
    """Overrides that point an experiment at its generated fixture, small and offline."""
    small_images = [
        "net.pretrained=false",
        "data.image_size=32",
        "data.num_workers=0",
        "data.batch_size=8",
    ]

    def overrides(experiment: str) -> list[str]:
        if experiment.startswith("colored_mnist"):
            return [f"data.data_dir={mnist_dir}", "data.batch_size=32"]
        if experiment.startswith("dogs_cats"):
            return [f"data.data_dir={dogs_cats_dir}", *small_images]
        if experiment.startswith("imdb_face"):
            return [f"data.data_dir={imdb_dir}", *small_images]
        if experiment == "image_csv":
            return [f"data.csv_path={image_csv_path}", *small_images]
        raise KeyError(f"no fixture for experiment {experiment}")

    return overrides
