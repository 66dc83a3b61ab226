"""The data inspector: what it reports of generated data and of the arrays, and its palette file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import truncnorm

from lnl_lightning.data.colored_mnist import ColoredMNISTDataModule
from lnl_lightning.data.inspect import Source, distinct_colors, inspect, main, palette_for
from lnl_lightning.data.mnist_colors import SUPPLEMENT_PALETTE
from lnl_lightning.data.mnist_files import load_mnist

from ..helpers.authors_arrays import authors_arrays, write_authors_arrays
from ..helpers.fixtures import one_colour_per_class

FIRST_DATA = "generate:palette=rebias,stroke=intensity,color_noise=clip"


def test_distinct_colours_counts_the_colours_off_black():
    images = torch.zeros(3, 3, 2, 2, dtype=torch.uint8)
    images[0, :, 0, 0] = torch.tensor([10, 20, 30])
    images[0, :, 1, 1] = torch.tensor([10, 20, 30])
    images[1, :, 0, 0] = torch.tensor([10, 20, 30])
    images[1, :, 0, 1] = torch.tensor([10, 20, 31])
    assert distinct_colors(images).tolist() == [1, 2, 0]


def test_the_default_generator_and_the_first_data_differ_as_the_arrays_and_ours_did(mnist_dir):
    mnist = load_mnist(mnist_dir, download=False)
    default = inspect(Source.parse("generate").splits(0.03, mnist, seed=0))
    first = inspect(Source.parse(FIRST_DATA).splits(0.03, mnist, seed=0))
    # the default: one flat colour on the grey > 128 mask, never 255, zeros rare
    assert default["distinct"] == (1.0, 1) and default["mask"] == {"train": 1.0, "test": 1.0}
    assert default["share_255"] == 0 and default["share_0"] < 0.02
    # the first data: intensity-weighted strokes (many colours), clipped (values at 0 and 255)
    assert first["distinct"][1] > 1 and first["mask"]["train"] < 0.9  # real MNIST: 0
    assert first["share_0"] > 0.05 and first["share_255"] > 0
    for result in (default, first):
        assert result["cue"] > 0.5  # training colours tell the digit
        assert result["test_cue"] < 0.3  # test colours do not


def test_the_arrays_read_like_the_generator_that_made_them(tmp_path, mnist_dir):
    arrays, _ = authors_arrays(0.03)
    write_authors_arrays(tmp_path, arrays, 0.03)
    result = inspect(Source.parse(f"arrays:{tmp_path}").splits(0.03, None, seed=0))
    assert result["distinct"] == (1.0, 1) and result["share_255"] == 0
    assert result["mask"] == {"test": 1.0}  # test_gray; the training order needs MNIST
    # the per-digit means are where the truncated normal puts them (60 images a digit)
    mean, std = torch.tensor(SUPPLEMENT_PALETTE).double() / 255, 0.03**0.5
    expected = 255 * truncnorm.mean(-mean / std, (1 - mean) / std, loc=mean, scale=std) - 0.5
    assert np.abs(result["means"].numpy() - expected).max() < 20  # 4 standard errors


@pytest.mark.parametrize("color_var", [0.02, 0.05])
def test_the_palette_file_inverts_the_noise(color_var):
    """Images drawn with the written palette have the means the palette was read from."""
    per_class = 20000
    truth = torch.tensor(SUPPLEMENT_PALETTE).float() / 255
    classes, drawn = one_colour_per_class(truth, color_var, per_class, seed=0)
    means = torch.stack([drawn[classes == d].float().mean(0) for d in range(10)])
    estimated = torch.tensor(palette_for(means, color_var))
    # far from the bounds the truncation is mild; the inversion recovers the mean colour
    inside = (truth * 255 > 25) & (truth * 255 < 230)
    assert (estimated - truth * 255)[inside].abs().max() < 3
    assert (means - truth * 255)[~inside].abs().max() > 10  # where naive means are far off
    assert (estimated - truth * 255)[~inside].abs().max() < 12


def test_cli_writes_tables_grids_and_a_palette_the_data_module_reads(tmp_path, mnist_dir, capsys):
    arrays_dir = tmp_path / "arrays"
    write_authors_arrays(arrays_dir, authors_arrays(0.02)[0], 0.02)
    out, palette = tmp_path / "out", tmp_path / "palette.yaml"
    main(
        [
            "--source",
            "generate",
            "--source",
            f"arrays:{arrays_dir}",
            "--color-vars",
            "0.02",
            "--data-dir",
            str(mnist_dir),
            "--out",
            str(out),
            "--write-palette",
            str(palette),
        ]
    )
    text = (out / "inspect.md").read_text()
    assert "| supplement binary resample | 0.02 |" in text and "| arrays | 0.02 |" in text
    assert (out / "samples_arrays_0.020.png").stat().st_size > 0
    assert (out / "samples_supplement_binary_resample_0.020.png").stat().st_size > 0
    dm = ColoredMNISTDataModule(data_dir=str(mnist_dir), palette=str(palette))
    assert dm.palette.shape == (10, 3) and dm.palette.min() >= 0 and dm.palette.max() <= 1
    assert "wrote" in capsys.readouterr().out


def test_inspect_reads_lnl_data_dir_and_says_where_it_looked(tmp_path, monkeypatch, capsys):
    from lnl_lightning.data import inspect as inspect_module

    monkeypatch.setenv("LNL_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as stopped:
        inspect_module.main(["--color-vars", "0.02"])
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in err and "LNL_DATA_DIR" in err
    assert "--data-dir (or LNL_DATA_DIR)" in str(stopped.value)
    with pytest.raises(SystemExit):
        inspect_module.main(["--help"])
    assert "usage: python -m lnl_lightning.data.inspect" in capsys.readouterr().out
