"""See Colored MNIST's data: the authors' arrays or generator settings side by side, per sigma^2.

``python -m lnl_lightning.data.inspect [--source generate] [--source arrays:DIR]
[--source generate:palette=rebias,stroke=intensity,color_noise=clip] [--color-vars 0.02 0.05]
[--out DIR] [--write-palette FILE]``

For each source and sigma^2, on the 60k training images (and the 10k test images where said):
the per-digit mean stroke colour and per-channel std, the share of stroke channel values at 0
and at 255, the distinct stroke colours per image, whether the stroke mask is exactly MNIST
grey > 128, the colour cue (how often the nearest per-digit mean colour names the digit, means
from one half of the training images, scored on the other half), and whether test colours
depend on the digit (the cue on the test images, and a chi-squared test of digit x nearest
mean). ``--out`` also writes the tables as ``inspect.md`` and a sample grid per source.
``--write-palette`` turns the first arrays source's per-digit means into a ``data.palette``
file: the mean colours that, drawn with the generator's noise at that sigma^2, give those means.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.stats import chi2_contingency, truncnorm

from lnl_lightning.data.authors_arrays import (
    channels_first,
    digit_means,
    find_arrays,
    read_arrays,
    stroke_colors,
)
from lnl_lightning.data.colored_mnist import ColoredMNISTDataModule
from lnl_lightning.data.mnist_colors import NUM_DIGITS, STROKE_THRESHOLD, describe_data
from lnl_lightning.data.mnist_files import load_mnist
from lnl_lightning.records.files import write_text_atomic

GENERATOR_KEYS = ("palette", "stroke", "color_noise")
DEFAULT_SOURCES = ("generate", "generate:palette=rebias,stroke=intensity,color_noise=clip")


@dataclass
class Split:
    """uint8 ``(N, 3, 28, 28)`` images, digits, and MNIST's grey images when known."""

    images: torch.Tensor
    labels: torch.Tensor
    grey: torch.Tensor | None


@dataclass
class Source:
    """Where images come from: the authors' arrays in a folder, or the generator's settings."""

    arrays_dir: Path | None = None
    settings: dict[str, str] | None = None

    @classmethod
    def parse(cls, text: str) -> Source:
        kind, _, rest = text.partition(":")
        if kind == "arrays" and rest:
            return cls(arrays_dir=Path(rest).expanduser())
        if kind == "generate":
            pairs = [p.split("=", 1) for p in rest.split(",") if p]
            settings = {"palette": "supplement", "stroke": "binary", "color_noise": "resample"}
            for pair in pairs:
                if len(pair) != 2 or pair[0] not in GENERATOR_KEYS:
                    raise SystemExit(
                        f"--source {text}: expected key=value with keys {GENERATOR_KEYS}"
                    )
                settings[pair[0]] = pair[1]
            return cls(settings=settings)
        raise SystemExit(f"--source {text}: expected 'generate[:key=value,...]' or 'arrays:DIR'")

    @property
    def name(self) -> str:
        if self.arrays_dir is not None:
            return "arrays"
        return describe_data(self.settings)

    def splits(self, color_var: float, mnist: tuple | None, seed: int) -> dict[str, Split]:
        """The training and test images of this source at ``color_var``."""
        if self.arrays_dir is not None:
            arrays = read_arrays(find_arrays(self.arrays_dir, color_var))
            train_grey = mnist[0].data if mnist is not None else None  # MNIST's training order
            test_grey = torch.from_numpy(arrays["test_gray"])
            return {
                "train": Split(
                    channels_first(arrays, "train_image"), labels(arrays, "train"), train_grey
                ),
                "test": Split(
                    channels_first(arrays, "test_image"), labels(arrays, "test"), test_grey
                ),
            }
        if mnist is None:
            raise SystemExit(
                "error: generated data needs MNIST: give --data-dir (or LNL_DATA_DIR) the folder "
                "holding MNIST/raw/"
            )
        generator = ColoredMNISTDataModule(
            data_dir="unused", color_var=color_var, seed=seed, download=False, **self.settings
        )
        train, test = mnist
        train_images, _, test_images, _ = generator.color(train, test)
        return {
            "train": Split(train_images, train.targets, train.data),
            "test": Split(test_images, test.targets, test.data),
        }


def labels(arrays: dict[str, np.ndarray], split: str) -> torch.Tensor:
    return torch.from_numpy(arrays[f"{split}_label"].astype(np.int64))


def distinct_colors(images: torch.Tensor) -> torch.Tensor:
    """How many different RGB colours each image's non-black pixels have."""
    codes = images.long()
    codes = (codes[:, 0] * 65536 + codes[:, 1] * 256 + codes[:, 2]).flatten(1)
    codes = codes.masked_fill(codes == 0, -1).sort(1).values  # black (-1) first
    new = torch.ones_like(codes, dtype=torch.bool)
    new[:, 1:] = codes[:, 1:] != codes[:, :-1]
    return (new & (codes >= 0)).sum(1)


def inspect(splits: dict[str, Split]) -> dict[str, object]:
    """The numbers of one source at one sigma^2 (see the module docstring)."""
    train, test = splits["train"], splits["test"]
    colors = stroke_colors(train.images) * 255
    means = digit_means(colors, train.labels)
    stds = torch.stack([colors[train.labels == d].std(0) for d in range(NUM_DIGITS)])
    stroke = train.images.amax(1, keepdim=True) > 0
    values = train.images.permute(1, 0, 2, 3)[:, stroke[:, 0]]
    half = len(colors) // 2
    fit_means = digit_means(colors[:half], train.labels[:half])
    cue = (torch.cdist(colors[half:], fit_means).argmin(1) == train.labels[half:]).float().mean()
    test_nearest = torch.cdist(stroke_colors(test.images) * 255, means).argmin(1)
    table = torch.zeros(NUM_DIGITS, NUM_DIGITS)
    table.index_put_((test.labels, test_nearest), torch.ones(len(test.labels)), accumulate=True)
    counts = distinct_colors(train.images)
    masks = {
        name: (split.images.amax(1) > 0).eq(split.grey > STROKE_THRESHOLD).flatten(1).all(1)
        for name, split in splits.items()
        if split.grey is not None
    }
    return {
        "means": means,
        "stds": stds,
        "pooled_std": stds.pow(2).mean(0).sqrt(),
        "share_0": (values == 0).float().mean().item(),
        "share_255": (values == 255).float().mean().item(),
        "distinct": (counts.float().mean().item(), int(counts.max())),
        "mask": {name: mask.float().mean().item() for name, mask in masks.items()},
        "cue": cue.item(),
        "test_cue": (test_nearest == test.labels).float().mean().item(),
        "test_p": float(chi2_contingency(table.numpy() + 1e-9).pvalue),
    }


def palette_for(means: torch.Tensor, color_var: float) -> list[list[float]]:
    """Mean colours (0-255) that the generator (noise redrawn into (0, 1), bytes int(x * 255))
    turns into images whose stroke colours average ``means``: the truncated normal's mean
    inverted channel by channel."""
    std = math.sqrt(color_var)

    def byte_mean(mu: float) -> float:
        return 255 * truncnorm.mean(-mu / std, (1 - mu) / std, loc=mu, scale=std) - 0.5

    low, high = byte_mean(-3 * std), byte_mean(1 + 3 * std)
    palette = []
    for color in means.tolist():
        row = []
        for value in color:
            value = min(max(value, low + 1e-6), high - 1e-6)
            row.append(
                round(255 * brentq(lambda mu, v=value: byte_mean(mu) - v, -3 * std, 1 + 3 * std), 1)
            )
        palette.append([min(max(v, 0.0), 255.0) for v in row])
    return palette


def triple(values: torch.Tensor) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in values.tolist()) + ")"


def markdown(results: dict[tuple[str, float], dict]) -> list[str]:
    sources = sorted({s for s, _ in results}, key=[s for s, _ in results].index)
    lines = [
        "| source | σ² | within-digit std (r, g, b) | at 0 | at 255 "
        "| colours per image (mean, max) | mask = grey > 128 (train, test) | colour cue "
        "| test cue | test χ² p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (source, color_var), r in results.items():
        masks = ", ".join(
            f"{r['mask'][s]:.3f}" if s in r["mask"] else "–" for s in ("train", "test")
        )
        lines.append(
            f"| {source} | {color_var:g} | {triple(r['pooled_std'])} | {r['share_0']:.4f} | "
            f"{r['share_255']:.4f} | {r['distinct'][0]:.2f}, {r['distinct'][1]} | {masks} | "
            f"{r['cue']:.3f} | {r['test_cue']:.3f} | {r['test_p']:.2g} |"
        )
    for color_var in sorted({v for _, v in results}):
        lines += ["", f"Per-digit mean stroke colour ± std at σ² = {color_var:g} (0-255):", ""]
        lines += ["| digit | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
        for digit in range(NUM_DIGITS):
            found = [results[s, color_var] for s in sources]
            cells = [f"{triple(r['means'][digit])} ± {triple(r['stds'][digit])}" for r in found]
            lines.append(f"| {digit} | " + " | ".join(cells) + " |")
    return lines


def save_samples(splits: dict[str, Split], path: Path, per_digit: int = 8) -> None:
    """A grid: one row per digit of training images, then a row of test images."""
    from torchvision.utils import save_image

    train, test = splits["train"], splits["test"]
    rows = [train.images[train.labels == d][:per_digit] for d in range(NUM_DIGITS)]
    rows.append(test.images[:per_digit])
    grid = torch.cat(rows).float() / 255
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path, nrow=per_digit, padding=2, pad_value=0.5)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lnl_lightning.data.inspect", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--source", action="append", help="generate[:key=value,...] or arrays:DIR")
    parser.add_argument("--color-vars", type=float, nargs="+", default=[0.02, 0.03, 0.05])
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("LNL_DATA_DIR", "data"),
        help="the folder holding MNIST/raw/ (default: LNL_DATA_DIR, else data)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data.seed of the generated data")
    parser.add_argument("--out", type=Path, help="write inspect.md and sample grids here")
    parser.add_argument("--write-palette", type=Path, help="a data.palette file from the arrays")
    args = parser.parse_args(argv)
    sources = [Source.parse(s) for s in args.source or DEFAULT_SOURCES]
    data_dir = Path(args.data_dir).expanduser().resolve()
    try:
        mnist = load_mnist(data_dir, download=False)
    except FileNotFoundError:
        mnist = None  # the arrays alone can be inspected
        print(
            f"MNIST not found in {data_dir / 'MNIST' / 'raw'} (--data-dir, or LNL_DATA_DIR)",
            file=sys.stderr,
        )
    results = {}
    for source in sources:
        for color_var in args.color_vars:
            splits = source.splits(color_var, mnist, args.seed)
            results[source.name, color_var] = inspect(splits)
            if args.out is not None:
                stem = source.name.replace(" ", "_")
                save_samples(splits, args.out / f"samples_{stem}_{color_var:.3f}.png")
    lines = markdown(results)
    print("\n".join(lines))
    if args.out is not None:
        command = "python -m lnl_lightning.data.inspect " + " ".join(argv or [])
        write_text_atomic(
            args.out / "inspect.md", f"# {command.strip()}\n\n" + "\n".join(lines) + "\n"
        )
    if args.write_palette is not None:
        arrays = [(n, v) for n, v in results if n == "arrays"]
        if not arrays:
            raise SystemExit("--write-palette needs an arrays:DIR source")
        name, color_var = arrays[0]
        palette = palette_for(results[name, color_var]["means"], color_var)
        text = "\n".join(f"- [{', '.join(f'{v:g}' for v in c)}]" for c in palette)
        header = (
            f"# data.palette={args.write_palette}: the arrays' per-digit means at sigma^2 = "
            f"{color_var:g}, as generator means\n"
        )
        write_text_atomic(args.write_palette, header + text + "\n")
        print(f"wrote {args.write_palette}")


if __name__ == "__main__":
    main()
