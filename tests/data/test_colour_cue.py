"""The colour-only classifier that measures how strongly colour tells the digit."""

from __future__ import annotations

import pytest

from lnl_lightning.data.colour_cue import colour_cue_accuracy, main


def test_distinct_colours_with_little_noise_tell_every_digit():
    assert colour_cue_accuracy(1e-4, per_class=500) == 1.0


def test_one_colour_for_every_digit_tells_nothing():
    accuracy = colour_cue_accuracy(0.02, palette=[[200, 100, 50]] * 10, per_class=2000)
    assert accuracy == pytest.approx(0.1, abs=0.02)


def test_more_noise_or_a_truncated_draw_weakens_the_cue():
    clip = [colour_cue_accuracy(v, "clip", per_class=3000) for v in (0.02, 0.035, 0.05)]
    assert clip[0] > clip[1] > clip[2]
    assert colour_cue_accuracy(0.05, "resample", per_class=3000) < clip[2] - 0.03


def test_cli_prints_one_row_per_sigma2(capsys):
    main(["--color-vars", "0.02", "0.05", "--per-class", "200"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| σ² | clip | resample |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 0.02", "| 0.05"]
