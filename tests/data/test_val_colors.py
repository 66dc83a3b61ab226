"""Colored MNIST's validation colourings (data.val_colors): the held-out training digits
coloured like training (val), or at random like test (val_random), or both."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from lnl_lightning.data.colored_mnist import ColoredMNISTDataModule
from lnl_lightning.errors import ConfigError

from ..helpers.fixtures import fake_digits, write_idx

COLOR_VAR = 0.02
BITS = 14  # each image's serial number, written in the bright pixels of its first row
NUM_TRAIN, NUM_TEST = 6000, 1000


@pytest.fixture(scope="module")
def mnist_6k(tmp_path_factory) -> str:
    """6,000 training digits (3,000 held out: 30 per (digit, colour) cell at random) and
    1,000 test digits, each with its own serial number drawn into its first row."""
    root = tmp_path_factory.mktemp("mnist6k")
    raw, rng = root / "MNIST" / "raw", np.random.default_rng(0)
    raw.mkdir(parents=True)
    serial = 0
    for prefix, n in (("train", NUM_TRAIN), ("t10k", NUM_TEST)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = fake_digits(labels, rng)
        numbers = np.arange(serial, serial + n)
        images[:, 0, :BITS] = 255 * ((numbers[:, None] >> np.arange(BITS)) & 1)
        serial += n
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return str(root)


def splits(data_dir: str, val_colors: str, color_var: float = COLOR_VAR) -> dict:
    datamodule = ColoredMNISTDataModule(
        data_dir, color_var=color_var, val_fraction=0.5, download=False, val_colors=val_colors
    )
    datamodule.setup("fit")
    return datamodule


def serials(images: torch.Tensor) -> list[int]:
    """Each image's serial number: which MNIST digit it was coloured from."""
    bits = (images[:, :, 0, :BITS].amax(1) > 0).long()
    return (bits << torch.arange(BITS)).sum(1).tolist()


def colours(images: torch.Tensor) -> torch.Tensor:
    """Each image's colour in [0, 1]: binarised strokes carry one colour, the rest is black."""
    return images.flatten(2).amax(2).float() / 255


def test_random_validation_colours_the_held_out_digits_and_nothing_else(mnist_6k):
    both, train_only = splits(mnist_6k, "both"), splits(mnist_6k, "train")
    assert both.val_names == ("val", "val_random") and train_only.val_names == ("val",)
    val, random, train = (both.splits[n] for n in ("val", "val_random", "train"))
    assert torch.equal(random.labels, val.labels)  # the same held-out digits...
    assert torch.equal(random.images.amax(1) > 0, val.images.amax(1) > 0)  # ...stroke by stroke
    assert not torch.equal(random.images, val.images)  # coloured afresh
    assert serials(random.images) == serials(val.images)
    held_out, trained = set(serials(val.images)), set(serials(train.images))
    tested = set(serials(both.splits["test"].images))
    assert held_out | trained == set(range(NUM_TRAIN)) and min(tested) == NUM_TRAIN
    assert not held_out & trained and not held_out & tested  # disjoint from train and test
    for name in ("train", "val", "test"):  # adding it changes no other split
        assert torch.equal(both.splits[name].images, train_only.splits[name].images), name


def test_random_validation_colours_are_independent_of_the_digit(mnist_6k):
    datamodule = splits(mnist_6k, "both")
    val, random = datamodule.splits["val"], datamodule.splits["val_random"]
    assert torch.equal(val.groups, val.labels)  # coloured like training: the digit's colour
    table = torch.zeros(10, 10)
    table.index_put_((random.labels, random.groups), torch.ones(len(random.labels)), True)
    assert table.min() > 0  # every (digit, colour) cell is populated
    assert chi2_contingency(table.numpy()).pvalue > 1e-3
    assert 0.07 < (random.groups == random.labels).float().mean() < 0.13  # about 1 in 10


def within_colour_variance(images: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Per channel, the variance of the image colours around their colour class's mean."""
    values = colours(images)
    means = torch.stack([values[groups == c].mean(0) for c in range(10)])
    return ((values - means[groups]) ** 2).mean(0)


def test_random_validation_noise_is_the_training_noise(mnist_6k):
    datamodule = splits(mnist_6k, "random")
    assert datamodule.val_names == ("val_random",) and "val" not in datamodule.splits
    random, train = datamodule.splits["val_random"], datamodule.splits["train"]
    for c in range(10):  # each colour class drawn around its training mean
        mean = colours(random.images[random.groups == c]).mean(0)
        assert torch.allclose(mean, colours(train.images[train.groups == c]).mean(0), atol=0.03)
    ratio = within_colour_variance(random.images, random.groups) / within_colour_variance(
        train.images, train.groups
    )
    assert torch.all((ratio > 0.8) & (ratio < 1.25)), ratio
    wider = splits(mnist_6k, "random", color_var=0.05).splits["val_random"]
    assert torch.all(
        within_colour_variance(wider.images, wider.groups)
        > 1.5 * within_colour_variance(random.images, random.groups)
    )  # what the ratio would show if the noise were not the training noise


def test_loaders_follow_the_validation_splits(mnist_6k):
    datamodule = splits(mnist_6k, "both")
    assert len(datamodule.val_dataloader()) == 3  # val, val_random, then test (test_each_epoch)
    datamodule.test_each_epoch = False
    assert len(datamodule.val_dataloader()) == 2


def test_the_authors_arrays_cannot_be_coloured_afresh(tmp_path):
    with pytest.raises(ConfigError, match="data.val_colors=random.*data.source=generate"):
        ColoredMNISTDataModule(
            str(tmp_path), source="arrays", arrays_dir=str(tmp_path), val_colors="random"
        )
