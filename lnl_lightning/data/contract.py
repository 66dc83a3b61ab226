"""The one batch contract shared by every dataset and the LightningModule.

Every dataloader yields a dict with five tensors:

- ``image``: float images ``(N, 3, H, W)``.
- ``label``: the target class ``(N,)``, int64.
- ``bias_target``: what the bias head h is trained to predict, int64 with
  :data:`IGNORE_INDEX` where there is nothing to predict. Either a per-pixel
  colour-bin map ``(N, 3, h, w)`` (one class per RGB channel) or a per-image
  class ``(N,)``.
- ``bias_group``: one integer per image ``(N,)`` naming its bias attribute
  (colour class, dark/bright, age group), for the class x bias accuracy matrix.
- ``index``: each image's position in its split ``(N,)``, int64, so that a method can
  keep per-sample state (LfF's loss averages).

A datamodule also describes its bias with a :class:`BiasSpec`, so that the
module never has to know which dataset it is trained on, and gives the training
split's labels and bias groups by position (``train_label_groups()``, annotations
only, no image is read), for methods that need group sizes (GroupDRO) or per-class
statistics (LfF).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IMAGE = "image"
LABEL = "label"
BIAS_TARGET = "bias_target"
BIAS_GROUP = "bias_group"
INDEX = "index"

TARGET_KINDS = ("pixel", "image")
"""``BiasSpec.target_kind``: a per-pixel colour-bin map, or one bias class per image."""

IGNORE_INDEX = -100
"""Value of ``bias_target`` that the bias loss and bias accuracy skip (PyTorch's default)."""


@dataclass(frozen=True)
class BiasSpec:
    """What a dataset's labels and bias look like.

    Attributes:
        num_classes: number of label classes.
        num_bias_groups: number of values ``bias_group`` takes.
        num_bias_classes: number of classes of ``bias_target`` (per pixel or per image).
        aligned_cells: the ``(label, bias_group)`` cells where the bias agrees with
            the spurious correlation of the training set.
        conflicting_cells: the cells where it disagrees; None means every cell that
            is not aligned. Cells in neither set (e.g. a middle age group) count in
            ``acc`` and ``acc_unbiased`` only.
        class_names: optional display names of the label classes.
        group_names: optional display names of the bias groups.
        target_kind: what ``bias_target`` holds, so that a bias head that predicts
            something else is refused at start: "pixel" (a colour-bin map, ``(N, 3, h, w)``)
            or "image" (one class per image, ``(N,)``).
    """

    num_classes: int
    num_bias_groups: int
    num_bias_classes: int
    aligned_cells: tuple[tuple[int, int], ...]
    conflicting_cells: tuple[tuple[int, int], ...] | None = None
    class_names: tuple[str, ...] | None = None
    group_names: tuple[str, ...] | None = None
    target_kind: str = "image"

    def _mask(self, cells: tuple[tuple[int, int], ...]) -> torch.Tensor:
        mask = torch.zeros(self.num_classes, self.num_bias_groups, dtype=torch.bool)
        for label, group in cells:
            mask[label, group] = True
        return mask

    def aligned_mask(self) -> torch.Tensor:
        """Boolean ``(num_classes, num_bias_groups)`` matrix, True on aligned cells."""
        return self._mask(self.aligned_cells)

    def conflicting_mask(self) -> torch.Tensor:
        """Boolean ``(num_classes, num_bias_groups)`` matrix, True on conflicting cells."""
        if self.conflicting_cells is None:
            return ~self.aligned_mask()
        return self._mask(self.conflicting_cells)


def to_grey(images: torch.Tensor) -> torch.Tensor:
    """Float RGB images ``(..., 3, H, W)`` as luminance (ITU-R 601, as torchvision's
    ``rgb_to_grayscale``) repeated on the three channels: the same network sees no colour."""
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (images * weights).sum(-3, keepdim=True).expand_as(images).contiguous()


def color_bin_target(
    images: torch.Tensor, size: int | tuple[int, int], num_bins: int = 8
) -> torch.Tensor:
    """Per-pixel colour classes of uint8 RGB images, the official LNL colour target.

    The images are resized to ``size`` with nearest-neighbour sampling (the pixel
    centres, as PIL's ``NEAREST`` does), each channel value is quantised into
    ``num_bins`` equal bins, and every channel value that is 0 is set to
    :data:`IGNORE_INDEX` on its own (the official mask: a black background pixel is
    ignored on all three channels, a pure red stroke on its green and blue ones).

    Args:
        images: uint8 tensor ``(N, 3, H, W)`` with values in [0, 255].
        size: output spatial size, an int or ``(h, w)``.
        num_bins: bins per channel; 256 must be divisible by it.

    Returns:
        int64 tensor ``(N, 3, h, w)`` with values in ``[0, num_bins)`` or IGNORE_INDEX.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if num_bins < 1 or 256 % num_bins:
        raise ValueError(f"num_bins must divide 256, got {num_bins}")
    out_h, out_w = (size, size) if isinstance(size, int) else size
    in_h, in_w = images.shape[-2:]
    # nearest-exact: output pixel i samples input pixel floor((i + 0.5) * in / out)
    rows = ((torch.arange(out_h, device=images.device) + 0.5) * in_h / out_h).long()
    cols = ((torch.arange(out_w, device=images.device) + 0.5) * in_w / out_w).long()
    rows, cols = rows.clamp_(max=in_h - 1), cols.clamp_(max=in_w - 1)
    small = images.index_select(2, rows).index_select(3, cols)
    target = (small // (256 // num_bins)).long()
    return target.masked_fill(small == 0, IGNORE_INDEX)
