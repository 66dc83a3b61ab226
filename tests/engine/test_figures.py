"""Figures show the data as it is: sample grids keep each image's brightness, small matrices fit."""

from __future__ import annotations

import torch
from PIL import Image

from lnl_lightning.data.image_files import IMAGENET_MEAN, IMAGENET_STD, ImageSplitsDataModule
from lnl_lightning.engine.figures import as_displayed, save_group_matrix


def normalised(value: float) -> torch.Tensor:
    """A flat grey image of ``value`` in [0, 1], normalised as the image datasets normalise."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    image = torch.full((3, 8, 8), value)
    image[:, 0, 0] = value + 0.05  # a little texture, as a photo has
    return (image - mean) / std


def test_a_dark_image_stays_dark_and_a_bright_one_bright():
    batch = torch.stack([normalised(0.15), normalised(0.85)])
    shown = as_displayed(batch, ImageSplitsDataModule.normalization)
    dark, bright = shown[0].mean().item(), shown[1].mean().item()
    assert abs(dark - 0.15) < 0.01 and abs(bright - 0.85) < 0.01  # as the data has them
    # not stretched image by image to the full range (that showed dark cats as bright as dogs)
    assert shown[0].max().item() < 0.25


def test_images_given_in_0_1_are_shown_unchanged():
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(as_displayed(images, None), images)


def test_a_two_by_two_matrix_has_room_for_its_title_and_colour_bar(tmp_path):
    correct, total = torch.tensor([[5, 1], [2, 6]]), torch.tensor([[6, 4], [4, 6]])
    _, png = save_group_matrix(correct, total, tmp_path, "m", title="test accuracy per cell")
    width, height = Image.open(png).size
    assert width >= 400 and height >= 300
