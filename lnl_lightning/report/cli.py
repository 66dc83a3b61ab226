"""``python -m lnl_lightning.report FOLDER ... [--out DIR] [--methods M ...]``: the report."""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lnl_lightning.records.files import write_text_atomic
from lnl_lightning.records.folder import CONFIG_FILE
from lnl_lightning.report.curves import curve_series
from lnl_lightning.report.methods import Methods, configured
from lnl_lightning.report.picks import picks, picks_record
from lnl_lightning.report.plots import plot_curves, plot_vs_color_var, plot_vs_lambda
from lnl_lightning.report.records import collect, load_run, summarize
from lnl_lightning.report.tables import curve_table, markdown

log = logging.getLogger(__name__)


class NothingToReport(ValueError):
    """The folders hold no run to report, or ``--methods`` names one they do not hold: refused
    before anything is written, so an earlier report stays as it was."""


def write_report(
    roots: Path | Sequence[Path], out: Path | None = None, methods: Sequence[str] | None = None
) -> Path:
    """Collect the runs below ``roots`` and write report.md and the plots into ``out``
    (default: the first root); with ``methods`` (method names, or the labels the report
    prints), only the runs of those methods."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    out = out or roots[0]
    runs, incomplete = [], []
    for root in roots:
        found, unfinished = collect(root)
        runs += found
        incomplete += unfinished
    where = ", ".join(map(str, roots))
    if not runs and not incomplete:
        raise NothingToReport(f"no run folders below {where}: nothing to report")
    if methods:
        runs = select_methods(runs, methods, where)
    out.mkdir(parents=True, exist_ok=True)
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
    chosen = picks_record(picks(rows))  # for scripts that run the picks further
    if chosen:
        write_text_atomic(out / "picks.json", json.dumps(chosen, indent=1) + "\n")
    else:
        (out / "picks.json").unlink(missing_ok=True)
    return path


def select_methods(runs: list, methods: Sequence[str], where: str) -> list:
    """The runs of ``methods``, each given as its method name or its label. A name no run
    and no configured method has is refused, listing the methods there; so is a selection
    that leaves no finished run."""
    names = {}
    for method, style in configured().items():
        names[method] = names[style.label] = method
    for run in runs:
        method = run.fields["method"]
        names[method] = names[run.display.get("label", method)] = method
    present = sorted({run.fields["method"] for run in runs})
    unknown = [m for m in methods if m not in names]
    if unknown:
        raise NothingToReport(
            f"--methods: {', '.join(unknown)} is no method; the methods of the finished runs "
            f"below {where}: {', '.join(present) or 'none'} (a name or its label, e.g. lnl or LNL)"
        )
    wanted = {names[m] for m in methods}
    selected = [run for run in runs if run.fields["method"] in wanted]
    if not selected:
        raise NothingToReport(
            f"--methods: no finished run of {', '.join(methods)} below {where}; the methods "
            f"there: {', '.join(present) or 'none'}"
        )
    for method in sorted(wanted - set(present)):
        log.warning("--methods: no finished run of %s below %s", method, where)
    return selected


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
        help="report only these methods (names or labels: baseline lnl blind_eye gray, LNL ...)",
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
    try:
        path = write_report(args.folders, out, args.methods)
    except NothingToReport as err:
        parser.exit(2, f"error: {err} (nothing written)\n")
    print(f"wrote {path}")
