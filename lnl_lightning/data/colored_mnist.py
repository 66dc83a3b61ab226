"""Colored MNIST with the sigma^2 protocol of Learning Not to Learn (Kim et al., CVPR 2019).

Protocol (``data.source=generate``, built from MNIST; :mod:`.mnist_colors` colours it):

- Ten mean colours, one per digit class (``data.palette``; default the paper's supplementary
  colours, ``rebias`` the ReBias colour map this repository used first).
- Train: every image gets one colour drawn from N(mean colour of its digit, sigma^2 I) in
  [0, 1] units, each channel drawn again until inside (0, 1) (``color_noise="clip"``: clipped).
  Binarised strokes: a pixel whose MNIST grey is > 128 gets the colour as ``int(x * 255)``, the
  rest is black (``stroke="intensity"``: pixel = round(grey x colour)). ``color_var`` is
  sigma^2; the paper's grid is 0.020 ... 0.050 (smaller sigma^2 = stronger bias).
- Validation: a held-out part of the training set (``val_fraction``), disjoint from test.
  ``val_colors="train"``: coloured like training (biased; metrics ``val/...``).
  ``"random"``: coloured like test, a palette entry drawn uniformly at random and independent
  of the digit, with the training noise (unbiased; ``val_random/...``). ``"both"``: the same
  held-out digits both ways, two validation sets. Model selection uses only these splits.
- Test: the 10k MNIST test images; each gets a colour class drawn uniformly at random,
  independent of the digit, then the same noise. Accuracy on it is unbiased accuracy.

``data.source=arrays`` reads the authors' pre-generated arrays instead (:mod:`.authors_arrays`),
with the same splits, batches and bias groups.

``protocol="rebias"`` is the protocol of ReBias (Bahng et al., ICML 2020) instead: the digit
is white and the *background* is coloured with a palette colour (no noise); a training
image gets its digit's colour with probability ``rho`` and one of the nine others
otherwise; test colours are uniform. There every pixel carries the colour target.

The colours are generated once, deterministically from ``seed``, into in-memory uint8
tensors. ``bias_target`` is the official per-pixel colour map (14x14, 8 bins per
channel, background ignored) and ``bias_group`` the colour class of the image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lnl_lightning.data.authors_arrays import array_splits, find_arrays, read_arrays
from lnl_lightning.data.checks import (
    check_color_bins,
    check_loader_settings,
    check_writable,
    held_out_count,
)
from lnl_lightning.data.contract import (
    BIAS_GROUP,
    BIAS_TARGET,
    IMAGE,
    INDEX,
    LABEL,
    BiasSpec,
    color_bin_target,
    to_grey,
)
from lnl_lightning.data.device_batches import DeviceBatches
from lnl_lightning.data.mnist_colors import (
    NUM_DIGITS,
    ColorNoise,
    Stroke,
    check_palette,
    colorize,
    colorize_background,
    palette_name,
    rebias_color_classes,
)
from lnl_lightning.data.mnist_files import MNIST_FILES, load_mnist
from lnl_lightning.data.sampling import ResumableLoader, run_seed
from lnl_lightning.errors import ConfigError
from lnl_lightning.records.files import write_torch_atomic
from lnl_lightning.schemas import check_choice
from lnl_lightning.selection import VAL_NAMES

log = logging.getLogger(__name__)

Protocol = Literal["variance", "rebias"]
Source = Literal["generate", "arrays"]
ValColors = Literal["train", "random", "both"]  # the splits of each: selection.VAL_NAMES


class ColoredImages(Dataset):
    """In-memory coloured images that return whole batches (``__getitems__``).

    Indexing a list of positions gathers the batch with one tensor operation, so a
    batch costs no per-sample Python work; :func:`pass_batch` is its collate_fn.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor,
        target_size: int,
        num_bins: int,
        grayscale: bool = False,
    ) -> None:
        self.images, self.labels, self.groups = images, labels, groups
        self.target_size, self.num_bins = target_size, num_bins
        self.grayscale = grayscale

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        image = images.float().div_(255.0)
        return {
            IMAGE: to_grey(image) if self.grayscale else image,
            LABEL: self.labels[index],
            BIAS_TARGET: color_bin_target(images, self.target_size, self.num_bins),  # the colour
            BIAS_GROUP: self.groups[index],
            INDEX: index,
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def pass_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """collate_fn for datasets whose ``__getitems__`` already returns a batch."""
    return batch


class ColoredMNISTDataModule(pl.LightningDataModule):
    """Colored MNIST (Kim et al. 2019) in the batch contract of :mod:`lnl_lightning.data.contract`.

    Args:
        data_dir: folder that holds ``MNIST/raw/`` (torchvision's layout).
        color_var: sigma^2 of the colour noise, in (0, 1] ("variance" protocol).
        source: "generate" (colour MNIST here) or "arrays" (read the authors'
            ``mnist_10color_jitter_var_<sigma^2>.npy`` from ``arrays_dir``).
        arrays_dir: folder of the authors' arrays (``source="arrays"``).
        protocol: "variance" (Kim et al.: coloured strokes, sigma^2) or "rebias"
            (Bahng et al.: coloured background, a share ``rho`` of aligned training images).
        rho: share of bias-aligned training images in the "rebias" protocol.
        batch_size: images per batch (per process).
        val_fraction: share of the training images held out for validation, in [0, 1).
        val_colors: how the held-out images are coloured: "train" (like training: biased,
            ``val/``), "random" (like test: unbiased, ``val_random/``) or "both" (each
            held-out digit both ways: ``val/`` and ``val_random/``).
        seed: fixes colours and the train/val split, bit for bit.
        palette: "supplement", "rebias" or 10 RGB colours in [0, 255].
        color_noise: "resample" (a colour channel drawn outside (0, 1) is drawn again: a
            truncated normal) or "clip" (it is clipped to [0, 1]).
        stroke: "binary" (grey > 128 coloured, the rest black) or "intensity" (grey x colour).
        color_bins: bins per RGB channel of the per-pixel bias target.
        target_size: side of the bias target map (14, the official net's feature map).
        num_workers: DataLoader workers (0 is fastest for in-memory data).
        download: let torchvision download MNIST when it is missing.
        cache: also store the coloured tensors in ``data_dir/colored_mnist_cache``.
        test_each_epoch: also evaluate the test split after every training epoch (as a
            second validation loader), for learning curves; validation alone selects models.
        on_device: keep the images on the training device and build each batch there
            (:class:`~.device_batches.DeviceBatches`): same batches, same order, no host
            work per step. One process only.
        grayscale: the network sees each image as grey (its luminance on the three
            channels): the "Gray" oracle of the paper's figure, with no colour to learn. The
            bias target (h's colour bins) is still the image's colour. With the arrays, the
            test split shows their ``test_gray`` images.
    """

    def __init__(
        self,
        data_dir: str = "data",
        color_var: float = 0.02,
        source: Source = "generate",
        arrays_dir: str | None = None,
        protocol: Protocol = "variance",
        rho: float = 0.99,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        palette: Any = "supplement",
        color_noise: ColorNoise = "resample",
        stroke: Stroke = "binary",
        color_bins: int = 8,
        target_size: int = 14,
        num_workers: int = 0,
        download: bool = True,
        cache: bool = False,
        test_each_epoch: bool = True,
        on_device: bool = False,
        grayscale: bool = False,
        val_colors: ValColors = "train",
    ) -> None:
        super().__init__()
        if not isinstance(color_var, (int, float)) or not 0.0 < color_var <= 1.0:
            raise ConfigError(
                f"data.color_var must be in (0, 1] (sigma^2 in [0,1] colour units), got {color_var}"
            )
        source = check_choice("data.source", source, Source)
        protocol = check_choice("data.protocol", protocol, Protocol)
        color_noise = check_choice("data.color_noise", color_noise, ColorNoise)
        stroke = check_choice("data.stroke", stroke, Stroke)
        val_colors = check_choice("data.val_colors", val_colors, ValColors)
        if source == "arrays" and val_colors != "train":
            raise ConfigError(
                f"data.val_colors={val_colors} colours held-out MNIST digits afresh, but the "
                f"authors' arrays hold their training images coloured already: use "
                f"data.source=generate, or data.val_colors=train"
            )
        if not isinstance(rho, (int, float)) or not 0.0 <= rho <= 1.0:
            raise ConfigError(
                f"data.rho must be in [0, 1] (share of bias-aligned images), got {rho}"
            )
        check_loader_settings(batch_size, val_fraction, num_workers)
        check_color_bins(color_bins)
        if not isinstance(target_size, int) or not 1 <= target_size <= 28 or 28 % target_size:
            raise ConfigError(
                f"data.target_size must divide 28 (the image side), e.g. 14, the official "
                f"network's feature map, got {target_size!r}"
            )
        self.palette = check_palette(palette)
        self.source = source
        self.arrays_dir = self._check_arrays_dir(arrays_dir, protocol)
        self.data_dir = Path(data_dir).expanduser().resolve()
        if source == "generate":
            if self.data_dir.is_file():
                raise ConfigError(
                    f"data.data_dir must be a folder holding MNIST/raw/, but {self.data_dir} "
                    f"is a file"
                )
            raw = self.data_dir / "MNIST" / "raw"
            if download and not all((raw / name).is_file() for name in MNIST_FILES):
                check_writable(raw, "data.data_dir", "unpacking or downloading MNIST")
        self.color_var = float(color_var)
        self.protocol, self.rho = protocol, float(rho)
        self.color_noise, self.stroke = color_noise, stroke
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.color_bins = color_bins
        self.target_size = target_size
        self.num_workers = num_workers
        self.download = download
        self.cache = cache
        self.test_each_epoch = test_each_epoch
        self.on_device = on_device
        self.grayscale = bool(grayscale)
        self.val_colors = val_colors
        self.splits: dict[str, ColoredImages] = {}
        self.val_names, self.test_names = VAL_NAMES[val_colors], ("test",)
        self.bias_spec = BiasSpec(
            num_classes=NUM_DIGITS,
            num_bias_groups=NUM_DIGITS,
            num_bias_classes=color_bins,
            aligned_cells=tuple((d, d) for d in range(NUM_DIGITS)),
            class_names=tuple(str(d) for d in range(NUM_DIGITS)),
            group_names=tuple(f"color {c}" for c in range(NUM_DIGITS)),
            target_kind="pixel",
        )

    def _check_arrays_dir(self, arrays_dir: str | None, protocol: str) -> Path | None:
        if self.source != "arrays":
            return None
        if protocol != "variance":
            raise ConfigError(
                f"data.source=arrays holds the sigma^2 protocol's data: use "
                f"data.protocol=variance, got '{protocol}'"
            )
        if not arrays_dir:
            raise ConfigError(
                "data.source=arrays needs data.arrays_dir: the folder of the authors' "
                "mnist_10color_jitter_var_<sigma^2>.npy files"
            )
        folder = Path(arrays_dir).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"data.arrays_dir must be a folder, got {folder} (not a folder)")
        return folder

    def prepare_data(self) -> None:
        if self.arrays_dir is not None:
            find_arrays(self.arrays_dir, self.color_var)
        else:
            load_mnist(self.data_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        tensors = self._load_cache() if self.cache else None
        if tensors is None:
            tensors = self.read_arrays() if self.arrays_dir is not None else self.generate()
            if self.cache:
                self._save_cache(tensors)
        for name, (images, labels, groups) in tensors.items():
            self.splits[name] = ColoredImages(
                images, labels, groups, self.target_size, self.color_bins, self.grayscale
            )

    def train_label_groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and bias groups of the training split, by position (see the contract)."""
        self.setup("fit")
        train = self.splits["train"]
        return train.labels, train.groups

    def _split(self, num_train: int, split_seed: np.random.SeedSequence) -> tuple[Any, Any]:
        """Training and validation positions among the ``num_train`` training images."""
        order = torch.from_numpy(np.random.default_rng(split_seed).permutation(num_train))
        num_val = held_out_count(self.val_fraction, len(order))
        return order[num_val:], order[:num_val]

    def read_arrays(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The authors' arrays of ``color_var``, split as :meth:`generate` splits MNIST."""
        path = find_arrays(self.arrays_dir, self.color_var)
        arrays = read_arrays(path)
        fit_index, val_index = self._split(len(arrays["train_label"]), self._seeds()[0])
        return array_splits(arrays, fit_index, val_index, self.grayscale, path)

    def generate(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Colour MNIST: ``{split: (uint8 images, labels, colour classes)}`` for train/val/test."""
        train, test = load_mnist(self.data_dir, download=False)
        fit_index, val_index = self._split(len(train.targets), self._seeds()[0])
        train_images, train_groups, test_images, test_groups = self.color(train, test)
        splits = {
            "train": (train_images[fit_index], train.targets[fit_index], train_groups[fit_index]),
            "val": (train_images[val_index], train.targets[val_index], train_groups[val_index]),
            "test": (test_images, test.targets.clone(), test_groups),
        }
        if "val_random" in self.val_names:
            splits["val_random"] = self.color_at_random(
                train.data[val_index], train.targets[val_index], self._seeds()[3]
            )
        if "val" not in self.val_names:
            del splits["val"]
        return splits

    def _seeds(self) -> list[np.random.SeedSequence]:
        """From ``data.seed``: the split's, the training colours', the test colours' and the
        randomly coloured validation's seeds (the first three as before the fourth existed)."""
        return np.random.SeedSequence(self.seed).spawn(4)

    def color_at_random(
        self, digits: torch.Tensor, labels: torch.Tensor, seed: np.random.SeedSequence
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Held-out training digits coloured as test is: each a colour class drawn uniformly
        at random, independent of its digit, then the training noise (``val_random``)."""
        rng = np.random.default_rng(seed)
        groups = torch.from_numpy(rng.integers(0, NUM_DIGITS, len(labels)))
        if self.protocol == "rebias":
            images = colorize_background(digits, groups, self.palette)
        else:
            style = {"noise": self.color_noise, "stroke": self.stroke}
            images = colorize(digits, groups, self.palette, self.color_var, rng, **style)
        return images, labels.clone(), groups

    def color(self, train: Any, test: Any) -> tuple[torch.Tensor, ...]:
        """All of MNIST's training and test images coloured, in MNIST's order: training images
        and colour classes, test images and colour classes."""
        _, train_seed, test_seed, _ = self._seeds()
        # One colour draw for all 60k training images, so the split does not change colours.
        train_rng, test_rng = np.random.default_rng(train_seed), np.random.default_rng(test_seed)
        test_groups = torch.from_numpy(test_rng.integers(0, NUM_DIGITS, len(test.targets)))
        if self.protocol == "rebias":
            train_groups = rebias_color_classes(train.targets, self.rho, train_rng)
            train_images = colorize_background(train.data, train_groups, self.palette)
            test_images = colorize_background(test.data, test_groups, self.palette)
        else:
            train_groups = train.targets
            style = {"noise": self.color_noise, "stroke": self.stroke}
            train_images = colorize(
                train.data, train_groups, self.palette, self.color_var, train_rng, **style
            )
            test_images = colorize(
                test.data, test_groups, self.palette, self.color_var, test_rng, **style
            )
        return train_images, train_groups, test_images, test_groups

    def _cache_file(self) -> Path:
        split = f"val{self.val_fraction:.3f}_seed{self.seed}"
        if self.val_colors != "train":
            split += f"_val{self.val_colors}"
        if self.arrays_dir is not None:
            key = f"arrays_var{self.color_var:.4f}_{split}{'_grey' if self.grayscale else ''}"
        elif self.protocol == "rebias":
            key = f"rho{self.rho:.4f}_{split}_pal{palette_name(self.palette.tolist())}"
        else:
            style = f"{self.color_noise}_{self.stroke}"
            key = (
                f"var{self.color_var:.4f}_{style}_{split}_pal{palette_name(self.palette.tolist())}"
            )
        return self.data_dir / "colored_mnist_cache" / f"{key}.pt"

    def _load_cache(self) -> dict | None:
        """The cached tensors; None (they are built again) if there are none or they do not
        read, e.g. a file cut short by a full disk or a copy."""
        path = self._cache_file()
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt, not fatal
            log.warning("Data cache %s does not read (%s): building the data again", path, err)
            return None

    def _save_cache(self, tensors: dict) -> None:
        write_torch_atomic(self._cache_file(), tensors)

    def _loader(self, split: str) -> DataLoader | DeviceBatches:
        if self.on_device:
            return self._device_loader(split)
        loader = ResumableLoader if split == "train" else DataLoader  # train: shuffled
        return loader(
            self.splits[split],
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=pass_batch,
            persistent_workers=self.num_workers > 0,
        )

    def _device_loader(self, split: str) -> DeviceBatches:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            raise ConfigError(
                "data.on_device=true builds every batch in one process; with several processes "
                "(DDP) use data.on_device=false"
            )
        data = self.splits[split]
        loader = DeviceBatches(
            data.images[None],
            data.labels[None],
            data.groups[None],
            member_data=[0],
            batch_size=self.batch_size,
            seeds=[run_seed()] if split == "train" else None,
            target_size=self.target_size,
            num_bins=self.color_bins,
            packed=False,
            grayscale=self.grayscale,
        )
        return loader.to(trainer.strategy.root_device) if trainer is not None else loader

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        loaders = [self._loader(name) for name in self.val_names]
        if self.test_each_epoch:
            loaders.append(self._loader("test"))
        return loaders if len(loaders) > 1 else loaders[0]

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
