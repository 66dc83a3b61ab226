"""Sweeps through the CLI, W&B offline runs read back, and the comparison report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from lnl_lightning.config import CONFIG_MODULE
from lnl_lightning.report import collect, epoch_curve, summarize, write_report

from ..helpers.cli import REPO, run_cli, run_ok
from ..helpers.wandb_records import read_run

SWEEPS = sorted(
    p.name.removesuffix(".yaml")
    for p in resources.files(CONFIG_MODULE).joinpath("sweep").iterdir()
    if p.name.endswith(".yaml")
)


def job_dirs(root: Path) -> list[Path]:
    """A multirun's job folders: each holds its .hydra/ once its checks passed, or only the
    error.json of a job refused before that."""
    marks = [*root.rglob(".hydra"), *root.rglob("error.json")]
    return sorted({p.parent for p in marks if p.parent.name.isdigit()})


@pytest.fixture(scope="module")
def lambda_sweep(tmp_path_factory, mnist_dir) -> Path:
    """A two-value lambda multirun, fast mode, logged to W&B offline (no credentials)."""
    root = tmp_path_factory.mktemp("sweep")
    run_ok(
        "-m",
        "experiment=colored_mnist",
        "debug=fast",
        "model.lambda_=0,0.1",
        "logger=wandb",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=32",
        f"paths.log_dir={root}",
        "print_config=false",
        cwd=root,
        WANDB_MODE=None,
        WANDB_API_KEY=None,
        HOME=str(root),
    )
    return root


def test_each_job_has_its_folder_metrics_and_wandb_run(lambda_sweep):
    jobs = job_dirs(lambda_sweep)
    assert [j.name for j in jobs] == ["0", "1"] and jobs[0].parent == jobs[1].parent
    for job, lambda_ in zip(jobs, (0.0, 0.1), strict=True):
        summary = json.loads((job / "metrics.json").read_text())
        runs = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, "one W&B run per job"
        run = read_run(runs[0])
        assert run["group"] == "colored_mnist" and run["job_type"] == "lnl"
        assert run["tags"] == ["colored_mnist"]
        assert run["config"]["lambda"] == lambda_ and run["config"]["mu"] == 0.1
        assert run["config"]["method"] == "lnl" and run["config"]["color_var"] == 0.02
        assert run["config"]["seed"] == 0
        assert run["summary"]["test/acc"] == pytest.approx(summary["metrics"]["test/acc"])
        for logged in ("group_acc_table/test", "group_acc/test", "samples/train", "samples/test"):
            assert any(k.startswith(logged + "/") for k in run["summary"]), logged
        assert (job / "samples_train.png").stat().st_size > 0


def test_report_of_the_sweep(lambda_sweep, tmp_path):
    sweep_dir = job_dirs(lambda_sweep)[0].parent
    report = write_report(sweep_dir, tmp_path / "report")
    text = report.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| colored_mnist")]
    assert len(rows) == 2
    assert "| lnl | official | 0 | 0.1 |" in rows[0] and "| lnl | official | 0.1 | 0.1 |" in rows[1]
    for name in ("acc_vs_lambda.png", "acc_vs_color_var.png", "bias_acc_vs_lambda.png"):
        assert (tmp_path / "report" / name).stat().st_size > 5000
        assert f"![{name}]({name})" in text


DEFAULT_DATA = {"palette": "supplement", "stroke": "binary", "color_noise": "resample"}


def write_run(
    folder: Path,
    method: str,
    lambda_: float,
    seed: int,
    acc: float,
    hydra_only: bool = False,
    data: dict | None = None,
    mu: float | None = None,
) -> None:
    (folder / ".hydra").mkdir(parents=True)
    if hydra_only:
        return
    config = {
        "task_name": "study",
        "method": method,
        "seed": seed,
        "model": {
            "lambda_": lambda_,
            "mu": mu if mu is not None else (0.1 if method == "lnl" else 0.0),
        },
        "data": data or {"color_var": 0.03, **DEFAULT_DATA},
    }
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    metrics = {"test/acc": acc, "test/bias_acc": 0.5, "val/acc": 0.99}
    (folder / "metrics.json").write_text(
        json.dumps({"metrics": metrics, "method": method, "task_name": "study"})
    )


def write_curve(folder: Path, metrics_csv: str, version: int = 0) -> None:
    """A run's per-epoch CSV log, as Lightning's CSV logger writes it."""
    csv_dir = folder / "csv" / f"version_{version}"
    csv_dir.mkdir(parents=True)
    (csv_dir / "metrics.csv").write_text(metrics_csv)


def curve_section(report_text: str) -> str:
    """The report's per-epoch table."""
    return report_text.split("## Test accuracy after each epoch")[1].split("## Plots")[0]


def test_report_averages_over_seeds_and_lists_unfinished_jobs(tmp_path):
    write_run(tmp_path / "a" / "0", "lnl", 0.01, 0, 0.70)
    write_run(tmp_path / "a" / "1", "lnl", 0.01, 1, 0.80)
    write_run(tmp_path / "b" / "0", "baseline", 0.0, 0, 0.40)
    write_run(tmp_path / "b" / "1", "lnl", 0.1, 0, 0.0, hydra_only=True)  # still running
    write_run(tmp_path / "b" / "2", "lnl", 0.1, 1, 0.0, hydra_only=True)
    (tmp_path / "b" / "2" / "error.json").write_text(json.dumps({"error": "DataError: boom"}))
    runs, incomplete = collect(tmp_path)
    rows = summarize(runs)
    lnl = next(r for r in rows if r.fields["method"] == "lnl")
    assert lnl.mean("test/acc") == pytest.approx(0.75) and lnl.std("test/acc") == pytest.approx(
        0.0707, abs=1e-4
    )
    assert sorted(lnl.seeds) == [0, 1]
    assert {(j["status"], j["error"]) for j in incomplete} == {
        ("running or stopped", ""),
        ("refused", "DataError: boom"),  # a check stopped it before it trained
    }
    text = write_report(tmp_path).read_text()
    assert "0.7500 ± 0.0707" in text and "| 2 | 0,1 |" in text
    assert "DataError: boom" in text and "running or stopped" in text
    comparison = text.split("against the published numbers")[1].split("## Plots")[0]
    assert "| σ² | 0.02 | 0.025 | 0.03 | 0.035 | 0.04 | 0.045 | 0.05 |" in comparison
    assert "| LNL | – | – | 0.7500 ± 0.0707 (2) |" in comparison  # official weights only
    assert "| LNL (published) | 0.8185 | 0.8854 | 0.9137 |" in comparison


def test_report_shows_every_method_beside_the_four_published_rows(tmp_path):
    methods = ["baseline", "lnl", "blind_eye", "gray", "group_dro", "lff"]
    for i, method in enumerate(methods):
        lambda_ = 0.01 if method == "lnl" else 0.0
        write_run(
            tmp_path / method / "0",
            method,
            lambda_,
            0,
            0.1 * (i + 1),
            data={"color_var": 0.02, **DEFAULT_DATA},
        )
    text = write_report(tmp_path).read_text()
    comparison = text.split("against the published numbers")[1].split("## Plots")[0]
    for name, acc in (("baseline", 0.1), ("LNL", 0.2), ("BlindEye", 0.3), ("Gray", 0.4)):
        assert f"| {name} | {acc:.4f} (1) |" in comparison, name
    assert "| GroupDRO | 0.5000 (1) |" in comparison
    assert "| LfF | 0.6000 (1) |" in comparison
    assert "| BlindEye (published) | 0.6741 |" in comparison
    assert "| Gray (published) | 0.8374 |" in comparison
    # --methods: only those
    from lnl_lightning.report import main

    main([str(tmp_path), "--out", str(tmp_path / "two"), "--methods", "gray", "lff"])
    table = (tmp_path / "two" / "report.md").read_text().split("## Colored MNIST")[0]
    rows = [line for line in table.splitlines() if line.startswith("| study")]
    assert len(rows) == 2 and "| gray |" in rows[0] and "| lff |" in rows[1]


def table_header(report: str) -> str:
    """The header line of the report's main table."""
    return next(line for line in report.splitlines() if line.startswith("| "))


def test_report_keeps_apart_runs_of_other_schedules(tmp_path):
    for epochs, acc in ((2, 0.2), (10, 0.3)):
        folder = tmp_path / str(epochs)
        write_run(folder, "lnl", 0.01, 0, acc)
        summary = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps({**summary, "epochs": epochs}))
    rows = summarize(collect(tmp_path)[0])
    assert [(r.fields["epochs"], r.mean("test/acc")) for r in rows] == [(2, 0.2), (10, 0.3)]
    text = write_report(tmp_path).read_text()
    assert "| epochs |" in table_header(text)  # a column of the main table
    assert "LNL, 2 epochs" in text and "LNL, 10 epochs" in text  # and of the published one


def test_report_keeps_apart_runs_of_other_data(tmp_path):
    # runs from before data.stroke and data.color_noise existed: ReBias colours ("paper"),
    # intensity strokes, clipped noise; then one with resampled noise, the default, the arrays
    old = {"color_var": 0.02, "palette": "paper"}
    datas = (
        (old, 0.2),
        ({**old, "color_noise": "resample"}, 0.3),
        (
            {
                "color_var": 0.02,
                "palette": "supplement",
                "stroke": "binary",
                "color_noise": "resample",
            },
            0.4,
        ),
        ({"color_var": 0.02, "source": "arrays", "palette": "supplement"}, 0.5),
    )
    for i, (data, acc) in enumerate(datas):
        folder = tmp_path / str(i)
        write_run(folder, "baseline", 0.0, 0, acc, data=data)
        write_curve(folder, f"epoch,step,test/acc,test/bias_acc\n0,10,{acc},0.5\n")
    rows = summarize(collect(tmp_path)[0])
    assert sorted((r.fields["data"], r.mean("test/acc")) for r in rows) == [
        ("arrays", 0.5),
        ("rebias intensity clip", 0.2),
        ("rebias intensity resample", 0.3),
        ("supplement binary resample", 0.4),
    ]
    text = write_report(tmp_path).read_text()
    assert "| data |" in table_header(text)
    comparison = text.split("against the published numbers")[1].split("## Plots")[0]
    assert "| baseline | 0.4000 (1) |" in comparison  # the default data: no suffix
    assert "| baseline, rebias intensity clip data | 0.2000 (1) |" in comparison
    assert "| baseline, arrays data | 0.5000 (1) |" in comparison
    curves = curve_section(text)
    assert "baseline, arrays data, σ²=0.02" in curves
    assert "baseline, rebias intensity resample data, σ²=0.02" in curves


def test_report_keeps_apart_runs_of_other_method_settings(tmp_path):
    for weight, acc in ((0.5, 0.3), (1.0, 0.7)):
        folder = tmp_path / str(weight)
        write_run(folder, "blind_eye", 0.0, 0, acc)
        config = yaml.safe_load((folder / "config_resolved.yaml").read_text())
        config["model"] = {"confusion_weight": weight, "optimizer": {"lr": 0.01}}
        (folder / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    rows = summarize(collect(tmp_path)[0])
    assert [r.fields["settings"] for r in rows] == ["confusion_weight=0.5", "confusion_weight=1.0"]
    assert [r.mean("test/acc") for r in rows] == [0.3, 0.7]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"model": {"optimizer": {"lr": 0.1}}}, "model.optimizer.lr=0.1"),
        ({"model": {"optimizer": {"momentum": 0.5}}}, "model.optimizer.momentum=0.5"),
        ({"trainer": {"limit_train_batches": 0.1}}, "trainer.limit_train_batches=0.1"),
        ({"data": {"seed": 3}}, "data.seed=3"),
        ({"data": {"grayscale": True}}, "data.grayscale=True"),
        ({"data": {"batch_size": 64}}, "data.batch_size=64"),
    ],
)
def test_report_keeps_apart_runs_differing_in_any_setting_and_names_it(change, named, tmp_path):
    for seed in (0, 1):  # two seeds of the usual run, two of the changed one
        write_run(tmp_path / f"usual{seed}", "lnl", 0.01, seed, 0.3)
        folder = tmp_path / f"changed{seed}"
        write_run(folder, "lnl", 0.01, seed, 0.7)
        config = OmegaConf.load(folder / "config_resolved.yaml")
        OmegaConf.save(OmegaConf.merge(config, change), folder / "config_resolved.yaml")
        (folder / "logs").mkdir()  # where a file lies does not tell runs apart
    rows = summarize(collect(tmp_path)[0])
    assert sorted((r.mean("test/acc"), len(r.seeds)) for r in rows) == [(0.3, 2), (0.7, 2)]
    changed = next(r for r in rows if r.mean("test/acc") == 0.7)
    assert named in changed.fields["settings"]


def test_report_leaves_out_evaluations_of_a_checkpoint(tmp_path):
    write_run(tmp_path / "run", "lnl", 0.01, 0, 0.3)
    write_run(tmp_path / "eval", "lnl", 0.01, 0, 0.9)
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    summary.update(kind="evaluation", tested_weights=str(tmp_path / "run" / "last.ckpt"))
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(summary))
    rows = summarize(collect(tmp_path)[0])
    assert [(r.mean("test/acc"), len(r.seeds)) for r in rows] == [(0.3, 1)]


def test_report_sets_the_rebias_protocol_against_its_published_numbers(tmp_path):
    for seed, acc in ((0, 0.30), (1, 0.50)):
        data = {"protocol": "rebias", "rho": 0.997}
        write_run(tmp_path / str(seed), "lnl", 0.01, seed, acc, data=data)
    text = write_report(tmp_path).read_text()
    comparison = text.split("ReBias protocol: unbiased test accuracy")[1]
    assert "| ρ | 0.99 | 0.995 | 0.997 | 0.999 |" in comparison
    assert "| LNL | – | – | 0.4000 ± 0.1414 (2) | – |" in comparison
    assert "| ReBias (published) | 0.8810 | 0.7600 | 0.6420 | 0.2270 |" in comparison


def test_report_cli_puts_several_folders_in_one_report(tmp_path):
    from lnl_lightning.report import main

    write_run(tmp_path / "first" / "0", "baseline", 0.0, 0, 0.40)
    write_run(tmp_path / "second" / "0", "lnl", 0.01, 0, 0.70)
    main([str(tmp_path / "first"), str(tmp_path / "second"), "--out", str(tmp_path / "both")])
    text = (tmp_path / "both" / "report.md").read_text()
    assert "2 finished run(s) in 2 configuration(s)" in text


def test_report_cli_rejects_a_missing_folder(tmp_path, capsys):
    from lnl_lightning.report import main

    with pytest.raises(SystemExit):
        main([str(tmp_path / "nope")])
    assert "is not a folder" in capsys.readouterr().err


def test_report_cli_names_an_unwritable_out_folder(tmp_path, capsys):
    from lnl_lightning.report import main

    write_run(tmp_path / "runs" / "a", "lnl", 0.01, 0, 0.3)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "runs"), "--out", str(tmp_path / "a_file" / "report")])
    assert exit_.value.code == 2
    assert f"--out: cannot write into {tmp_path / 'a_file' / 'report'}" in capsys.readouterr().err


def test_a_failing_job_does_not_stop_the_sweep_but_fails_the_command(tmp_path, mnist_dir):
    def sweep(color_vars: str):
        return run_cli(
            "-m",
            "experiment=colored_mnist",
            "debug=fast",
            f"data.color_var={color_vars}",
            f"data.data_dir={mnist_dir}",
            "data.batch_size=32",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "print_config=false",
            cwd=tmp_path,
        )

    result = sweep("-1,0.02")
    assert result.returncode == 1, result.stderr[-2000:]  # scripts see that a job failed
    failed, done = job_dirs(tmp_path)
    assert (
        "data.color_var must be in (0, 1]"
        in json.loads((failed / "error.json").read_text())["error"]
    )
    assert (done / "metrics.json").is_file()
    assert "1 job(s) completed, 1 failed" in result.stdout + result.stderr
    # the failed job run again, now right, in the same folder: its old error no longer counts
    again = sweep("0.03,0.02")
    assert again.returncode == 0, again.stderr[-2000:]
    assert not (failed / "error.json").exists() and (failed / "metrics.json").is_file()


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_configs_compose(sweep, tmp_path):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"sweep={sweep}", f"paths.output_dir={tmp_path}"],
            return_hydra_config=True,
        )
    assert cfg.task_name != "train", "a sweep names its study"
    assert cfg.hydra.sweeper.params, "a sweep names what it sweeps"
    assert str(cfg.optimized_metric).startswith(("val/", "val_random/"))  # never test


@pytest.mark.slow  # make test-slow (run by CI)
def test_optuna_maximises_a_validation_metric(tmp_path, mnist_dir):
    run_ok(
        "-m",
        "sweep=optuna",
        "hydra.sweeper.n_trials=2",
        "debug=fast",
        f"data.data_dir={mnist_dir}",
        "data.batch_size=32",
        f"paths.log_dir={tmp_path}",
        "print_config=false",
        cwd=tmp_path,
    )
    results = yaml.safe_load(next(tmp_path.rglob("optimization_results.yaml")).read_text())
    assert set(results["best_params"]) == {"model.lambda_", "model.mu"}
    values = [
        json.loads(p.read_text())["metrics"]["val_random/acc"]
        for p in tmp_path.rglob("metrics.json")
    ]  # the unbiased rule: held-out digits coloured at random
    assert len(values) == 2 and results["best_value"] == pytest.approx(max(values))


def run_make(target: str, *variables: str) -> subprocess.CompletedProcess:
    """``make <target>`` with the test's Python (installed already), W&B off."""
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            target,
            f"PY={sys.executable}",
            f"STAMP={REPO / 'Makefile'}",
            *variables,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,  # a hang guard only
        env={**os.environ, "WANDB_MODE": "disabled"},
    )


@pytest.mark.slow  # make test-slow (run by CI)
def test_make_reproduce_runs_baseline_then_warm_lnl_beside_scratch(tmp_path, mnist_dir):
    """The two-phase protocol through `make reproduce`, on a generated MNIST, then its report."""
    out, report = tmp_path / "runs", tmp_path / "report"
    result = run_make(
        "reproduce",
        f"DATA_DIR={mnist_dir}",
        "EPOCHS=1",
        "LNL_EPOCHS=1",
        "COLOR_VARS=0.02",
        "SEEDS=0",
        "SCRATCH=1",
        f"REPRO_DIR={out}",
        f"REPORT_DIR={report}",
        "ARGS=debug=fast data.batch_size=32 print_config=false",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for phase in ("baseline", "lnl_warm", "lnl_scratch"):
        assert (out / phase / "cv0.02_seed0" / "metrics.json").is_file(), phase
    warm = json.loads((out / "lnl_warm" / "cv0.02_seed0" / "metrics.json").read_text())
    assert warm["epochs"] == 1
    config = yaml.safe_load(
        (out / "lnl_warm" / "cv0.02_seed0" / "config_resolved.yaml").read_text()
    )
    assert config["model"]["init_from"] == str(
        out / "baseline" / "cv0.02_seed0" / "checkpoints" / "last.ckpt"
    )
    assert "Warm-started the f+g optimizer state" in (out / "lnl_warm.log").read_text()
    scratch = json.loads((out / "lnl_scratch" / "cv0.02_seed0" / "metrics.json").read_text())
    assert scratch["epochs"] == 2  # as many epochs as baseline + warm LNL

    text = (report / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| reproduce_colored_mnist")]
    assert len(rows) == 3
    assert any("| baseline |" in r and "| scratch | 1 | 1 | 0 |" in r for r in rows)
    assert any("| lnl |" in r and "| warm | 1 | 1 | 0 |" in r for r in rows)
    assert any("| lnl |" in r and "| scratch | 2 | 1 | 0 |" in r for r in rows)
    # the curves: the warm run continues the baseline's epoch count
    curves = curve_section(text)
    header = next(line for line in curves.splitlines() if line.startswith("| epochs"))
    names = [c.strip() for c in header.strip("|").split("|")][1:]
    by_epoch = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")][1:]
        for line in curves.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    }
    warm_column = names.index("LNL warm-started, σ²=0.02")
    assert by_epoch["1"][warm_column] == "–" and by_epoch["2"][warm_column] != "–"
    baseline_column = names.index("baseline, σ²=0.02")
    assert by_epoch["1"][baseline_column] != "–" and by_epoch["2"][baseline_column] == "–"
    assert (report / "curves.png").stat().st_size > 5000


@pytest.mark.slow  # make test-slow (run by CI)
def test_make_compare_runs_each_method_and_reports_them(tmp_path, mnist_dir):
    out, report = tmp_path / "runs", tmp_path / "report"
    result = run_make(
        "compare",
        f"DATA_DIR={mnist_dir}",
        "EPOCHS=1",
        "COLOR_VARS=0.02",
        "SEEDS=0",
        "METHODS=gray lff",
        f"COMPARE_DIR={out}",
        f"COMPARE_REPORT={report}",
        "ARGS=debug=fast data.batch_size=32",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    gray = yaml.safe_load((out / "gray" / "cv0.02_seed0" / "config_resolved.yaml").read_text())
    assert gray["data"]["grayscale"] is True and gray["method"] == "gray"
    lff = json.loads((out / "lff" / "cv0.02_seed0" / "metrics.json").read_text())
    assert lff["method"] == "lff" and lff["epochs"] == 1
    table = (report / "report.md").read_text().split("## Colored MNIST")[0]
    rows = [line for line in table.splitlines() if line.startswith("| colored_mnist")]
    assert len(rows) == 2 and "| gray |" in rows[0] and "| lff |" in rows[1]


def test_report_draws_the_curve_of_a_run_still_going(tmp_path):
    folder = tmp_path / "lnl" / "cv0.02_seed0"
    write_run(folder, "lnl", 0.01, 0, 0.0, hydra_only=True)
    config = {"task_name": "study", "method": "lnl", "seed": 0, "data": {"color_var": 0.02}}
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    write_curve(
        folder,
        "epoch,step,test/acc,test/bias_acc,train/acc\n0,10,0.25,0.5,\n0,10,,,0.9\n1,20,0.5,0.4,\n",
    )
    text = write_report(tmp_path).read_text()
    curves = curve_section(text)
    assert "| epochs | LNL, σ²=0.02 (unfinished) |" in curves
    assert "| 1 | 0.2500 (0.500) |" in curves and "| 2 | 0.5000 (0.400) |" in curves
    assert "running or stopped" in text


def test_report_curves_read_resumed_logs_in_version_order(tmp_path):
    folder = tmp_path / "run"
    write_run(folder, "baseline", 0.0, 0, 0.5, data={"color_var": 0.02, **DEFAULT_DATA})
    header = "epoch,step,test/acc,test/bias_acc\n"
    for version in range(11):  # resumed ten times; epoch 5 logged again by the last one
        epochs = [version] + ([5] if version == 10 else [])
        rows = "".join(f"{e},{e},{0.1 + version / 100},0.5\n" for e in epochs)
        write_curve(folder, header + rows, version=version)
    curve = epoch_curve(folder)
    assert sorted(curve) == list(range(11))
    assert curve[5]["test/acc"] == pytest.approx(0.20)  # version 10's, read after version 5's
    assert curve[2]["test/acc"] == pytest.approx(0.12)


def test_report_curves_average_seeds_only(tmp_path):
    """Two mu of one method are two curves; two seeds of one mu are one curve, averaged."""
    for name, mu, seed, acc in (("a", 0.1, 0, 0.2), ("b", 0.1, 1, 0.4), ("c", 1.0, 0, 0.9)):
        folder = tmp_path / name
        write_run(folder, "lnl", 0.01, seed, acc, data={"color_var": 0.02, **DEFAULT_DATA}, mu=mu)
        write_curve(folder, f"epoch,step,test/acc,test/bias_acc\n0,10,{acc},0.5\n")
    text = write_report(tmp_path).read_text()
    curves = curve_section(text)
    assert "| epochs | LNL, μ=0.1, σ²=0.02 | LNL, μ=1.0, σ²=0.02 |" in curves
    assert "| 1 | 0.3000 (0.500) | 0.9000 (0.500) |" in curves


def test_report_pairs_each_method_with_the_baseline_of_its_seed(tmp_path):
    accs = {("baseline", 0): 0.20, ("baseline", 1): 0.30, ("lnl", 0): 0.25, ("lnl", 1): 0.32}
    for (method, seed), acc in accs.items():
        write_run(tmp_path / f"{method}{seed}", method, 0.01 if method == "lnl" else 0.0, seed, acc)
    # another sigma^2 has no baseline: no pair
    write_run(tmp_path / "lnl_other", "lnl", 0.01, 0, 0.9, data={"color_var": 0.05, **DEFAULT_DATA})
    text = write_report(tmp_path).read_text()
    paired = text.split("## Paired differences from the baseline")[1].split("##")[0]
    (line,) = [row for row in paired.splitlines() if row.startswith("| LNL")]
    assert "color_var=0.03" in line and "| 0,1 |" in line
    assert "+0.0350 ± 0.0212 (+0.0500, +0.0200)" in line
    assert "color_var=0.05" not in paired


def test_paired_rows_of_one_method_name_the_settings_that_tell_them_apart(tmp_path):
    write_run(tmp_path / "baseline", "baseline", 0.0, 0, 0.20)
    for mu, acc in ((0.1, 0.25), (0.3, 0.40)):
        write_run(tmp_path / f"lnl_mu{mu}", "lnl", 0.01, 0, acc, mu=mu)
    text = write_report(tmp_path).read_text()
    paired = text.split("## Paired differences from the baseline")[1].split("##")[0]
    rows = sorted(row for row in paired.splitlines() if row.startswith("| LNL"))
    assert len(rows) == 2
    assert "mu=0.1," in rows[0] and "+0.0500 (+0.0500)" in rows[0]
    assert "mu=0.3," in rows[1] and "+0.2000 (+0.2000)" in rows[1]


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (["LNL_DATA_DIR=/mnist/here"], "data.data_dir=/mnist/here"),  # as the README offers
        (["LNL_DATA_DIR=/mnist/here", "DATA_DIR=/wins"], "data.data_dir=/wins"),
        ([], "data.data_dir=data"),
    ],
)
def test_make_targets_read_the_data_folder_from_lnl_data_dir(variables, expected):
    for target in ("train", "compare", "reproduce"):
        dry = run_make(target, "-n", *variables)
        assert dry.returncode == 0, dry.stderr
        assert expected in dry.stdout, (target, dry.stdout[:2000])


def test_make_install_takes_a_torch_index_for_the_cpu_wheels():
    index = "https://download.pytorch.org/whl/cpu"
    dry = run_make("install", "-n", f"TORCH_INDEX={index}", "STAMP=/nonexistent/stamp")
    lines = dry.stdout.splitlines()
    torch_line = next(i for i, line in enumerate(lines) if f"--index-url {index}" in line)
    assert "install --quiet torch torchvision" in lines[torch_line]
    assert torch_line < next(i for i, line in enumerate(lines) if "-e '.[dev]'" in line)
    plain = run_make("install", "-n", "STAMP=/nonexistent/stamp").stdout
    assert "--index-url" not in plain and "-e '.[dev]'" in plain


def test_make_studies_take_a_selection_rule_for_every_method():
    for target in ("compare", "reproduce"):
        dry = run_make(target, "-n", "SELECT=unbiased")
        assert dry.returncode == 0, dry.stderr
        assert "selection=unbiased data.val_colors=both" in dry.stdout, (target, dry.stdout)
        assert "selection=" not in run_make(target, "-n").stdout  # the default: no rule given


def test_make_train_warns_of_hours_then_prints_the_pair_side_by_side(tmp_path, mnist_dir):
    dry = run_make("train", "-n")
    assert "hours on a CPU" in dry.stdout and "lnl_lightning.report" in dry.stdout
    quick = run_make("train", "-n", "ARGS=trainer.max_epochs=2")
    assert "hours on a CPU" not in quick.stdout
    result = run_make(
        "train",
        f"DATA_DIR={mnist_dir}",
        f"TRAIN_DIR={tmp_path / 'train'}",
        "ARGS=debug=fast",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.split("baseline vs LNL")[1]
    assert "| baseline |" in table and "| lnl |" in table and "test/acc" in table
