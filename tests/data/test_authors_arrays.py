"""The authors' Colored MNIST arrays: read as Python 2 wrote them, never run, checked, split."""

from __future__ import annotations

import io
import pickletools

import numpy as np
import pytest
import torch

from lnl_lightning.data.authors_arrays import read_arrays, stroke_colors
from lnl_lightning.data.colored_mnist import ColoredMNISTDataModule
from lnl_lightning.data.contract import BIAS_GROUP, BIAS_TARGET, IMAGE, LABEL
from lnl_lightning.data.safe_npy import load_pickled_npy
from lnl_lightning.errors import ConfigError, DataError, DataNotFoundError

from ..helpers.authors_arrays import (
    WritesAFile,
    authors_arrays,
    npy_of_object,
    write_authors_arrays,
)


@pytest.fixture(scope="module")
def arrays():
    return authors_arrays()


@pytest.fixture(scope="module")
def arrays_dir(tmp_path_factory, arrays):
    folder = tmp_path_factory.mktemp("arrays")
    write_authors_arrays(folder, arrays[0], 0.02)
    return folder


def array_module(arrays_dir, **kwargs) -> ColoredMNISTDataModule:
    dm = ColoredMNISTDataModule(
        data_dir="unused", source="arrays", arrays_dir=str(arrays_dir), **kwargs
    )
    dm.prepare_data()
    dm.setup()
    return dm


def test_the_fixture_is_a_python_2_pickle_that_numpy_reads(arrays_dir, arrays):
    path = arrays_dir / "mnist_10color_jitter_var_0.020.npy"
    raw = path.read_bytes()
    stream = io.BytesIO(raw)
    np.lib.format.read_magic(stream)
    np.lib.format.read_array_header_1_0(stream)
    opcodes = {op.name for op, _, _ in pickletools.genops(stream)}
    assert {"SHORT_BINSTRING", "BINSTRING", "GLOBAL"} <= opcodes
    assert not opcodes & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"}
    assert b"numpy.core.multiarray\n_reconstruct\n" in raw
    official = np.load(path, encoding="latin1", allow_pickle=True).item()  # the official loader
    ours = read_arrays(path)
    for key in official:
        assert official[key].dtype == ours[key].dtype and np.array_equal(official[key], ours[key])
        assert np.array_equal(ours[key], arrays[0][key])


def test_a_file_written_by_python_3_reads_too(tmp_path, arrays):
    path = tmp_path / "mnist_10color_jitter_var_0.020.npy"
    np.save(path, arrays[0], allow_pickle=True)
    assert np.array_equal(read_arrays(path)["train_image"], arrays[0]["train_image"])


@pytest.mark.parametrize("where", ["value", "key"])
def test_a_tampered_file_is_refused_before_any_of_it_runs(tmp_path, arrays, where):
    marker = tmp_path / "ran.txt"
    content = dict(arrays[0])
    if where == "value":
        content["train_label"] = WritesAFile(marker)
    else:
        content[WritesAFile(marker)] = 0
    path = tmp_path / "mnist_10color_jitter_var_0.020.npy"
    path.write_bytes(npy_of_object(content))
    with pytest.raises(DataError) as err:
        read_arrays(path)
    assert str(path) in str(err.value) and "__builtin__.exec" in str(err.value)  # as named
    assert not marker.exists()
    np.load(path, encoding="latin1", allow_pickle=True)  # what the official loader would do
    assert marker.read_text() == "ran"


def rewrite(tmp_path, arrays, **changes) -> str:
    content = {k: v for k, v in arrays[0].items() if changes.get(k, 0) is not None}
    content.update({k: v for k, v in changes.items() if v is not None})
    write_authors_arrays(tmp_path, content, 0.02)
    return str(tmp_path / "mnist_10color_jitter_var_0.020.npy")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"test_gray": None}, "lacks the keys ['test_gray']"),
        (
            {"train_image": np.zeros((600, 28, 28, 3), np.float32)},
            "'train_image' has dtype float32",
        ),
        ({"train_label": np.zeros(600, np.float64)}, "'train_label' has dtype float64"),
        ({"train_image": np.zeros((600, 3, 28, 28), np.uint8)}, "'train_image' has shape"),
        ({"test_label": np.zeros(150, np.int8)}, "'test_label' has shape (150,)"),
        ({"test_label": np.full(200, 10, np.int8)}, "from 10 to 10; expected digits 0-9"),
        ({"train_label": [0] * 600}, "'train_label' is a list"),
    ],
)
def test_wrong_content_names_the_file_and_what_was_expected(tmp_path, arrays, changes, expected):
    path = rewrite(tmp_path, arrays, **changes)
    with pytest.raises(DataError) as err:
        read_arrays(tmp_path / "mnist_10color_jitter_var_0.020.npy")
    assert path in str(err.value) and expected in str(err.value)


def test_truncated_and_foreign_files_are_named(tmp_path, arrays_dir):
    full = (arrays_dir / "mnist_10color_jitter_var_0.020.npy").read_bytes()
    cut = tmp_path / "cut.npy"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=f"{cut}.*truncated or damaged"):
        load_pickled_npy(cut)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((2, 3)))
    with pytest.raises(DataError, match=f"{plain} holds a float64 array of shape \\(2, 3\\)"):
        load_pickled_npy(plain)
    text = tmp_path / "text.npy"
    text.write_text("not numpy")
    with pytest.raises(DataError, match=f"{text} is not a .npy file"):
        load_pickled_npy(text)


def test_splits_groups_and_batches_follow_the_arrays(arrays_dir, arrays):
    content, test_classes = arrays
    dm = array_module(arrays_dir, val_fraction=0.1, seed=4)
    train, val, test = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    assert (len(train), len(val), len(test)) == (540, 60, 200)
    # the split is generate()'s for the same data.seed: the same images held out
    mnist_like = ColoredMNISTDataModule(data_dir="unused", seed=4)
    fit_index, val_index = mnist_like._split(600, np.random.SeedSequence(4).spawn(3)[0])
    images = torch.from_numpy(content["train_image"]).permute(0, 3, 1, 2)
    assert torch.equal(train.images, images[fit_index]) and torch.equal(
        val.images, images[val_index]
    )
    assert torch.equal(val.labels, torch.from_numpy(content["train_label"]).long()[val_index])
    # bias groups: the nearest per-digit mean stroke colour; here the digit's colour class
    assert (train.groups == train.labels).float().mean() > 0.6
    assert (test.groups == torch.from_numpy(test_classes)).float().mean() > 0.6
    means = torch.stack([stroke_colors(train.images)[train.labels == d].mean(0) for d in range(10)])
    nearest = torch.cdist(stroke_colors(test.images), means).argmin(1)
    assert torch.equal(test.groups, nearest)
    batch = next(iter(dm.train_dataloader()))
    assert batch[IMAGE].shape == (128, 3, 28, 28) and batch[BIAS_TARGET].shape == (128, 3, 14, 14)
    assert batch[LABEL].dtype == torch.int64 and batch[BIAS_GROUP].dtype == torch.int64


def test_val_fraction_zero_trains_on_every_array_image(arrays_dir):
    dm = array_module(arrays_dir, val_fraction=0)
    assert len(dm.splits["train"]) == 600 and len(dm.splits["val"]) == 0


def test_the_gray_oracle_tests_on_test_gray(arrays_dir, arrays):
    colour = array_module(arrays_dir)
    grey = array_module(arrays_dir, grayscale=True)
    test_gray = torch.from_numpy(arrays[0]["test_gray"]).float() / 255
    batch = next(iter(grey.test_dataloader()))
    for channel in batch[IMAGE].unbind(1):
        torch.testing.assert_close(channel, test_gray[:128])
    assert torch.equal(grey.splits["test"].groups, colour.splits["test"].groups)
    train = next(iter(grey.train_dataloader()))[IMAGE]
    assert torch.equal(train[:, 0], train[:, 1])  # the training images as their luminance


def test_missing_file_and_bad_settings_name_the_key_and_file(tmp_path, arrays_dir):
    dm = ColoredMNISTDataModule(
        data_dir="unused", source="arrays", arrays_dir=str(arrays_dir), color_var=0.03
    )
    with pytest.raises(DataNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "mnist_10color_jitter_var_0.030.npy not found" in message
    assert "mnist_10color_jitter_var_0.020.npy" in message and "data.arrays_dir" in message
    with pytest.raises(ConfigError, match="data.arrays_dir"):
        ColoredMNISTDataModule(data_dir="unused", source="arrays")
    with pytest.raises(ConfigError, match="data.arrays_dir must be a folder"):
        ColoredMNISTDataModule(data_dir="unused", source="arrays", arrays_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="data.protocol=variance"):
        ColoredMNISTDataModule(
            data_dir="unused", source="arrays", arrays_dir=str(arrays_dir), protocol="rebias"
        )
    with pytest.raises(ConfigError, match="data.source"):
        ColoredMNISTDataModule(data_dir="unused", source="files")
