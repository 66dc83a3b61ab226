"""``python -m lnl_lightning.report FOLDER ... [--out DIR] [--methods M ...]``: the report."""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lnl_lightning.records.files import write_text_atomic
from lnl_lightning.records.folder import CONFIG_FILE
from lnl_lightning.report.curves import curve_series
from lnl_lightning.report.methods import Methods
from lnl_lightning.report.plots import plot_curves, plot_vs_color_var, plot_vs_lambda
from lnl_lightning.report.records import collect, load_run, summarize
from lnl_lightning.report.tables import curve_table, markdown


def write_report(
    roots: Path | Sequence[Path], out: Path | None = None, methods: Sequence[str] | None = None
) -> Path:
    """Collect the runs below ``roots`` and write report.md and the plots into ``out``
    (default: the first root); with ``methods``, only the runs of those methods."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    out = out or roots[0]
    out.mkdir(parents=True, exist_ok=True)
    runs, incomplete = [], []
    for root in roots:
        found, unfinished = collect(root)
        runs += found
        incomplete += unfinished
    if methods:
        runs = [run for run in runs if run.fields["method"] in methods]
    rows = summarize(runs)
    methods = Methods((run.fields["method"], run.display) for run in runs if run.display)
    plots = {
        "acc_vs_lambda.png": plot_vs_lambda(
            rows, "test/acc", "unbiased test accuracy (test/acc)", out / "acc_vs_lambda.png"
        ),
        "acc_vs_color_var.png": plot_vs_color_var(rows, out / "acc_vs_color_var.png", methods),
        "bias_acc_vs_lambda.png": plot_vs_lambda(
            rows,
            "test/bias_acc",
            "bias predictability (test/bias_acc)",
            out / "bias_acc_vs_lambda.png",
        ),
    }
    # runs still going (or stopped) have curves too: what they logged so far
    unfinished = [
        load_run(Path(job["folder"]), None)
        for job in incomplete
        if (Path(job["folder"]) / CONFIG_FILE).is_file()
    ]
    series = curve_series(runs + unfinished, methods.label)
    plots["curves.png"] = plot_curves(series, out / "curves.png")
    path = out / "report.md"
    write_text_atomic(path, markdown(rows, incomplete, plots, methods, curve_table(series)))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lnl_lightning.report",
        description="Compare the runs below a folder: report.md (mean ± std over seeds) and plots.",
    )
    parser.add_argument(
        "folders",
        type=Path,
        nargs="+",
        help="multirun folders or any folders of run folders, reported together",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: the first folder)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="report only these methods (their labels: baseline lnl blind_eye gray ...)",
    )
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder")
    out = args.out or args.folders[0]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        parser.error(
            f"--out: cannot write into {out} ({err.strerror or err}): give a writable folder"
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = write_report(args.folders, out, args.methods)
    print(f"wrote {path}")
