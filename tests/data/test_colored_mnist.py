"""Colored MNIST: the sigma^2 colour protocol, determinism, the batch contract and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, kstest, truncnorm
from torch.distributions import Normal

from lnl_lightning.data.colored_mnist import ColoredMNISTDataModule
from lnl_lightning.data.contract import (
    BIAS_GROUP,
    BIAS_TARGET,
    IGNORE_INDEX,
    IMAGE,
    INDEX,
    LABEL,
    color_bin_target,
)
from lnl_lightning.data.mnist_colors import (
    REBIAS_PALETTE,
    SUPPLEMENT_PALETTE,
    colorize,
    draw_colors,
)
from lnl_lightning.errors import ConfigError, DataError, DataNotFoundError

from ..helpers.fixtures import one_colour_per_class

PALETTE = torch.tensor(SUPPLEMENT_PALETTE, dtype=torch.float32) / 255  # the default
REBIAS = torch.tensor(REBIAS_PALETTE, dtype=torch.float32) / 255


def clipped_normal_mean(mean: torch.Tensor, std: float) -> torch.Tensor:
    """E[clip(X, 0, 1)] for X ~ N(mean, std^2)."""
    unit = Normal(0.0, 1.0)
    a, b = (0 - mean) / std, (1 - mean) / std
    pdf = lambda z: unit.log_prob(z).exp()  # noqa: E731
    return (1 - unit.cdf(b)) + mean * (unit.cdf(b) - unit.cdf(a)) + std * (pdf(a) - pdf(b))


@pytest.mark.parametrize("color_var", [0.02, 0.05])
def test_clipped_train_colors_follow_the_class_mean_and_variance(color_var):
    per_class = 3000
    classes, colors = one_colour_per_class(REBIAS, color_var, per_class, seed=0, noise="clip")
    colors = colors.float() / 255
    std = math.sqrt(color_var)
    for c in range(10):
        got = colors[classes == c]
        expected = clipped_normal_mean(REBIAS[c], std)
        assert torch.allclose(got.mean(0), expected, atol=0.01), (c, got.mean(0), expected)
    # grey (class 9) sits mid-range, where clipping is rare: its spread is sigma
    assert colors[classes == 9].std(0) == pytest.approx(torch.full((3,), std), abs=0.01)


@pytest.mark.parametrize("color_var", [0.02, 0.05])
def test_resampled_colors_follow_the_truncated_normal(color_var):
    per_class = 4000
    means = PALETTE.repeat_interleave(per_class, dim=0)
    colors = draw_colors(means, color_var, np.random.default_rng(0), noise="resample")
    assert ((colors > 0) & (colors < 1)).all()  # no channel sits on a bound, unlike clipping
    std = math.sqrt(color_var)
    a, b = (0 - PALETTE.double()) / std, (1 - PALETTE.double()) / std
    expected_mean = truncnorm.mean(a, b, loc=PALETTE.double(), scale=std)
    expected_std = truncnorm.std(a, b, loc=PALETTE.double(), scale=std)
    got = colors.view(10, per_class, 3)
    assert np.allclose(got.mean(1).numpy(), expected_mean, atol=0.008)
    assert np.allclose(got.std(1).numpy(), expected_std, atol=0.008)


def test_resample_is_the_default_and_changes_only_out_of_range_draws():
    means = PALETTE.repeat(200, 1)
    clipped = draw_colors(means, 0.03, np.random.default_rng(3), noise="clip")
    resampled = draw_colors(means, 0.03, np.random.default_rng(3))
    assert torch.equal(resampled, draw_colors(means, 0.03, np.random.default_rng(3), "resample"))
    inside = (clipped > 0) & (clipped < 1)  # the first draw, where it was already inside
    assert torch.equal(resampled[inside], clipped[inside])
    assert not torch.equal(resampled, clipped)


def test_color_noise_reaches_the_images_and_the_cache_key(mnist_dir):
    clip = ColoredMNISTDataModule(data_dir=str(mnist_dir), color_noise="clip")
    resample = ColoredMNISTDataModule(data_dir=str(mnist_dir))
    assert not torch.equal(clip.generate()["train"][0], resample.generate()["train"][0])
    assert clip._cache_file() != resample._cache_file()


def test_intensity_strokes_are_grey_times_colour_and_background_stays_black():
    digits = torch.tensor([[[0, 100], [255, 0]]], dtype=torch.uint8)
    rng = np.random.default_rng(0)
    out = colorize(digits, torch.tensor([0]), REBIAS, 1e-9, rng, noise="clip", stroke="intensity")
    assert out.shape == (1, 3, 2, 2) and out.dtype == torch.uint8
    assert out[0, :, 0, 0].tolist() == [0, 0, 0]
    assert out[0, :, 1, 0].tolist() == [255, 0, 0]  # red at full intensity
    assert out[0, :, 0, 1].tolist() == [100, 0, 0]  # intensity x colour


def test_splits_sizes_labels_and_groups(mnist_dir):
    dm = ColoredMNISTDataModule(data_dir=str(mnist_dir), color_var=0.02, val_fraction=0.1, seed=0)
    dm.setup()
    train, val, test = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    assert (len(train), len(val), len(test)) == (540, 60, 1000)
    # the split: disjoint, and together every training image once (labels as the raw file's)
    raw = torch.from_numpy(np.fromfile(mnist_dir / "MNIST/raw/train-labels-idx1-ubyte", np.uint8))
    both = torch.cat([train.labels, val.labels])
    assert torch.equal(both.bincount(minlength=10), raw[8:].long().bincount(minlength=10))

    # the noise is per image, not per pixel: one colour on every full-intensity pixel of an
    # image (the bar of the fixture, row 3 + 2 * digit, left of the crossing column), different
    # colours across images of a class
    def bars(split):
        rows = 3 + 2 * split.labels
        return torch.stack([img[:, r, 6:12] for img, r in zip(split.images, rows, strict=True)])

    bar = bars(train)
    assert (bar == bar[:, :, :1]).all()
    assert bar[train.labels == 0, :, 0].float().std(0).min() > 5  # sigma^2 = .02: ~36 of 255
    # train and validation are biased, read from the pixels: each image's colour (its bar's)
    # is nearest to its digit's palette colour
    for split in (train, val):
        nearest = torch.cdist(bars(split)[:, :, 0].float() / 255, PALETTE).argmin(1)
        assert (nearest == split.labels).float().mean() > 0.6  # at random: 0.1; data: ~0.8
    # the test image's colour is its group's palette colour (nearest palette entry)
    colors = test.images.amax(dim=(2, 3)).float() / 255
    nearest = torch.cdist(colors, PALETTE).argmin(1)
    assert (nearest == test.groups).float().mean() > 0.6


def test_test_colour_class_is_independent_of_the_digit(mnist_dir):
    dm = ColoredMNISTDataModule(data_dir=str(mnist_dir), seed=3)
    dm.setup()
    test = dm.splits["test"]
    table = torch.zeros(10, 10)
    table.index_put_((test.labels, test.groups), torch.ones(len(test.labels)), accumulate=True)
    assert chi2_contingency(table.numpy()).pvalue > 1e-3
    assert 0.05 < (test.labels == test.groups).float().mean() < 0.15


def test_test_colours_are_their_palette_entry_plus_the_training_noise(mnist_dir):
    """Each test image's colour, given its colour class, is the class's palette entry plus
    N(0, sigma^2) redrawn into (0, 1): through that truncated normal's CDF, the colours of
    all images and channels are uniform; through a narrower noise's, they are not."""
    dm = ColoredMNISTDataModule(data_dir=str(mnist_dir), color_var=0.05, val_fraction=0)
    dm.setup()
    test = dm.splits["test"]
    colors = (test.images.amax((2, 3)).double() + 0.5) / 255  # each byte's middle: int(x * 255)
    mean = PALETTE.double()[test.groups]

    def through_cdf(color_var: float) -> np.ndarray:
        std = math.sqrt(color_var)
        a, b = (0 - mean) / std, (1 - mean) / std
        return truncnorm.cdf(colors, a, b, loc=mean, scale=std).ravel()

    assert kstest(through_cdf(0.05), "uniform").pvalue > 1e-3
    assert kstest(through_cdf(0.02), "uniform").pvalue < 1e-6  # the test can tell sigma^2 apart


def test_same_seed_same_tensors_bit_for_bit(mnist_dir):
    def generate(seed):
        return ColoredMNISTDataModule(data_dir=str(mnist_dir), seed=seed).generate()

    first, second, other = generate(7), generate(7), generate(8)
    for split in ("train", "val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(first[split], second[split], strict=True))
    assert not torch.equal(first["train"][0], other["train"][0])


def test_cache_round_trip(mnist_dir, tmp_path):
    dm = ColoredMNISTDataModule(data_dir=str(mnist_dir), cache=True, seed=5)
    dm.setup()
    cached = ColoredMNISTDataModule(data_dir=str(mnist_dir), cache=True, seed=5)
    assert cached._load_cache() is not None
    cached.setup()
    assert torch.equal(dm.splits["test"].images, cached.splits["test"].images)


def test_a_truncated_cache_is_built_again(mnist_dir):
    dm = ColoredMNISTDataModule(data_dir=str(mnist_dir), cache=True, seed=7)
    dm.setup()
    path = dm._cache_file()
    path.write_bytes(path.read_bytes()[:1000])  # cut short, as by a full disk
    again = ColoredMNISTDataModule(data_dir=str(mnist_dir), cache=True, seed=7)
    assert again._load_cache() is None
    again.setup()
    assert torch.equal(dm.splits["test"].images, again.splits["test"].images)
    assert again._load_cache() is not None  # and written again whole


def test_batches_follow_the_contract(mnist_dir):
    dm = ColoredMNISTDataModule(data_dir=str(mnist_dir), batch_size=32)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {IMAGE, LABEL, BIAS_TARGET, BIAS_GROUP, INDEX}
    # index: each image's position in the training split, the key of per-sample state
    train = dm.splits["train"]
    assert len(set(batch[INDEX].tolist())) == 32
    assert torch.equal(batch[IMAGE], train.images[batch[INDEX]].float() / 255)
    assert torch.equal(batch[LABEL], train.labels[batch[INDEX]])
    labels, groups = dm.train_label_groups()
    assert torch.equal(labels, train.labels) and torch.equal(groups, train.groups)
    assert batch[IMAGE].shape == (32, 3, 28, 28) and batch[IMAGE].dtype == torch.float32
    assert batch[IMAGE].min() >= 0.0 and batch[IMAGE].max() <= 1.0
    assert batch[LABEL].shape == (32,) and batch[LABEL].dtype == torch.int64
    assert batch[BIAS_TARGET].shape == (32, 3, 14, 14) and batch[BIAS_TARGET].dtype == torch.int64
    assert batch[BIAS_GROUP].shape == (32,)
    values = batch[BIAS_TARGET].unique().tolist()
    assert IGNORE_INDEX in values and all(v == IGNORE_INDEX or 0 <= v < 8 for v in values)


def test_grayscale_shows_the_luminance_and_keeps_the_colour_target(mnist_dir):
    colour = ColoredMNISTDataModule(data_dir=str(mnist_dir), batch_size=16, seed=3)
    grey = ColoredMNISTDataModule(data_dir=str(mnist_dir), batch_size=16, seed=3, grayscale=True)
    colour.setup()
    grey.setup()
    a, b = next(iter(colour.test_dataloader())), next(iter(grey.test_dataloader()))
    r, g, bl = a[IMAGE].unbind(1)
    luminance = 0.299 * r + 0.587 * g + 0.114 * bl
    for channel in b[IMAGE].unbind(1):  # the same grey on the three channels
        torch.testing.assert_close(channel, luminance)
    assert not torch.equal(a[IMAGE][:, 0], a[IMAGE][:, 1])  # the colour images are coloured
    assert torch.equal(a[BIAS_TARGET], b[BIAS_TARGET])  # h still learns the colour
    assert torch.equal(a[LABEL], b[LABEL])


def test_color_bin_target_matches_the_official_recipe():
    image = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    image[0, :, 1, 1] = torch.tensor([255, 31, 32])  # kept by nearest 4->2 (pixel centres 1, 3)
    image[0, :, 3, 3] = torch.tensor([0, 0, 0])  # black: background
    image[0, :, 1, 3] = torch.tensor([0, 100, 0])
    image[0, :, 0, 0] = torch.tensor([255, 255, 255])  # dropped by the downsampling
    target = color_bin_target(image, 2, num_bins=8)
    assert target.shape == (1, 3, 2, 2)
    assert target[0, :, 0, 0].tolist() == [7, 0, 1]
    # each zero channel is ignored on its own, as the official mask does
    assert target[0, :, 0, 1].tolist() == [IGNORE_INDEX, 3, IGNORE_INDEX]
    assert target[0, :, 1, 1].tolist() == [IGNORE_INDEX] * 3
    assert target[0, :, 1, 0].tolist() == [IGNORE_INDEX] * 3


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"color_var": -0.1}, "data.color_var"),
        ({"color_var": 0.0}, "data.color_var"),
        ({"color_var": float("nan")}, "data.color_var"),
        ({"color_var": 2.0}, "data.color_var"),
        ({"batch_size": -4}, "data.batch_size"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"palette": [[255, 0, 0]] * 7}, "data.palette"),
        ({"palette": "rainbow"}, "data.palette"),
        ({"palette": [[300, 0, 0]] * 10}, "data.palette"),
        ({"val_fraction": 1.5}, "data.val_fraction"),
        ({"color_noise": "wrap"}, "data.color_noise"),
    ],
)
def test_bad_input_names_the_key(kwargs, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        ColoredMNISTDataModule(data_dir=str(tmp_path), **kwargs)


def test_missing_mnist_names_folder_and_files(tmp_path):
    dm = ColoredMNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        assert name in message
    assert "data.data_dir" in message


def test_failed_download_gives_the_same_guidance(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(MNIST, "download", offline)
    with pytest.raises(DataNotFoundError, match="four IDX files"):
        ColoredMNISTDataModule(data_dir=str(tmp_path), download=True).prepare_data()


def test_a_truncated_mnist_file_is_named_with_what_to_do(tmp_path):
    from ..helpers.fixtures import make_mnist

    raw = make_mnist(tmp_path, num_train=50, num_test=20) / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])  # cut short, as by an interrupted copy
    with pytest.raises(DataError) as err:
        ColoredMNISTDataModule(data_dir=str(tmp_path), download=False).prepare_data()
    message = str(err.value)
    assert str(images) in message and "damaged" in message and "Delete it" in message
    assert not isinstance(err.value, DataNotFoundError)


def test_rebias_protocol_colours_the_background_with_rho_aligned(mnist_dir):
    dm = ColoredMNISTDataModule(
        data_dir=str(mnist_dir), protocol="rebias", rho=0.9, val_fraction=0.0
    )
    dm.setup()
    train, test = dm.splits["train"], dm.splits["test"]
    aligned = (train.groups == train.labels).float().mean().item()
    assert 0.85 < aligned < 0.95
    assert (
        train.groups[train.groups != train.labels] != train.labels[train.groups != train.labels]
    ).all()
    # background (corner pixel) is the group's palette colour, the strokes are white
    corner = train.images[:, :, 0, 0].float() / 255
    expected = (PALETTE[train.groups] * 255).round() / 255
    assert torch.allclose(corner, expected)
    stroke = train.images[:, :, 3 + 2 * train.labels[0], 10][0]
    assert stroke.tolist() == [255, 255, 255]
    assert 0.05 < (test.labels == test.groups).float().mean() < 0.15
    batch = next(iter(dm.train_dataloader()))
    # no black background: every pixel has a colour target (zero channels are ignored alone)
    assert (batch[BIAS_TARGET] != IGNORE_INDEX).any(dim=1).all()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"protocol": "rebias", "rho": 1.5}, "data.rho"), ({"protocol": "stripes"}, "data.protocol")],
)
def test_rebias_bad_input(kwargs, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        ColoredMNISTDataModule(data_dir=str(tmp_path), **kwargs)


def test_val_fraction_zero_trains_on_every_training_image_and_tests_each_epoch(mnist_dir):
    """The official protocol: all 60k (here 600) training images train; test loaders follow."""
    dm = ColoredMNISTDataModule(data_dir=str(mnist_dir), val_fraction=0, test_each_epoch=True)
    dm.setup()
    assert len(dm.splits["train"]) == 600 and len(dm.splits["val"]) == 0
    val_loader, test_loader = dm.val_dataloader()
    assert len(val_loader) == 0
    assert test_loader.dataset is dm.splits["test"]


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        ("random", "train-images-idx3-ubyte", r"magic number is .*0x803 expected"),
        ("magic", "t10k-labels-idx1-ubyte", r"not an MNIST label file: its magic number is 0x803"),
        ("one_label_fewer", "train-labels-idx1-ubyte", r"holds 50 images but .* 49 labels"),
        ("missing", "t10k-images-idx3-ubyte", r"missing from .*: t10k-images-idx3-ubyte \("),
    ],
)
def test_each_damaged_or_missing_mnist_file_is_named(damage, file, message, tmp_path):
    import struct

    from ..helpers.fixtures import make_mnist

    raw = make_mnist(tmp_path, num_train=50, num_test=20) / "MNIST" / "raw"
    path = raw / file
    if damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    elif damage == "magic":  # an image file where the labels belong
        path.write_bytes((raw / "t10k-images-idx3-ubyte").read_bytes())
    elif damage == "one_label_fewer":
        data = path.read_bytes()
        path.write_bytes(data[:4] + struct.pack(">i", 49) + data[8:-1])
    else:
        path.unlink()
    with pytest.raises((DataError, DataNotFoundError), match=message) as err:
        ColoredMNISTDataModule(data_dir=str(tmp_path), download=False).prepare_data()
    assert str(raw) in str(err.value)


def test_a_val_fraction_holding_out_no_image_is_refused_before_the_first_epoch(mnist_dir):
    dm = ColoredMNISTDataModule(data_dir=str(mnist_dir), val_fraction=0.000001)
    with pytest.raises(ConfigError, match=r"data.val_fraction=1e-06 holds out .* fewer than one"):
        dm.setup()
    kept = ColoredMNISTDataModule(data_dir=str(mnist_dir), val_fraction=1 / 600)
    kept.setup()
    assert len(kept.splits["val"]) == 1


# ---------------------------------------------------------------- the paper-like default data
# What sample images of the authors' arrays show (README "The data"), checked on generated ones.


def grey_fixture(num: int, rng: np.random.Generator) -> torch.Tensor:
    """Grey 'digits' with every grey value 0-255 somewhere (128 and 129 included)."""
    return torch.from_numpy(rng.integers(0, 256, (num, 16, 16), dtype=np.uint8))


def test_binary_strokes_one_flat_colour_as_int_x_255():
    rng = np.random.default_rng(1)
    digits = grey_fixture(500, rng)
    digits[0, 0, :2] = torch.tensor([128, 129], dtype=torch.uint8)
    classes = torch.arange(500) % 10
    out = colorize(digits, classes, PALETTE, 0.03, np.random.default_rng(5))
    colors = draw_colors(PALETTE[classes], 0.03, np.random.default_rng(5))  # the same draws
    stroke = digits > 128
    assert out[0, :, 0, 0].tolist() == [0, 0, 0] and out[0, :, 0, 1].tolist() != [0, 0, 0]
    # black off the strokes; on them one colour per image, int(x * 255) of the drawn colour
    assert (out.permute(1, 0, 2, 3)[:, ~stroke] == 0).all()
    expected = (colors.double() * 255).floor().to(torch.uint8)
    on_stroke = out.permute(0, 2, 3, 1)[stroke]
    assert torch.equal(on_stroke, expected.repeat_interleave(stroke.sum((1, 2)), dim=0))


def test_default_data_are_binarised_flat_colours_with_noise_redrawn_inside(mnist_dir):
    dm = ColoredMNISTDataModule(data_dir=str(mnist_dir), color_var=0.05, val_fraction=0)
    dm.setup()
    from lnl_lightning.data.mnist_files import load_mnist

    grey = load_mnist(mnist_dir, download=False)[1].data  # the test split keeps MNIST's order
    test = dm.splits["test"]
    assert torch.equal(test.images.amax(1) > 0, grey > 128)  # the stroke mask, exactly
    for split in ("train", "test"):
        images = dm.splits[split].images
        stroke = (images.amax(1, keepdim=True) > 0).expand_as(images).flatten(2)
        pixels = images.flatten(2).int()
        assert (pixels < 255).all()  # redrawn into (0, 1): int(x * 255) never reaches 255
        # one flat colour per image: on its strokes each channel's max equals its min
        highest = pixels.masked_fill(~stroke, -1).amax(2)
        lowest = pixels.masked_fill(~stroke, 256).amin(2)
        assert torch.equal(highest, lowest)
    # a 0 only where a draw fell under 1/255: rare, and only in channels whose mean is low
    train = dm.splits["train"]
    colors = train.images.amax((2, 3))
    assert 0 < (colors == 0).float().mean() < 0.02
    assert (colors[PALETTE[train.labels] > 0.3] > 0).all()


@pytest.mark.parametrize("color_var", [0.02, 0.05])
def test_default_colours_per_digit_follow_the_truncated_normal_in_bytes(color_var):
    per_class = 4000
    _, colors = one_colour_per_class(PALETTE, color_var, per_class, seed=2)
    colors = colors.double()
    std = math.sqrt(color_var)
    mean = PALETTE.double()
    a, b = (0 - mean) / std, (1 - mean) / std
    # int(x * 255) = 255 x - U, U about uniform on [0, 1): mean - 1/2, variance + 1/12
    expected_mean = 255 * truncnorm.mean(a, b, loc=mean, scale=std) - 0.5
    expected_std = np.sqrt((255 * truncnorm.std(a, b, loc=mean, scale=std)) ** 2 + 1 / 12)
    got = colors.view(10, per_class, 3)
    error = expected_std / math.sqrt(per_class)  # standard error of a mean; ~/sqrt(2) of a std
    assert (np.abs(got.mean(1).numpy() - expected_mean) < 4.5 * error).all()
    assert (np.abs(got.std(1).numpy() - expected_std) < 4.5 * error).all()


def test_the_default_palette_is_the_supplements():
    dm = ColoredMNISTDataModule(data_dir="unused")
    assert torch.equal(dm.palette, PALETTE)
    assert (dm.color_noise, dm.stroke) == ("resample", "binary")
    assert torch.equal(ColoredMNISTDataModule(data_dir="unused", palette="rebias").palette, REBIAS)
    # "paper" named the ReBias map in configs written before
    assert torch.equal(ColoredMNISTDataModule(data_dir="unused", palette="paper").palette, REBIAS)


def test_the_first_data_of_the_repository_reproduce_bit_for_bit(mnist_dir):
    """ReBias palette, intensity strokes, clipped noise, derived here from the protocol alone."""
    dm = ColoredMNISTDataModule(
        data_dir=str(mnist_dir), palette="rebias", color_noise="clip", stroke="intensity"
    )
    from lnl_lightning.data.mnist_files import load_mnist

    train, test = load_mnist(mnist_dir, download=False)
    split_seed, train_seed, test_seed = np.random.SeedSequence(0).spawn(3)
    order = np.random.default_rng(split_seed).permutation(len(train.targets))
    fit = torch.from_numpy(order[60:])
    rng = np.random.default_rng(train_seed)
    noise = torch.from_numpy(rng.standard_normal((len(train.targets), 3))).float()
    colors = (REBIAS[train.targets] + math.sqrt(0.02) * noise).clamp(0, 1)
    expected = (train.data.float()[:, None] * colors[:, :, None, None]).round().to(torch.uint8)
    assert torch.equal(dm.generate()["train"][0], expected[fit])


def test_the_gz_archives_alone_work_without_download(tmp_path):
    import gzip

    from ..helpers.fixtures import make_mnist

    plain = make_mnist(tmp_path / "plain", num_train=50, num_test=20) / "MNIST" / "raw"
    raw = tmp_path / "archives" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in plain.iterdir():  # as downloaded from the MNIST page: only the .gz files
        (raw / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    dm = ColoredMNISTDataModule(data_dir=str(tmp_path / "archives"), download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert (raw / "train-images-idx3-ubyte").read_bytes() == (
        plain / "train-images-idx3-ubyte"
    ).read_bytes()
    assert len(dm.train_dataloader().dataset) > 0
