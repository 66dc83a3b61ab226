"""The paper's Colored MNIST studies as Hydra multiruns, then their report.

    python -m lnl_lightning.study reproduce [--epochs 100] [--lnl-epochs 100] [--methods lnl]
        [--color-vars ...] [--seeds ...] [--scratch] [--pack] [--out DIR] [--report DIR]
        [-- OVERRIDE ...]
    python -m lnl_lightning.study compare [--epochs 100] [--methods baseline lnl ...]
        [--color-vars ...] [--seeds ...] [--jobs N] [--out DIR] [--report DIR] [-- OVERRIDE ...]

``reproduce`` is the official protocol: the baseline per sigma^2 x seed, then each method
warm-started from the baseline run of the same sigma^2 and seed (found from the run records,
``model.init_from=${warm_start:...}``), with ``--scratch`` the method from scratch beside them
for as many epochs in all. ``compare`` trains every method from scratch on the same data and
recipe. OVERRIDEs go to every run (``data.data_dir=...``, ``debug=fast``). Each phase is one
Hydra multirun with its log beside its folder (``<out>/<phase>.log``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf

from lnl_lightning.config import CONFIG_DIR
from lnl_lightning.errors import ConfigError

SWEEP = "reproduce"  # conf/sweep/reproduce.yaml: the paper's sigma^2 grid and seeds
SWEPT = ("data.color_var", "seed")  # a cell of the grid; a warm start pairs runs by them
JOB_FOLDER = "cv${data.color_var}_seed${seed}"
COMPARED = ("baseline", "lnl", "blind_eye", "gray", "group_dro", "lff")


def paper_grid() -> dict[str, list[str]]:
    """The sigma^2 values and seeds of ``sweep=reproduce``, where they are written once."""
    params = OmegaConf.load(CONFIG_DIR / "sweep" / f"{SWEEP}.yaml").hydra.sweeper.params
    return {key: str(params[key]).split(",") for key in SWEPT}


def method_overrides(method: str) -> list[str]:
    """What selects ``method`` on Colored MNIST: its experiment, else its model on LNL's.

    Methods that are a setting of another (gray: the baseline on grey images) are defined by
    their experiment file alone.
    """
    if (CONFIG_DIR / "experiment" / f"colored_mnist_{method}.yaml").is_file():
        return [f"experiment=colored_mnist_{method}"]
    if (CONFIG_DIR / "model" / f"{method}.yaml").is_file():
        return ["experiment=colored_mnist", f"model={method}"]
    known = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
    raise ConfigError(
        f"--methods: {method} is neither conf/experiment/colored_mnist_{method}.yaml nor a "
        f"model ({', '.join(known)})"
    )


def grid_overrides(args: argparse.Namespace) -> list[str]:
    grid = paper_grid()
    color_vars, seeds = args.color_vars or grid["data.color_var"], args.seeds or grid["seed"]
    return [f"data.color_var={','.join(color_vars)}", f"seed={','.join(seeds)}"]


def train(phase: str, overrides: Sequence[str], out: Path, threads: int) -> subprocess.Popen:
    """Start one phase, a multirun into ``out/phase``, its output in ``out/phase.log``."""
    command = [
        sys.executable,
        "-m",
        "lnl_lightning",
        "-m",
        *overrides,
        f"hydra.sweep.dir={out / phase}",
        f"hydra.sweep.subdir={JOB_FOLDER}",
    ]
    log = (out / f"{phase}.log").open("w")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def finished(phase: str, process: subprocess.Popen, out: Path) -> bool:
    if process.wait() != 0:
        print(f"{phase} failed: see {out / phase}.log", flush=True)
    return process.returncode == 0


def report(out: Path, report_dir: Path, extra: Sequence[str] = ()) -> bool:
    command = [sys.executable, "-m", "lnl_lightning.report", str(out), "--out", str(report_dir)]
    return subprocess.run([*command, *extra], check=False).returncode == 0


def reproduce(args: argparse.Namespace) -> bool:
    """Baseline, then each method warm-started from it; with --scratch, each from scratch."""
    out = args.out or Path(f"outputs/reproduce_{args.name}")
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    threads = args.threads or (max(cores // 2, 1) if args.scratch else cores)
    grid = [
        f"sweep={SWEEP}",
        *grid_overrides(args),
        *(["hydra/launcher=packed"] if args.pack else []),
    ]

    def phase(method: str, epochs: int) -> list[str]:
        return [*method_overrides(method), *grid, f"trainer.max_epochs={epochs}", *args.overrides]

    both = f", beside each from scratch ({args.epochs + args.lnl_epochs} epochs)"
    print(
        f"baseline ({args.epochs} epochs) then {' '.join(args.methods)} warm-started "
        f"({args.lnl_epochs} epochs){both if args.scratch else ''}, {threads} thread(s) each; "
        f"logs in {out}/*.log",
        flush=True,
    )
    scratch = {
        f"{m}_scratch": train(f"{m}_scratch", phase(m, args.epochs + args.lnl_epochs), out, threads)
        for m in (args.methods if args.scratch else ())
    }
    baseline = train("baseline", phase("baseline", args.epochs), out, threads)
    ok = finished("baseline", baseline, out)
    warm = f"model.init_from=${{warm_start:{(out / 'baseline').absolute()},{','.join(SWEPT)}}}"
    for method in args.methods:
        name = f"{method}_warm"
        ok &= finished(
            name, train(name, [*phase(method, args.lnl_epochs), warm], out, threads), out
        )
    for name, process in scratch.items():
        ok &= finished(name, process, out)
    return report(out, args.report or Path(f"results/colored_mnist_{args.name}")) and ok


def compare(args: argparse.Namespace) -> bool:
    """Every method from scratch, ``--jobs`` multiruns at a time, one thread each."""
    out = args.out or Path(f"outputs/compare_{args.name}")
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{' '.join(args.methods)}: {args.epochs} epochs each, {args.jobs} at a time, one "
        f"thread each; logs in {out}/*.log",
        flush=True,
    )
    common = [*grid_overrides(args), f"trainer.max_epochs={args.epochs}", "print_config=false"]

    def one(method: str) -> bool:
        overrides = [*method_overrides(method), *common, *args.overrides]
        return finished(method, train(method, overrides, out, threads=1), out)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        ok = all(list(pool.map(one, args.methods)))
    report_dir = args.report or Path(f"results/compare_colored_mnist_{args.name}")
    return report(out, report_dir, ["--methods", *args.methods]) and ok


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lnl_lightning.study",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    studies = parser.add_subparsers(dest="study", required=True)
    for name, methods in (("reproduce", ("lnl",)), ("compare", COMPARED)):
        study = studies.add_parser(name, help=globals()[name].__doc__)
        study.add_argument("--epochs", type=int, default=100, help="baseline (reproduce), each")
        study.add_argument("--methods", nargs="+", default=list(methods))
        study.add_argument("--color-vars", nargs="+", help="sigma^2 (default: sweep=reproduce's)")
        study.add_argument("--seeds", nargs="+", help="seeds (default: sweep=reproduce's)")
        study.add_argument("--out", type=Path, help="the run folders and phase logs")
        study.add_argument("--report", type=Path, help="report.md and its plots")
        study.add_argument("--name", help="names the default --out and --report")
        study.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    reproduce_parser = studies.choices["reproduce"]
    reproduce_parser.add_argument("--lnl-epochs", type=int, help="warm phase (default --epochs)")
    reproduce_parser.add_argument("--scratch", action="store_true", help="also from scratch")
    reproduce_parser.add_argument("--pack", action="store_true", help="each phase one pack")
    reproduce_parser.add_argument("--threads", type=int, help="per phase (default: the cores)")
    studies.choices["compare"].add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.study == "reproduce":
        args.lnl_epochs = args.lnl_epochs or args.epochs
        default = f"{args.epochs}+{args.lnl_epochs}ep"
        if args.methods != ["lnl"]:
            default += "_" + "_".join(args.methods)
    else:
        default = f"{args.epochs}ep"
    args.name = args.name or default
    for method in args.methods:
        method_overrides(method)  # an unknown method stops the study before any run
    return args


def main(argv: Sequence[str] | None = None) -> None:
    try:
        args = parse(argv)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    ok = reproduce(args) if args.study == "reproduce" else compare(args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
