"""The plots draw each method as its config says; the command line refuses bad folders."""

from __future__ import annotations

import pytest
from matplotlib.colors import to_rgba

from lnl_lightning.report import cli, plots
from lnl_lightning.report.methods import Methods
from lnl_lightning.report.records import collect, summarize


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plots would save, kept open for the test to read."""
    figures = []
    monkeypatch.setattr(plots, "save_png", lambda fig, path: figures.append(fig))
    return figures


def test_accuracy_against_sigma2_draws_runs_and_published_rows_in_each_methods_colour(
    run_at, tmp_path, drawn
):
    for color_var, acc in ((0.02, 0.5), (0.05, 0.9)):
        run_at(
            f"toy_{color_var}",
            "model=blind_eye",
            f"data.color_var={color_var}",
            "model.display={label: Toy, color: black, marker: x}",
            metrics={"test/acc": acc},
        )
    runs = collect(tmp_path / "runs")[0]
    methods = Methods((run.fields["method"], run.display) for run in runs)
    assert plots.plot_vs_color_var(summarize(runs), tmp_path / "a.png", methods) is None
    (ax,) = drawn[0].axes
    legend = {text.get_text() for text in ax.get_legend().get_texts()}
    # only the published rows of the methods it holds, named as the runs name them
    assert legend == {"Toy (this repo)", "Toy (published)"}
    (runs_drawn,) = ax.containers  # the runs' error bars
    ours = runs_drawn.lines[0]
    assert runs_drawn.get_label() == "Toy (this repo)"
    assert to_rgba(ours.get_color()) == to_rgba("black") and ours.get_marker() == "x"
    assert list(ours.get_xdata()) == [0.02, 0.05] and list(ours.get_ydata()) == [0.5, 0.9]


def test_a_plot_with_nothing_to_draw_says_why_instead(tmp_path, drawn):
    assert plots.plot_vs_color_var([], tmp_path / "a.png", Methods()) == "no Colored MNIST runs"
    assert plots.plot_vs_lambda([], "test/acc", "acc", tmp_path / "b.png") == "no LNL runs"
    assert plots.plot_curves({}, tmp_path / "c.png").startswith("no run logged")
    assert drawn == []


def test_the_command_writes_the_report_and_its_plots(run_at, tmp_path):
    run_at("a", metrics={"test/acc": 0.5, "test/bias_acc": 0.3}, curve=[{"test/acc": 0.4}] * 4)
    cli.main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    written = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert written == [
        "acc_vs_color_var.png",
        "acc_vs_lambda.png",
        "bias_acc_vs_lambda.png",
        "curves.png",
        "report.md",
    ]
    assert (
        "1 finished run(s) in 1 configuration(s)" in (tmp_path / "report" / "report.md").read_text()
    )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["{tmp}/missing"], "missing is not a folder"),
        (["{tmp}", "--out", "{tmp}/file.txt/x"], "--out: cannot write into"),
    ],
)
def test_the_command_refuses_a_folder_it_cannot_read_or_write_naming_it(
    arguments, message, tmp_path, capsys
):
    (tmp_path / "file.txt").write_text("")
    with pytest.raises(SystemExit) as stopped:
        cli.main([a.format(tmp=tmp_path) for a in arguments])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_a_methods_typo_or_an_empty_folder_is_refused_and_the_report_kept(run_at, tmp_path, capsys):
    run_at("a", metrics={"test/acc": 0.5, "test/bias_acc": 0.3})
    run_at("b", "model=baseline", metrics={"test/acc": 0.4, "test/bias_acc": 0.9})
    cli.main([str(tmp_path / "runs")])
    report = tmp_path / "runs" / "report.md"
    before = report.read_text()

    for typo, message in (("LFF_", "LFF_ is no method"), ("lff", "no finished run of lff")):
        with pytest.raises(SystemExit) as stopped:
            cli.main([str(tmp_path / "runs"), "--methods", typo])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and message in err
        assert "baseline, lnl" in err  # what there is
        assert report.read_text() == before

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as stopped:
        cli.main([str(tmp_path / "empty")])
    assert stopped.value.code == 2 and "no run folders below" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "report.md").exists()

    # the label the report prints selects its method, as the name does
    cli.main([str(tmp_path / "runs"), "--methods", "LNL"])
    text = report.read_text()
    assert "1 finished run(s) in 1 configuration(s)" in text
