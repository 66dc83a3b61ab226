"""Checkpoints are refused by name when damaged or of another run, and written atomically."""

from __future__ import annotations

import struct
import zipfile

import pytest
import torch
from torch.utils.data import DataLoader

from lnl_lightning.data.colored_mnist import pass_batch
from lnl_lightning.data.contract import BiasSpec
from lnl_lightning.errors import ConfigError
from lnl_lightning.methods.lnl import LNLModule
from lnl_lightning.nets import builders
from lnl_lightning.records.checkpoints import (
    AtomicCheckpointIO,
    check_fits,
    check_networks,
    load_checkpoint,
)

from ..helpers.fixtures import fit_on_batches, quiet_trainer, random_batch

SPEC = BiasSpec(
    num_classes=10,
    num_bias_groups=10,
    num_bias_classes=8,
    aligned_cells=tuple((c, c) for c in range(10)),
)


def lnl(init_from: str | None = None, **kwargs) -> LNLModule:
    return LNLModule(
        builders.mnist_feature_extractor(),
        builders.mnist_label_head(),
        builders.PixelColorHead(),
        SPEC,
        init_from=init_from,
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[LNLModule, object]:
    """An LNL module after two steps, and the checkpoint Lightning wrote of it."""
    folder = tmp_path_factory.mktemp("ckpt")
    model = lnl()
    trainer = fit_on_batches(model, [random_batch(seed=0), random_batch(seed=1)], max_steps=2)
    trainer.save_checkpoint(folder / "last.ckpt")
    return model, folder / "last.ckpt"


def flip_a_byte_of_the_weights(source, target) -> None:
    """Flip one byte inside a tensor record's data, leaving the zip index intact."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)  # a weight tensor
    name_length, extra_length = struct.unpack_from("<HH", data, record.header_offset + 26)
    start = record.header_offset + 30 + name_length + extra_length
    data[start + record.file_size // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def test_a_checkpoint_with_flipped_weight_bytes_is_refused_naming_the_record(trained, tmp_path):
    _, good = trained
    broken = tmp_path / "flipped.ckpt"
    flip_a_byte_of_the_weights(good, broken)
    torch.load(broken, map_location="cpu", weights_only=True)  # torch alone loads it
    with pytest.raises(ConfigError, match=r"model.init_from: .*flipped.ckpt .*fails its CRC"):
        load_checkpoint(broken, "model.init_from")
    with pytest.raises(ConfigError, match="model.init_from: .*fails its CRC"):
        lnl(init_from=str(broken))
    assert load_checkpoint(good, "ckpt_path")["state_dict"]  # the intact one loads


def test_a_checkpoint_without_weights_is_refused(tmp_path):
    empty = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {}}, empty)
    with pytest.raises(ConfigError, match=r"ckpt_path: .*empty.ckpt holds no weights"):
        load_checkpoint(empty, "ckpt_path")


def test_a_weights_only_checkpoint_cannot_resume_but_can_be_evaluated(trained, tmp_path):
    model, _ = trained
    weights = {"state_dict": model.state_dict(), "hyper_parameters": {"method": "lnl"}}
    with pytest.raises(ConfigError, match=r"holds weights only .*model.init_from="):
        check_fits(weights, "lnl", tmp_path / "w.ckpt", "ckpt_path", resume=True)
    check_fits(weights, "lnl", tmp_path / "w.ckpt", "ckpt_path", resume=False)


def test_a_checkpoint_of_another_method_is_refused_by_name(trained):
    _, path = trained
    checkpoint = load_checkpoint(path, "ckpt_path")
    check_fits(checkpoint, "lnl", path, "ckpt_path", resume=True)
    with pytest.raises(
        ConfigError, match="written by a model=lnl run, but this config is model=baseline"
    ):
        check_fits(checkpoint, "baseline", path, "ckpt_path", resume=True)


def test_other_networks_are_named_with_their_shapes(trained):
    model, path = trained
    checkpoint = load_checkpoint(path, "ckpt_path")
    check_networks(checkpoint, model, path, "ckpt_path", "model=lnl")
    wider = LNLModule(
        builders.mnist_feature_extractor(),
        builders.mnist_label_head(num_classes=7),
        builders.PixelColorHead(),
        SPEC,
    )
    with pytest.raises(ConfigError, match=r"other shapes: label_head\.\S+ \(10,") as err:
        check_networks(checkpoint, wider, path, "ckpt_path", "model=lnl")
    assert "give the experiment/model/net it was trained with" in str(err.value)
    renamed = {"state_dict": {"encoder." + k: v for k, v in checkpoint["state_dict"].items()}}
    with pytest.raises(ConfigError, match="missing: feature_extractor.0.weight"):
        check_networks(renamed, model, path, "ckpt_path", "model=lnl")


def test_warm_start_from_another_net_names_the_mismatch_not_a_raw_traceback(trained, tmp_path):
    model, _ = trained
    state = dict(model.state_dict())
    state["label_head.6.weight"] = torch.zeros(3, 3)
    torch.save({"state_dict": state}, tmp_path / "other.ckpt")
    with pytest.raises(ConfigError, match=r"model.init_from: .*another label_head .*6.weight"):
        lnl(init_from=str(tmp_path / "other.ckpt"))


def test_a_failed_checkpoint_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def disk_full(checkpoint, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # the writer gives torch.save an open file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        writer.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path, "ckpt_path")["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_a_checkpoint_of_the_earlier_layout_loads_resumes_and_keeps_its_sums(trained, tmp_path):
    """Checkpoints written before the engine kept per-member sums (torchmetrics running
    means, one non-finite marker per member) still evaluate, warm-start and resume."""
    _, path = trained
    checkpoint = torch.load(path, weights_only=True)
    state = checkpoint["state_dict"]
    label, bias, correct, images = state.pop("train_sums")[0].float()
    for key in ("first_bad", "steps_done"):
        del state[key]
    for name, total in (
        ("train_label_loss", label),
        ("train_bias_loss", bias),
        ("train_acc", correct),
    ):
        state[f"{name}.mean_value"], state[f"{name}.weight"] = total, images
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    upgraded = load_checkpoint(old, "ckpt_path")
    fresh = lnl()
    check_networks(upgraded, fresh, old, "ckpt_path", "model=lnl")
    fresh.load_state_dict(upgraded["state_dict"])  # strict: every key in today's layout
    sums = upgraded["state_dict"]["train_sums"]
    assert sums.tolist() == [[float(label), float(bias), float(correct), float(images)]]
    assert images > 0 and upgraded["state_dict"]["first_bad"].tolist() == [[-1, -1]]
    resumed = lnl()
    batches = [random_batch(seed=0), random_batch(seed=1)]
    trainer = quiet_trainer(max_steps=9)
    trainer.fit(resumed, DataLoader(batches, batch_size=None, collate_fn=pass_batch), ckpt_path=old)
    assert int(resumed.steps_done) > 0  # Lightning's own loading upgraded it too
