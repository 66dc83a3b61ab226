"""The GPU check: what a lent GPU is for, in priority order, inside one time budget, into --out.

    python benchmarks/gpu_check.py --out OUT --data-dir DATA [--budget-s 540] [--dry-run]

1. pair: sigma^2 = 0.020, seed 0, the default data, the official 60k training images
   (data.val_fraction=0), perf=fast: the baseline for --pair-epochs (100), then LNL warm-started
   from its last checkpoint for as many. Each phase stops cleanly at its time
   (``trainer.max_time``), then tests and writes metrics.json; each member's last.ckpt is
   written after every epoch, so a phase cut short still warm-starts the next and reports how
   far it got. pair.json: epochs, test/acc, test/acc_conflicting, test/bias_acc, images/s;
   pair_curves.csv: the per-epoch metrics of both phases.
2. speed: bench.txt, images/s of one official LNL run at batch 128 (a pack of one: perf=fast)
   and of packs of K = 7, 21, 42, against the targets (60,000 and 250,000 images/s).
3. graph_vs_eager.txt: the CUDA-graph step against the eager step, TF32 off (benchmarks/
   graph_vs_eager.py).
4. grid: the paper's grid as packs (``python -m lnl_lightning.study reproduce --pack``:
   sigma^2 x seeds, baseline then LNL warm-started from the baseline run of the same cell,
   --grid-epochs each), in the time left; grid_report.md.

log.txt holds every step's command and output, summary.json what each step delivered,
runs.tar.gz every run folder without checkpoints. A step that fails does not stop the next;
each gets its share of the budget (--dry-run prints the plan) and whatever an earlier step
left unused. On a machine without a GPU every step runs on the CPU, which is how it is tested
(tests/test_gpu_check.py, with tiny settings).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"one_run": 60_000, "packs": 250_000}  # images/s (issue: the paper's grid in minutes)
# each step's share of the budget, in priority order; the grid gets what is left
SHARES = {"pair": 0.56, "speed": 0.13, "graph_vs_eager": 0.08}
PAIR_METRICS = ("test/acc", "test/acc_conflicting", "test/bias_acc", "train/acc")
STARTUP_S = 25  # a run's imports, data and final test, outside trainer.max_time


class Check:
    """Runs the steps, logs each command and its output, keeps what each delivered."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out).resolve()
        self.work = self.out / "work"
        self.start = time.monotonic()
        self.summary: dict[str, object] = {"budget_s": args.budget_s}
        self.log = None

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.start)

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.start:5.0f} s] {text}"
        print(line, flush=True)
        if self.log:
            self.log.write(line + "\n")
            self.log.flush()

    def run(self, command: list[str], seconds: float, log_name: str) -> int:
        """``command`` with at most ``seconds``; its output into log.txt and work/<log_name>."""
        self.say(f"$ {shlex.join(command)}  (at most {seconds:.0f} s)")
        path = self.work / log_name
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
        env.setdefault("OMP_NUM_THREADS", "1")
        with path.open("w") as output:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            try:
                code = process.wait(timeout=max(seconds, 1))
            except subprocess.TimeoutExpired:  # past its time: SIGTERM saves a checkpoint
                os.killpg(process.pid, 15)
                try:
                    code = process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
                    code = process.wait()
        text = path.read_text(errors="replace")
        self.log.write(text[-6000:] + f"\n(exit {code})\n")
        self.say(f"exit {code}")
        return code

    def run_overrides(self, train_s: int) -> list[str]:
        """What every training run of the check is given: the data, quiet logs, its time."""
        return [
            f"data.data_dir={self.args.data_dir}",
            "print_config=false",
            "trainer.enable_progress_bar=false",
            f"+trainer.max_time={max_time(max(train_s, 1))}",
            *shlex.split(self.args.run_args),
        ]

    def train(self, overrides: list[str], seconds: float, log_name: str) -> int:
        """``python -m lnl_lightning``, stopped by ``trainer.max_time`` within ``seconds``."""
        command = [
            sys.executable,
            "-m",
            "lnl_lightning",
            *overrides,
            *self.run_overrides(int(seconds - STARTUP_S)),
        ]
        return self.run(command, seconds + 30, log_name)


def max_time(seconds: int) -> str:
    """``seconds`` as Lightning's ``max_time`` string, DD:HH:MM:SS."""
    return f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def plan(args: argparse.Namespace) -> dict[str, float]:
    """Seconds for each step, in order: the shares of the budget, the grid the rest."""
    usable = args.budget_s - 10  # versions, packing up
    steps = {name: round(usable * share) for name, share in SHARES.items()}
    steps["grid"] = usable - sum(steps.values())
    return steps


def versions(check: Check) -> None:
    import torch

    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    for name in ("pytorch_lightning", "torchmetrics", "hydra", "omegaconf"):
        info[name] = __import__(name).__version__
    check.summary["versions"] = info
    check.say(f"versions: {info}")


def epoch_rows(run: Path) -> list[dict[str, str]]:
    """A run's per-epoch CSV rows (every csv/version_<n>/metrics.csv), epochs in order."""
    rows = []
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        with path.open() as file:
            rows += [r for r in csv.DictReader(file) if r.get("epoch")]
    return rows


def run_result(run: Path) -> dict[str, object]:
    """What a run delivered: its metrics.json, or, if it never got there, its last epoch."""
    metrics = run / "metrics.json"
    if metrics.is_file():
        record = json.loads(metrics.read_text())
        return {
            "finished": True,
            "epochs": record["epochs"],
            "global_step": record["global_step"],
            "train_images_per_s": record["train_images_per_s"],
            **{k: record["metrics"].get(k) for k in PAIR_METRICS[:3]},
        }
    rows = [r for r in epoch_rows(run) if r.get("test/acc")]
    last = rows[-1] if rows else {}
    return {
        "finished": False,
        "epochs": int(last["epoch"]) + 1 if last else 0,
        **{k: float(last[k]) if last.get(k) else None for k in PAIR_METRICS[:3]},
        "last_checkpoint": (run / "checkpoints" / "last.ckpt").is_file(),
    }


def pair(check: Check, seconds: float) -> None:
    args, folder = check.args, check.work / "pair"
    common = [
        "experiment=colored_mnist",
        "perf=fast",
        "task_name=paper_pair",
        "data.color_var=0.02",
        "seed=0",
        "data.val_fraction=0",
        f"trainer.max_epochs={args.pair_epochs}",
    ]
    end = time.monotonic() + seconds
    check.train(
        [*common, "model=baseline", f"hydra.run.dir={folder / 'baseline'}"],
        seconds / 2,
        "pair_baseline.log",
    )
    baseline = run_result(folder / "baseline")
    warm_from = folder / "baseline" / "checkpoints" / "last.ckpt"
    if warm_from.is_file():
        check.train(
            [
                *common,
                "model=lnl",
                f"model.init_from={warm_from}",
                f"hydra.run.dir={folder / 'lnl_warm'}",
            ],
            end - time.monotonic(),
            "pair_lnl_warm.log",
        )
    result = {
        "baseline": baseline,
        "lnl_warm": run_result(folder / "lnl_warm"),
        "published": {"baseline": 0.4055, "lnl": 0.8185},
    }
    write_json(check.out / "pair.json", result)
    with (check.out / "pair_curves.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["run", "epoch", *PAIR_METRICS])
        for name in ("baseline", "lnl_warm"):
            for row in epoch_rows(folder / name):
                if row.get("test/acc") or row.get("train/acc"):
                    writer.writerow([name, row["epoch"], *(row.get(k, "") for k in PAIR_METRICS)])
    check.summary["pair"] = result
    for name in ("baseline", "lnl_warm"):
        check.say(f"pair {name}: {result[name]}")


def speed(check: Check, seconds: float) -> None:
    args = check.args
    device = "cuda" if check.summary["versions"]["device"] != "cpu" else "cpu"
    command = [
        sys.executable,
        "benchmarks/step_throughput.py",
        "--device",
        device,
        "--variants",
        "none",
        "--packs",
        args.packs,
        "--steps",
        str(args.bench_steps),
        "--repeats",
        "3",
    ]
    check.run(command, seconds, "bench.txt")
    (check.out / "bench.txt").write_text((check.work / "bench.txt").read_text())
    per_member, in_all = {}, {}  # K -> images/s
    for line in (check.work / "bench.txt").read_text().splitlines():
        if line.strip().startswith("packed K="):
            width = int(line.split("K=")[1].split()[0])
            per_member[width] = float(line.split("images/s per member,")[0].split()[-1])
            in_all[width] = float(line.split("per member,")[1].split()[0])
    one = in_all.get(1)
    packs = max((v for k, v in in_all.items() if k > 1), default=None)
    result = {
        "images_per_s_per_member": per_member,
        "images_per_s_in_all": in_all,
        "one_run": one,
        "one_run_target": TARGETS["one_run"],
        "one_run_met": one is not None and one >= TARGETS["one_run"],
        "best_pack_in_all": packs,
        "packs_target": TARGETS["packs"],
        "packs_met": packs is not None and packs >= TARGETS["packs"],
    }
    check.summary["speed"] = result
    check.say(f"speed: {result}")


def graph_vs_eager(check: Check, seconds: float) -> None:
    command = [
        sys.executable,
        "benchmarks/graph_vs_eager.py",
        "--steps",
        str(check.args.graph_steps),
    ]
    code = check.run(command, seconds, "graph_vs_eager.txt")
    text = (check.work / "graph_vs_eager.txt").read_text()
    (check.out / "graph_vs_eager.txt").write_text(text)
    verdict = [line for line in text.splitlines() if line.startswith("graph_vs_eager:")]
    check.summary["graph_vs_eager"] = {"exit": code, "result": verdict[-1] if verdict else None}
    check.say(f"graph vs eager: {check.summary['graph_vs_eager']}")


def grid(check: Check, seconds: float) -> None:
    """``python -m lnl_lightning.study reproduce --pack``: each phase gets half the time left."""
    args, folder = check.args, check.work / "grid"
    phase_s = int(seconds / 2 - STARTUP_S)
    if phase_s < 10:
        check.summary["grid"] = {"skipped": f"{seconds:.0f} s left"}
        check.say(f"grid: skipped, {seconds:.0f} s left")
        return
    command = [
        sys.executable,
        "-m",
        "lnl_lightning.study",
        "reproduce",
        "--pack",
        f"--epochs={args.grid_epochs}",
        *(["--color-vars", *args.color_vars] if args.color_vars else []),
        *(["--seeds", *args.seeds] if args.seeds else []),
        f"--out={folder}",
        f"--report={folder}",
        "--",
        "perf.cuda_graph=true",
        *check.run_overrides(phase_s),
    ]
    check.run(command, seconds + 30, "grid.log")
    for phase_log in sorted(folder.glob("*.log")):  # each phase's output, beside the study's
        check.log.write(f"--- {phase_log.name}\n{phase_log.read_text(errors='replace')[-4000:]}\n")
    runs = [json.loads(p.read_text()) for p in folder.rglob("metrics.json")]
    check.summary["grid"] = {
        "finished_runs": len(runs),
        "epochs": sorted({r["epochs"] for r in runs}),
        "pack_images_per_s": sorted(
            {r["pack"]["train_images_per_s"] for r in runs if r.get("pack")} - {None}
        ),
    }
    if (folder / "report.md").is_file():
        (check.out / "grid_report.md").write_text((folder / "report.md").read_text())
    check.say(f"grid: {check.summary['grid']}")


def write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, default=str) + "\n")


STEPS = {"pair": pair, "speed": speed, "graph_vs_eager": graph_vs_eager, "grid": grid}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/gpu_check")
    parser.add_argument("--data-dir", default="data", help="the folder holding MNIST/raw/")
    parser.add_argument("--budget-s", type=float, default=540, help="all steps together")
    parser.add_argument("--pair-epochs", type=int, default=100)
    parser.add_argument("--grid-epochs", type=int, default=10)
    parser.add_argument("--color-vars", nargs="+", help="grid (default: sweep=reproduce's)")
    parser.add_argument("--seeds", nargs="+", help="grid (default: sweep=reproduce's)")
    parser.add_argument("--packs", default="1,7,21,42", help="pack widths for the speed step")
    parser.add_argument("--bench-steps", type=int, default=100)
    parser.add_argument("--graph-steps", type=int, default=300)
    parser.add_argument("--run-args", default="", help="extra overrides for every training run")
    parser.add_argument("--steps", default=",".join(STEPS), help="which steps, in this order")
    parser.add_argument("--dry-run", action="store_true", help="print each step's time, run none")
    args = parser.parse_args(argv)
    chosen = args.steps.split(",")
    if set(chosen) - set(STEPS):
        parser.error(f"--steps: choose from {', '.join(STEPS)}")
    seconds = plan(args)
    if args.dry_run:
        print(
            f"budget {args.budget_s:.0f} s; the steps in order (each also gets what an "
            f"earlier one leaves unused):"
        )
        for name in chosen:
            print(f"  {name:15s} {seconds[name]:5.0f} s")
        print(f"  {'total':15s} {sum(seconds[n] for n in chosen):5.0f} s")
        return
    check = Check(args)
    check.work.mkdir(parents=True, exist_ok=True)
    with (check.out / "log.txt").open("w") as check.log:
        versions(check)
        spent = 0.0
        for n, name in enumerate(chosen):
            due = sum(seconds[s] for s in chosen[: n + 1])  # this step ends by then
            budget = min(due - spent, check.left() - 10) if name != "grid" else check.left() - 10
            check.say(f"step {n + 1}, {name}: {budget:.0f} s")
            try:
                STEPS[name](check, budget)
            except Exception as err:  # the next step still runs
                check.summary[name] = {"error": f"{type(err).__name__}: {err}"}
                check.say(f"{name} failed: {err}")
            spent = time.monotonic() - check.start
        check.summary["wall_s"] = round(time.monotonic() - check.start)
        write_json(check.out / "summary.json", check.summary)
        with tarfile.open(check.out / "runs.tar.gz", "w:gz") as tar:
            tar.add(
                check.work,
                arcname="runs",
                filter=lambda info: None if info.name.endswith(".ckpt") else info,
            )
        shutil.rmtree(check.work)  # what comes back from a device: at most 8 files, 2 deep
        check.say("done")


if __name__ == "__main__":
    main()
