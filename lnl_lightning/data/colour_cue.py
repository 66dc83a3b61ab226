"""How well colour alone tells the digit in Colored MNIST's training data, before any training.

``python -m lnl_lightning.data.colour_cue [--color-vars 0.02 0.05] [--noise clip resample]
[--palette rebias|supplement]``

For each sigma^2 and colour noise it draws training colours as the data module does (one per
image, N(palette[digit], sigma^2 I), clipped or resampled) and classifies fresh draws by the
nearest class mean: the accuracy a network could get from the colour shortcut alone. A
baseline trained on the biased set leans on colour about as much as this number allows.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lnl_lightning.data.mnist_colors import (
    COLOR_NOISES,
    NUM_DIGITS,
    PALETTES,
    check_palette,
    draw_colors,
)

PAPER_GRID = (0.020, 0.025, 0.030, 0.035, 0.040, 0.045, 0.050)


def colour_cue_accuracy(
    color_var: float,
    noise: str = "clip",
    palette: Any = "rebias",
    per_class: int = 20000,
    seed: int = 0,
) -> float:
    """Accuracy of the nearest-class-mean colour classifier on fresh training-like colours."""
    means = check_palette(palette)
    classes = torch.arange(NUM_DIGITS).repeat_interleave(per_class)
    fit_rng, eval_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    fit = draw_colors(means[classes], color_var, fit_rng, noise)
    centres = torch.stack([fit[classes == digit].mean(0) for digit in range(NUM_DIGITS)])
    held_out = draw_colors(means[classes], color_var, eval_rng, noise)
    predicted = torch.cdist(held_out, centres).argmin(1)
    return (predicted == classes).float().mean().item()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--color-vars", type=float, nargs="+", default=list(PAPER_GRID))
    parser.add_argument("--noise", nargs="+", choices=COLOR_NOISES, default=["clip", "resample"])
    parser.add_argument("--palette", choices=sorted(PALETTES), default="rebias")
    parser.add_argument("--per-class", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("| σ² | " + " | ".join(args.noise) + " |")
    print("|---|" + "---|" * len(args.noise))
    for color_var in args.color_vars:
        cells = [
            f"{colour_cue_accuracy(color_var, noise, args.palette, args.per_class, args.seed):.3f}"
            for noise in args.noise
        ]
        print(f"| {color_var:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
