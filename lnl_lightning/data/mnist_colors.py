"""How Colored MNIST images are coloured: the palettes, the colour noise and the strokes.

The defaults follow what is known of the authors' arrays (README "The data"): one flat colour
per image on binarised strokes (a pixel is coloured iff its MNIST grey value is > 128, else
black), the ten mean colours of the paper's supplement, each channel drawn from
N(mean, sigma^2) again until it falls inside (0, 1), and bytes by ``int(x * 255)``. The
repository's earlier data (ReBias's palette, intensity-weighted strokes, clipped noise) stay
reachable by name, so the results made with them reproduce.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml

from lnl_lightning.errors import ConfigError
from lnl_lightning.schemas import choices

log = logging.getLogger(__name__)

NUM_DIGITS = 10
# The paper's supplementary colours as one public implementation of its Algorithm 1 gives
# them (Crimson, Teal, Lemon, Bondi Blue, Carrot Orange, Strong Violet, Cyan, Pink, Lime,
# Maroon for digits 0-9); sample images of the authors' arrays fit them (README).
SUPPLEMENT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (220, 20, 60),
    (0, 128, 128),
    (253, 233, 16),
    (0, 149, 182),
    (237, 145, 33),
    (145, 30, 188),
    (70, 240, 240),
    (250, 197, 187),
    (210, 245, 60),
    (128, 0, 0),
)
# ReBias's Biased-MNIST colour map: pure saturated colours far apart (a stronger colour cue).
REBIAS_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (225, 225, 0),
    (225, 0, 225),
    (0, 255, 255),
    (255, 128, 0),
    (255, 0, 128),
    (128, 0, 255),
    (128, 128, 128),
)
PALETTES = {"supplement": SUPPLEMENT_PALETTE, "rebias": REBIAS_PALETTE}
# "paper" named the ReBias map in configs written before the supplement's palette was known.
PALETTE_ALIASES = {"paper": "rebias"}
ColorNoise = Literal["resample", "clip"]
Stroke = Literal["binary", "intensity"]
COLOR_NOISES, STROKES = choices(ColorNoise), choices(Stroke)
STROKE_THRESHOLD = 128  # binary strokes: coloured iff MNIST grey > 128 (grey 128 is background)


def palette_name(palette: Any) -> str:
    """A short name for ``data.palette``: its own name, or ``custom-<hash>`` for a list or file."""
    if isinstance(palette, str) and Path(palette).expanduser().is_file():
        palette = read_palette_file(Path(palette).expanduser())
    if isinstance(palette, str):
        return PALETTE_ALIASES.get(palette, palette)
    values = np.asarray([list(c) for c in palette], dtype=np.float64)
    return "custom-" + hashlib.sha1(values.tobytes()).hexdigest()[:8]


DEFAULT_DATA = "supplement binary resample"


def describe_data(data: Mapping[str, Any]) -> str:
    """Which Colored MNIST a run's ``data`` config describes: "arrays" (the authors' files),
    or the generator's palette, strokes and colour noise. A key a config lacks (written
    before the key existed) had its first value: ReBias's colours, intensity strokes, clipped
    noise."""
    if data.get("source") == "arrays":
        return "arrays"
    palette = data.get("palette")
    name = palette_name(palette) if palette is not None else "rebias"
    return f"{name} {data.get('stroke') or 'intensity'} {data.get('color_noise') or 'clip'}"


def read_palette_file(path: Path) -> list[list[float]]:
    """The 10 RGB triples of a palette file (YAML, as ``python -m lnl_lightning.data.inspect
    --write-palette`` writes it)."""
    try:
        colors = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"data.palette: {path} does not read as YAML ({err})") from err
    return colors.get("palette", colors) if isinstance(colors, dict) else colors


def check_palette(palette: Any) -> torch.Tensor:
    """Validate ``data.palette`` (a name of :data:`PALETTES`, a palette file, or 10 RGB triples
    in [0, 255]); return it in [0, 1]."""
    if isinstance(palette, str) and Path(palette).expanduser().is_file():
        palette = read_palette_file(Path(palette).expanduser())
    if isinstance(palette, str):
        name = PALETTE_ALIASES.get(palette, palette)
        if name not in PALETTES:
            raise ConfigError(
                f"data.palette must be one of {sorted(PALETTES)}, a palette file or a list of "
                f"10 RGB colours, got '{palette}'"
            )
        if name != palette:
            log.warning("data.palette=%s is the old name of '%s' (ReBias's colours)", palette, name)
        palette = PALETTES[name]
    try:
        colors = [[float(v) for v in c] for c in palette]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"data.palette must be a list of [r, g, b] lists, got {palette}") from err
    if len(colors) != NUM_DIGITS:
        raise ConfigError(
            f"data.palette must hold {NUM_DIGITS} RGB colours (one per digit), got {len(colors)}"
        )
    for c in colors:
        if len(c) != 3 or not all(0 <= v <= 255 for v in c):
            raise ConfigError(f"data.palette colours must be 3 values in [0, 255], got {c}")
    return torch.tensor(colors, dtype=torch.float32) / 255.0


def draw_colors(
    means: torch.Tensor, color_var: float, rng: np.random.Generator, noise: str = "resample"
) -> torch.Tensor:
    """One colour per row of ``means`` (``(N, 3)`` in [0, 1]), drawn from N(mean, color_var I).

    ``noise="resample"`` draws each channel again until it falls inside (0, 1) (a truncated
    normal; the draws after the first come from ``rng`` in order, so the result is
    deterministic); ``noise="clip"`` clips each channel to [0, 1].
    """
    std = math.sqrt(color_var)
    colors = means + std * torch.from_numpy(rng.standard_normal(tuple(means.shape))).float()
    if noise == "clip":
        return colors.clamp_(0.0, 1.0)
    outside = (colors <= 0.0) | (colors >= 1.0)
    while outside.any():
        redraw = torch.from_numpy(rng.standard_normal(int(outside.sum()))).float()
        colors[outside] = means[outside] + std * redraw
        outside = (colors <= 0.0) | (colors >= 1.0)
    return colors


def colorize(
    digits: torch.Tensor,
    color_class: torch.Tensor,
    palette: torch.Tensor,
    color_var: float,
    rng: np.random.Generator,
    noise: str = "resample",
    stroke: str = "binary",
    chunk: int = 8192,
) -> torch.Tensor:
    """Colour grey digits: each image gets one colour from N(palette[class], color_var I).

    Args:
        digits: uint8 ``(N, H, W)`` grey images.
        color_class: int64 ``(N,)`` index into ``palette`` for each image.
        palette: float ``(C, 3)`` mean colours in [0, 1].
        color_var: sigma^2 of the colour noise, in [0, 1] units.
        rng: the generator the noise is drawn from.
        noise: how a draw outside (0, 1) is handled (:func:`draw_colors`).
        stroke: "binary": pixels with grey > 128 get ``int(colour * 255)``, the rest are black
            (the authors' arrays); "intensity": pixel = round(grey x colour).

    Returns:
        uint8 ``(N, 3, H, W)``.
    """
    colors = draw_colors(palette[color_class], color_var, rng, noise)
    if stroke == "binary":
        stroke_bytes = (colors * 255).floor_().to(torch.uint8)[:, :, None, None]
        mask = (digits > STROKE_THRESHOLD).unsqueeze(1)
        return torch.where(mask, stroke_bytes, torch.zeros((), dtype=torch.uint8))
    out = torch.empty(len(digits), 3, *digits.shape[1:], dtype=torch.uint8)
    for start in range(0, len(digits), chunk):  # bounded float memory
        end = start + chunk
        grey = digits[start:end].float().unsqueeze(1)
        out[start:end] = (grey * colors[start:end, :, None, None]).round_().to(torch.uint8)
    return out


def colorize_background(
    digits: torch.Tensor, color_class: torch.Tensor, palette: torch.Tensor
) -> torch.Tensor:
    """ReBias colouring: white digit (every non-zero pixel), background in ``palette[class]``."""
    background = (palette[color_class] * 255).round().to(torch.uint8)[:, :, None, None]
    stroke = (digits > 0).unsqueeze(1)
    return torch.where(
        stroke, torch.tensor(255, dtype=torch.uint8), background.expand(-1, -1, *digits.shape[1:])
    )


def rebias_color_classes(
    labels: torch.Tensor, rho: float, rng: np.random.Generator
) -> torch.Tensor:
    """The digit's class with probability ``rho``, else one of the other nine, uniformly."""
    aligned = torch.from_numpy(rng.random(len(labels)) < rho)
    shift = torch.from_numpy(rng.integers(1, NUM_DIGITS, len(labels)))
    return torch.where(aligned, labels, (labels + shift) % NUM_DIGITS)
