"""The resumable training order: a function of (seed, epoch), resumed after the batches served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from lnl_lightning.data.contract import IMAGE
from lnl_lightning.data.image_files import ImageFileDataset, ImageRecords
from lnl_lightning.data.sampling import ResumableLoader, ResumableSampler


def epoch_batches(loader: ResumableLoader, epoch: int, stop: int | None = None) -> list:
    loader.sampler.set_epoch(epoch)
    batches = []
    for batch in loader:
        batches.append(batch[0].tolist())
        if len(batches) == stop:
            break
    return batches


def test_order_depends_on_seed_and_epoch_only():
    data = TensorDataset(torch.arange(50))
    first = epoch_batches(ResumableLoader(data, batch_size=8), 3)
    assert first == epoch_batches(ResumableLoader(data, batch_size=8), 3)
    assert first != epoch_batches(ResumableLoader(data, batch_size=8), 4)
    assert sorted(sum(first, [])) == list(range(50))  # a permutation


def test_a_loaded_state_continues_after_the_batches_served():
    data = TensorDataset(torch.arange(50))
    full = epoch_batches(ResumableLoader(data, batch_size=8), 2)
    interrupted = ResumableLoader(data, batch_size=8)
    assert epoch_batches(interrupted, 2, stop=3) == full[:3]
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches": 3}

    resumed = ResumableLoader(data, batch_size=8)
    resumed.load_state_dict(state)
    assert [b[0].tolist() for b in resumed] == full[3:]
    assert resumed.state_dict() == {"epoch": 2, "batches": len(full)}
    # the skip applies once: the next pass over the epoch is whole again
    assert [b[0].tolist() for b in resumed] == full


def test_a_state_saved_at_the_end_of_an_epoch_starts_the_next_whole():
    data = TensorDataset(torch.arange(20))
    loader = ResumableLoader(data, batch_size=8)
    epoch_batches(loader, 0)
    resumed = ResumableLoader(data, batch_size=8)
    resumed.load_state_dict(loader.state_dict())
    assert epoch_batches(resumed, 1) == epoch_batches(ResumableLoader(data, batch_size=8), 1)


def test_seeds_for_augmentation_are_fixed_per_image_and_epoch():
    data = TensorDataset(torch.arange(30))
    sampler = ResumableSampler(data, seed=5, with_seeds=True)
    pairs = dict(iter(sampler))
    assert sorted(pairs) == list(range(30))
    assert pairs == dict(iter(ResumableSampler(data, seed=5, with_seeds=True)))
    sampler.set_epoch(1)
    assert set(pairs.values()).isdisjoint(dict(iter(sampler)).values())


def one_image_training_set(tmp_path: Path) -> ImageFileDataset:
    path = tmp_path / "image.png"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    records = ImageRecords([path], np.array([0]), np.array([0]), np.array([0]))
    return ImageFileDataset(records, train=True, image_size=32)


def test_an_image_seed_fixes_its_augmentation_whatever_ran_before(tmp_path):
    dataset = one_image_training_set(tmp_path)

    first = dataset[(0, 123)][IMAGE]
    torch.rand(100)  # the global generator moves on; the image must not change
    assert torch.equal(dataset[(0, 123)][IMAGE], first)
    assert not torch.equal(dataset[(0, 124)][IMAGE], first)


def test_without_a_seed_each_image_draws_its_own_augmentation(tmp_path):
    dataset = one_image_training_set(tmp_path)
    assert not torch.equal(dataset[0][IMAGE], dataset[0][IMAGE])  # the global generator moves on
