"""The data of a pack of runs: each member's Colored MNIST, side by side on the device.

Members that differ in sigma^2 (or data seed) read different datasets; members with the same
data share one copy. Every member trains on its own data in its own run seed's order, the
order its own run would see (:class:`~.device_batches.DeviceBatches`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch

from lnl_lightning.data.colored_mnist import ColoredMNISTDataModule
from lnl_lightning.data.device_batches import DeviceBatches
from lnl_lightning.errors import ConfigError


class PackedDataModule(pl.LightningDataModule):
    """Batches for K packed members from their own (Colored MNIST) datamodules.

    Args:
        datamodules: the distinct datasets the members read.
        member_data: for each member, the index of its datamodule.
        seeds: each member's run seed (its training order).
    """

    def __init__(
        self,
        datamodules: Sequence[ColoredMNISTDataModule],
        member_data: Sequence[int],
        seeds: Sequence[int],
    ) -> None:
        super().__init__()
        for datamodule in datamodules:
            if not isinstance(datamodule, ColoredMNISTDataModule):
                raise ConfigError(
                    f"packed runs need in-memory Colored MNIST data (data=colored_mnist), "
                    f"got {type(datamodule).__name__}"
                )
        first = datamodules[0]
        shared = ("batch_size", "val_fraction", "val_colors", "test_each_epoch", "color_bins")
        for name in (*shared, "target_size"):
            values = {getattr(d, name) for d in datamodules}
            if len(values) > 1:
                raise ConfigError(f"the members of a pack must share data.{name}, got {values}")
        self.datamodules = list(datamodules)
        self.member_data = list(member_data)
        self.seeds = list(seeds)
        self.bias_spec = first.bias_spec
        self.test_names, self.val_names = first.test_names, first.val_names
        self.batch_size = first.batch_size
        self.test_each_epoch = first.test_each_epoch
        self._stacked: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def prepare_data(self) -> None:
        for datamodule in self.datamodules:
            datamodule.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self._stacked:
            return
        for datamodule in self.datamodules:
            datamodule.setup(stage)
        for split in self.datamodules[0].splits:
            parts = [d.splits[split] for d in self.datamodules]
            self._stacked[split] = (
                torch.stack([p.images for p in parts]),
                torch.stack([p.labels for p in parts]),
                torch.stack([p.groups for p in parts]),
            )

    def _loader(self, split: str) -> DeviceBatches:
        if self.trainer is not None and self.trainer.world_size > 1:
            raise ConfigError("a pack trains in one process: use trainer.devices=1")
        first = self.datamodules[0]
        loader = DeviceBatches(
            *self._stacked[split],
            member_data=self.member_data,
            batch_size=self.batch_size,
            seeds=self.seeds if split == "train" else None,
            target_size=first.target_size,
            num_bins=first.color_bins,
            grayscale=first.grayscale,
        )
        return loader.to(self.trainer.strategy.root_device) if self.trainer else loader

    def train_dataloader(self) -> DeviceBatches:
        return self._loader("train")

    def val_dataloader(self) -> DeviceBatches | list[DeviceBatches]:
        loaders = [self._loader(name) for name in self.val_names]
        if self.test_each_epoch:
            loaders.append(self._loader("test"))
        return loaders if len(loaders) > 1 else loaders[0]

    def test_dataloader(self) -> DeviceBatches:
        return self._loader("test")
