"""Dogs & Cats, IMDB-Face and image-CSV datamodules on generated fixtures in the real formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnl_lightning.data import dogs_cats as dogs_cats_module
from lnl_lightning.data.contract import (
    BIAS_GROUP,
    BIAS_TARGET,
    IGNORE_INDEX,
    IMAGE,
    INDEX,
    LABEL,
)
from lnl_lightning.data.dogs_cats import DogsCatsDataModule
from lnl_lightning.data.image_csv import ImageCSVDataModule
from lnl_lightning.data.imdb_face import IMDBFaceDataModule, age_bin, birth_year
from lnl_lightning.errors import ConfigError, DataError, DataNotFoundError

from ..helpers.images import datenum, make_dogs_cats, make_image_csv, make_imdb

SMALL = {"image_size": 32, "batch_size": 8, "num_workers": 0}


def names(records) -> list[str]:
    return [p.name for p in records.paths]


# ---------------------------------------------------------------- Dogs & Cats
@pytest.mark.parametrize("train_split", ["tb1", "tb2"])
def test_dogs_cats_splits_follow_the_lists(dogs_cats_dir, train_split):
    dm = DogsCatsDataModule(str(dogs_cats_dir), train_split=train_split, **SMALL)
    dm.setup()
    train, val, test = dm.splits["train"], dm.splits["val"], dm.splits[dm.test_names[0]]
    assert len(train) + len(val) == 60 and len(test) == 60  # 30 per cell, unlisted dropped
    dark = {f"{a}.{i}.jpg" for a in ("cat", "dog") for i in range(30)}
    for records in (train, val, test):
        for name, label, group in zip(names(records), records.labels, records.groups, strict=True):
            assert label == (0 if name.startswith("cat") else 1)
            assert group == (0 if name in dark else 1)
    # TB1: cats dark, dogs bright; the test split has the opposite pairing
    tb1_like = (train.labels == train.groups).all()
    assert tb1_like == (train_split == "tb1")
    assert ((test.labels == test.groups).all()) == (train_split == "tb2")
    assert dm.test_names == (f"test_{'tb2' if train_split == 'tb1' else 'tb1'}",)


def test_dogs_cats_batch_contract_and_colour_target(dogs_cats_dir):
    dm = DogsCatsDataModule(str(dogs_cats_dir), **SMALL)
    dm.setup()
    batch = next(iter(dm.test_dataloader()[0]))
    assert batch[IMAGE].shape == (8, 3, 32, 32) and batch[IMAGE].dtype == torch.float32
    assert batch[BIAS_TARGET].shape == (8, 3, 4, 4)  # f's map is 1/8 of the input
    values = set(batch[BIAS_TARGET].unique().tolist()) - {IGNORE_INDEX}
    assert values and all(0 <= v < 8 for v in values)
    # over the whole test split (both groups): dark images get low colour bins, bright ones high
    batches = list(dm.test_dataloader()[0])
    groups = torch.cat([b[BIAS_GROUP] for b in batches])
    targets = torch.cat([b[BIAS_TARGET] for b in batches]).float()
    valid = targets != IGNORE_INDEX
    mean_bin = (targets * valid).sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3))
    dark = groups == 0
    assert dark.sum() == (~dark).sum() == 30  # the fixture's 30 per cell
    assert mean_bin[dark].max() < 3 < 4 < mean_bin[~dark].min()  # grey levels 40 and 210 of 255
    assert set(batch[LABEL].tolist()) <= {0, 1}
    # index: each image's position in its split
    records = dm.splits[dm.test_names[0]]
    assert batch[LABEL].tolist() == [int(records.labels[i]) for i in batch[INDEX]]
    labels, groups = dm.train_label_groups()
    assert labels.tolist() == dm.splits["train"].labels.tolist()
    assert groups.tolist() == dm.splits["train"].groups.tolist()


def test_dogs_cats_luminance_split_is_cached(dogs_cats_dir, tmp_path):
    root = make_dogs_cats(tmp_path / "dc")
    dm = DogsCatsDataModule(str(root), split_source="luminance", **SMALL)
    dm.setup()
    assert (root / "luminance.csv").is_file()
    train = dm.splits["train"]
    # 66 images per class: the darkest 22 (the listed-dark ones) and the brightest 22
    assert len(train) + len(dm.splits["val"]) == 44
    for name, group in zip(names(train), train.groups, strict=True):
        assert group == (0 if int(name.split(".")[1]) < 30 else 1)


def test_dogs_cats_few_corrupt_files_are_skipped(tmp_path, caplog):
    root = make_dogs_cats(tmp_path / "dc", per_cell=120, unlisted=0, corrupt=("cat.3.jpg",))
    dm = DogsCatsDataModule(str(root), val_fraction=0.0, **SMALL)
    dm.setup()
    assert "cat.3.jpg" not in names(dm.splits["train"]) and len(dm.splits["train"]) == 239
    assert "Skipping 1 unreadable image" in caplog.text


def test_dogs_cats_many_corrupt_files_stop_with_their_names(tmp_path):
    root = make_dogs_cats(tmp_path / "dc", per_cell=20, corrupt=("cat.1.jpg", "dog.25.jpg"))
    with pytest.raises(DataError, match=r"2 of 40 images of the tb1 split.*cat\.1\.jpg"):
        DogsCatsDataModule(str(root), **SMALL).setup()


def test_dogs_cats_missing_lists_offline(tmp_path, monkeypatch):
    root = make_dogs_cats(tmp_path / "dc", per_cell=2)
    (root / "list_dark.txt").unlink()

    def offline(lists_dir):
        raise OSError("network is unreachable")

    monkeypatch.setattr(dogs_cats_module, "download_lists", offline)
    with pytest.raises(DataNotFoundError, match="list_dark.txt and list_bright.txt") as err:
        DogsCatsDataModule(str(root), **SMALL).setup()
    assert "missing: list_dark.txt" in str(err.value) and "data.split_source=luminance" in str(
        err.value
    )


def test_dogs_cats_missing_images(tmp_path):
    with pytest.raises(DataNotFoundError, match="train.zip"):
        DogsCatsDataModule(str(tmp_path), **SMALL).prepare_data()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"train_split": "tb3"}, "data.train_split"),
        ({"split_source": "magic"}, "data.split_source"),
        ({"image_size": 4}, "data.image_size"),
    ],
)
def test_dogs_cats_bad_config(kwargs, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        DogsCatsDataModule(str(tmp_path), **{**SMALL, **kwargs})


# ---------------------------------------------------------------- IMDB-Face
def test_birth_year_and_age_bins():
    dob = np.array([datenum(__import__("datetime").date(1968, 5, 10)), 0.0, np.nan])
    assert birth_year(dob).tolist() == [1968, -1, -1]
    ages = np.array([0, 19, 20, 29, 30, 39, 40, 69, 70, 100])
    assert age_bin(ages).tolist() == [0, 0, 1, 2, 3, 4, 5, 10, 11, 11]


def test_imdb_filters_faces_like_the_publisher_says(tmp_path):
    kept = make_imdb(tmp_path)
    dm = IMDBFaceDataModule(str(tmp_path), **SMALL)
    faces, official_test = dm._faces()
    assert official_test is None
    assert sorted(faces["path"].tolist()) == sorted(kept["path"])
    by_path = dict(zip(kept["path"], zip(kept["age"], kept["gender"], strict=True), strict=True))
    for path, age, gender in zip(faces["path"], faces["age"], faces["gender"], strict=True):
        assert by_path[path] == (age, gender)
    assert (tmp_path / "imdb_crop" / "imdb_index_score1.npz").is_file()  # cached index


@pytest.mark.parametrize("train_split", ["eb1", "eb2"])
def test_imdb_gender_task_splits(imdb_dir, train_split):
    dm = IMDBFaceDataModule(str(imdb_dir), task="gender", train_split=train_split, **SMALL)
    dm.setup()
    other = "eb2" if train_split == "eb1" else "eb1"
    assert dm.test_names == (f"test_{other}", "test")
    young_group, old_group = 0, 2
    women_group = young_group if train_split == "eb1" else old_group
    for split in ("train", "val"):
        records = dm.splits[split]
        women = records.labels == 0
        assert (records.groups[women] == women_group).all()
        assert (records.groups[~women] == (old_group + young_group - women_group)).all()
    test = dm.splits["test"]
    assert set(test.groups.tolist()) == {0, 1, 2}  # the unbiased test set has all ages
    all_names = [set(names(dm.splits[s])) for s in ("train", "val", f"test_{other}", "test")]
    assert sum(len(s) for s in all_names) == len(set().union(*all_names))  # disjoint
    assert set(dm.splits["train"].bias_targets.tolist()) <= {1, 7}  # ages 22 and 50


def test_imdb_age_task_labels_and_bias(imdb_dir):
    dm = IMDBFaceDataModule(str(imdb_dir), task="age", **SMALL)
    dm.setup()
    test = dm.splits["test"]
    assert set(test.labels.tolist()) <= {1, 4, 7} and (test.groups == test.bias_targets).all()
    assert dm.bias_spec.num_classes == 12 and dm.bias_spec.num_bias_classes == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch[BIAS_TARGET].shape == (8,) and batch[LABEL].max() < 12


def test_imdb_uses_the_official_labels_when_present(imdb_dir, tmp_path):
    import shutil

    root = tmp_path / "imdb"
    shutil.copytree(imdb_dir / "imdb_crop", root / "imdb_crop")
    (root / "imdb_crop" / "imdb.mat").unlink()
    files = sorted(
        p.relative_to(root / "imdb_crop").as_posix() for p in (root / "imdb_crop").rglob("*.jpg")
    )
    labels = {f.encode(): {"age": 25 + i % 30, "gender": i % 2} for i, f in enumerate(files)}
    np.save(root / "imdb_age_gender.npy", labels, allow_pickle=True)
    np.save(
        root / "imdb_split.npy",
        {"train_list": files[:60], "test_list": files[60:]},
        allow_pickle=True,
    )
    dm = IMDBFaceDataModule(str(root), **SMALL)
    dm.setup()
    assert sorted(names(dm.splits["test"])) == sorted(p.split("/")[-1] for p in files[60:])


def test_a_mat_file_that_is_not_imdbs_is_named_with_what_it_holds(tmp_path):
    from scipy.io import savemat

    from lnl_lightning.data.imdb_face import read_imdb_mat

    wiki = tmp_path / "wiki.mat"
    savemat(wiki, {"wiki": {"full_path": np.array(["a.jpg"], dtype=object)}})
    with pytest.raises(DataError, match=r"no variable 'imdb' \(it holds: wiki\)"):
        read_imdb_mat(wiki, 1.0)
    partial = tmp_path / "imdb.mat"
    savemat(partial, {"imdb": {"full_path": np.array(["a.jpg"], dtype=object)}})
    with pytest.raises(DataError, match=r"no field\(s\) face_score, second_face_score"):
        read_imdb_mat(partial, 1.0)


def test_imdb_missing_metadata(tmp_path):
    with pytest.raises(DataNotFoundError, match="imdb.mat"):
        IMDBFaceDataModule(str(tmp_path), **SMALL).prepare_data()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"task": "height"}, "data.task"),
        ({"train_split": "eb3"}, "data.train_split"),
        ({"test_fraction": 1.0}, "data.test_fraction"),
    ],
)
def test_imdb_bad_config(kwargs, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        IMDBFaceDataModule(str(tmp_path), **{**SMALL, **kwargs})


# ---------------------------------------------------------------- image CSV
def test_image_csv_ids_splits_and_aligned_cells(image_csv_path):
    dm = ImageCSVDataModule(str(image_csv_path), **SMALL)
    spec = dm.bias_spec
    assert spec.class_names == ("bird", "plane") and spec.group_names == ("grass", "sky")
    assert spec.aligned_cells == ((0, 0), (1, 1))  # birds on grass, planes in the sky
    dm.setup()
    total = sum(len(dm.splits[s]) for s in ("train", "val", "test"))
    assert total == 96 and len(dm.splits["test"]) == round(0.2 * 96)
    batch = next(iter(dm.train_dataloader()))
    assert torch.equal(batch[BIAS_TARGET], batch[BIAS_GROUP])


def test_image_csv_split_column_is_respected(tmp_path):
    csv_path = make_image_csv(tmp_path, with_split=True)
    dm = ImageCSVDataModule(str(csv_path), **SMALL)
    dm.setup()
    for split, positions in (("train", {0, 1}), ("val", {2}), ("test", {3})):
        # the fixture puts image i of each cell in split ("train", "train", "val", "test")[i % 4]
        assert {
            int(n.rsplit("_", 1)[1].split(".")[0]) % 4 for n in names(dm.splits[split])
        } == positions
    assert len(dm.splits["val"]) == len(dm.splits["test"]) == 24 and len(dm.splits["train"]) == 48


def test_image_csv_says_at_once_what_it_leaves_out(tmp_path, caplog):
    csv_path = make_image_csv(tmp_path, per_cell=4)
    header, *rows = csv_path.read_text().splitlines()
    no_val = [header + ",split"] + [
        r + (",test" if i % 4 == 0 else ",train") for i, r in enumerate(rows)
    ]
    csv_path.write_text("\n".join(no_val) + "\n")
    with caplog.at_level("WARNING"):
        ImageCSVDataModule(str(csv_path), **SMALL)  # at construction, before any training
    assert "no validation rows" in caplog.text and "test_ckpt=best refused" in caplog.text

    caplog.clear()
    one_bias = [header] + [",".join(r.split(",")[:2] + ["sky"]) for r in rows]
    csv_path.write_text("\n".join(one_bias) + "\n")
    with caplog.at_level("WARNING"):
        ImageCSVDataModule(str(csv_path), **SMALL)
    assert "column bias has one value ('sky') in every row" in caplog.text

    wrong_split = [header + ",split"] + [r + ",training" for r in rows]
    csv_path.write_text("\n".join(wrong_split) + "\n")
    with pytest.raises(DataError, match=r"must be train, val or test; got 'training'$"):
        ImageCSVDataModule(str(csv_path), **SMALL)


def test_image_csv_errors(tmp_path):
    root = tmp_path / "d"
    csv_path = make_image_csv(root, per_cell=2)
    text = csv_path.read_text()
    csv_path.write_text(text.replace("path,label,bias", "file,label,bias"))
    with pytest.raises(DataError, match="missing: path"):
        ImageCSVDataModule(str(csv_path), **SMALL)
    csv_path.write_text(text.replace("images/bird_grass_0.jpg", "images/nowhere.jpg"))
    with pytest.raises(DataNotFoundError, match="nowhere.jpg"):
        ImageCSVDataModule(str(csv_path), **SMALL)
    header, *rows = text.splitlines()
    only_train_birds = [header] + [r + ",train" if "bird" in r else r + ",test" for r in rows]
    csv_path.write_text("\n".join([only_train_birds[0] + ",split", *only_train_birds[1:]]) + "\n")
    with pytest.raises(DataError, match="plane have no samples in the train split"):
        ImageCSVDataModule(str(csv_path), **SMALL)
    with pytest.raises(DataNotFoundError, match="no CSV file"):
        ImageCSVDataModule(str(tmp_path / "none.csv"), **SMALL)
    csv_path.write_text(text.replace("images/bird_grass_0.jpg,bird,", "images/bird_grass_0.jpg,,"))
    with pytest.raises(DataError, match=r"every row needs a path, label, bias; empty in line 2 "):
        ImageCSVDataModule(str(csv_path), **SMALL)
    csv_path.write_text("\n".join(text.splitlines()[:2]) + "\n")  # one row
    with pytest.raises(
        ConfigError, match=r"data.(val|test)_fraction=0.\d+ .*(fewer than one|no image)"
    ):
        ImageCSVDataModule(str(csv_path), **SMALL)
