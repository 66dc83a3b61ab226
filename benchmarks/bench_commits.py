"""``make bench`` of two commits, interleaved on one machine: is a change slower?

One ``step_throughput.py`` process per commit per round, each commit's own script over its own
package (a git worktree on ``PYTHONPATH``), alternating A, B, A, B, ... so that machine noise hits
both. Each step ratio is taken within one repeat (the variant and ``plain`` measured seconds
apart), pooled over every repeat of every round, and summarised by its median and quartiles:
``plain``'s own swings cancel in the ratio instead of deciding it. The last column is the
two-sided Mann-Whitney p of the two commits' per-repeat values (is the difference beyond noise?).

    python benchmarks/bench_commits.py BEFORE AFTER [--rounds 4] [--out DIR] [-- BENCH_ARGS]
    python benchmarks/bench_commits.py --summarise DIR [BEFORE AFTER]  # DIR's table again

BENCH_ARGS go to each ``step_throughput.py`` (default ``--repeats 3 --packs 3``). Every process's
output is kept in ``--out`` (``<round>_<commit>.txt``), with the table in ``summary.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from scipy.stats import mannwhitneyu

REPO = Path(__file__).resolve().parents[1]
REPEAT = re.compile(r"^repeat \d+/\d+: (.*)$")
PACK = re.compile(r"^\s*packed K=(\d+)\s+\d+ images/s per member,\s+(\d+) in all")
RATIOS = {  # name: (numerator variant, denominator variant); a ratio > 1 = slower than the first
    "lnl_official_vs_plain": ("plain", "lnl_official"),
    "lnl_vs_plain": ("plain", "lnl_fused"),
    "baseline_vs_plain": ("plain", "baseline"),
    "lightning_vs_bare": ("bare_fused", "lnl_fused"),
}


def parse(output: str) -> tuple[list[dict[str, float]], dict[str, float]]:
    """The per-repeat images/s of each variant, and each pack's images/s in all."""
    repeats, packs = [], {}
    for line in output.splitlines():
        if match := REPEAT.match(line):
            pairs = (item.rsplit(" ", 1) for item in match.group(1).split(", "))
            repeats.append({name: float(value) for name, value in pairs})
        elif match := PACK.match(line):
            packs[f"packed K={match.group(1)} in all"] = float(match.group(2))
    return repeats, packs


def quartiles(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    low, median, high = statistics.quantiles(values, n=4, method="inclusive")
    return f"{median:.2f} ({low:.2f}-{high:.2f})"


def rate(values: list[float]) -> str:
    return f"{statistics.median(values):.0f}"


def summary(runs: dict[str, list[str]]) -> str:
    """The table: per-repeat ratios pooled per commit, medians of images/s, Mann-Whitney p."""
    first, second = runs
    parsed = {c: [parse(out) for out in runs[c]] for c in runs}
    repeats = {c: [r for reps, _ in parsed[c] for r in reps] for c in runs}
    packs = {c: [pack for _, pack in parsed[c]] for c in runs}
    settings = next(line for line in runs[first][0].splitlines() if line.startswith("torch "))
    lines = [
        f"{len(runs[first])} step_throughput.py processes per commit, alternating; "
        f"{len(repeats[first])} repeats per commit; each: {settings}",
        "",
        f"| measure | {first} | {second} | Mann-Whitney p |",
        "|---|---:|---:|---:|",
    ]

    def row(name: str, values: dict[str, list[float]], cell: Callable[[list[float]], str]):
        p = mannwhitneyu(values[first], values[second]).pvalue
        lines.append(f"| {name} | {cell(values[first])} | {cell(values[second])} | {p:.2f} |")

    for name, (fast, slow) in RATIOS.items():
        ratios = {
            c: [r[fast] / r[slow] for r in repeats[c] if {fast, slow} <= r.keys()] for c in runs
        }
        if all(ratios.values()):
            row(f"ratio {name}, median (quartiles)", ratios, quartiles)
    for variant in repeats[first][0]:
        row(
            f"{variant} images/s, median",
            {c: [r[variant] for r in repeats[c]] for c in runs},
            rate,
        )
    for pack in packs[first][0]:
        row(f"{pack} images/s, median", {c: [p[pack] for p in packs[c]] for c in runs}, rate)
    return "\n".join(lines) + "\n"


def saved_runs(folder: Path, order: list[str]) -> dict[str, list[str]]:
    """The outputs ``main`` kept in ``folder`` (``<round>_<commit>.txt``), per commit, the
    commits in ``order`` (those given; the rest by name)."""
    files = sorted(folder.glob("*_*.txt"), key=lambda p: int(p.stem.split("_", 1)[0]))
    if not files:
        raise SystemExit(f"--summarise: no <round>_<commit>.txt outputs in {folder}")
    runs: dict[str, list[str]] = {}
    for path in files:
        runs.setdefault(path.stem.split("_", 1)[1], []).append(path.read_text())
    first = [c for c in order if c in runs]
    return {c: runs[c] for c in first + sorted(set(runs) - set(first))}


def short_commit(rev: str, parser: argparse.ArgumentParser) -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "--verify", f"{rev}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        parser.error(f"{rev!r} is not a commit of {REPO}")
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commits", nargs="*", help="two git revisions, e.g. effcdf8 HEAD")
    parser.add_argument("--rounds", type=int, default=4, help="processes per commit")
    parser.add_argument("--out", type=Path, default=None, help="folder for outputs and summary")
    parser.add_argument("--summarise", type=Path, default=None, help="print DIR's table again")
    args, bench_args = parser.parse_known_args()
    if args.summarise:
        print(summary(saved_runs(args.summarise, args.commits)), end="")
        return
    if len(args.commits) != 2:
        parser.error(f"two commits to compare, got {args.commits}")
    bench_args = [a for a in bench_args if a != "--"] or ["--repeats", "3", "--packs", "3"]
    resolved = [short_commit(rev, parser) for rev in args.commits]
    if resolved[0] == resolved[1]:
        parser.error(f"two different commits to compare, got {resolved[0]} twice")
    runs: dict[str, list[str]] = {c: [] for c in resolved}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {c: Path(tmp) / c for c in resolved}
        for commit, tree in trees.items():
            subprocess.run(
                ["git", "worktree", "add", "--detach", "--quiet", str(tree), commit],
                cwd=REPO,
                check=True,
            )
        try:
            for round_ in range(args.rounds):
                for commit, tree in trees.items():
                    env = {**os.environ, "PYTHONPATH": str(tree)}
                    command = [sys.executable, str(tree / "benchmarks/step_throughput.py")]
                    result = subprocess.run(
                        command + bench_args, env=env, capture_output=True, text=True
                    )
                    if result.returncode != 0:
                        raise SystemExit(
                            f"step_throughput.py at {commit} failed ({result.returncode}):\n"
                            f"{result.stderr[-2000:]}"
                        )
                    runs[commit].append(result.stdout)
                    print(f"round {round_ + 1}/{args.rounds} {commit}: done", flush=True)
                    if args.out:
                        args.out.mkdir(parents=True, exist_ok=True)
                        (args.out / f"{round_ + 1}_{commit}.txt").write_text(result.stdout)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO)
    table = summary(runs)
    print(table, end="")
    if args.out:
        (args.out / "summary.md").write_text(table)


if __name__ == "__main__":
    main()
