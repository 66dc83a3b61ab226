"""Each committed ``report.md`` whose run folders are committed is what the report makes of
them today: a change to loading, grouping or formatting shows here, and the committed
reports are regenerated with it (the commands below, the README's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lnl_lightning.report import main

RESULTS = Path(__file__).resolve().parents[1] / "results"
COMPARE = ["compare_colored_mnist_3ep/baseline", "compare_colored_mnist_3ep/lnl"]
SIX_METHODS = ["baseline", "lnl", "blind_eye", "gray", "group_dro", "lff"]

# report folder: (the folders given to the report, below results/; further arguments)
REPORTS = {
    "compare_paper_data_3ep": (["compare_paper_data_3ep/runs"], []),
    "colored_mnist_2+2ep_gpu": (["colored_mnist_2+2ep_gpu"], []),
    "colored_mnist_20+10ep": (["colored_mnist_20+10ep"], []),
    "compare_colored_mnist_3ep": (
        [f"compare_colored_mnist_3ep/{m}" for m in SIX_METHODS],
        ["--methods", *SIX_METHODS],
    ),
    "mu_official_3ep": ([*COMPARE, "mu_official_3ep"], []),
    "colour_noise_3ep": ([*COMPARE, "colour_noise_3ep"], []),
    # model selection: a lambda x mu grid, each rule's pick rerun on more seeds
    "selection_3ep/report": (["selection_3ep/runs"], []),
    # the paper's schedule beside the 3-epoch grid (its figure is the README's)
    "paper_schedule_cpu/report": (
        [
            "paper_schedule_cpu/runs",
            "paper_schedule_cpu/runs_s020_seed1",
            "paper_schedule_cpu/runs_s020_seed2",
            "paper_schedule_cpu/runs_s050_seed0",
            "compare_paper_data_3ep/runs",
        ],
        [],
    ),
}


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_a_committed_report_is_what_its_committed_runs_give_today(name, tmp_path):
    folders, arguments = REPORTS[name]
    main([*(str(RESULTS / folder) for folder in folders), *arguments, "--out", str(tmp_path)])
    assert (tmp_path / "report.md").read_text() == (RESULTS / name / "report.md").read_text()
