"""benchmarks/bench_commits.py: its table reads step_throughput.py's output as written."""

from __future__ import annotations

import importlib.util

from ..helpers.cli import REPO

spec = importlib.util.spec_from_file_location("bench_commits", REPO / "benchmarks/bench_commits.py")
bench_commits = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_commits)


def output(repeats: list[tuple[float, float]], pack: int) -> str:
    """A step_throughput.py output with (plain, lnl_official) images/s per repeat."""
    lines = [
        f"repeat {i + 1}/{len(repeats)}: plain {plain:.0f}, lnl_official {official:.0f}"
        for i, (plain, official) in enumerate(repeats)
    ]
    lines += [
        "torch 2.14.1, cpu, 2 threads, batch 128, 60 steps x 3 repeats (median images/s):",
        f"  plain             {repeats[0][0]:.0f} images/s   step time x1.00 of plain",
        f"  packed K=3        {pack // 3} images/s per member,       {pack} in all   (eager)",
    ]
    return "\n".join(lines) + "\n"


def test_parse_reads_each_repeat_and_each_pack():
    repeats, packs = bench_commits.parse(output([(3000, 1000), (1500, 600)], pack=420))
    assert repeats == [
        {"plain": 3000.0, "lnl_official": 1000.0},
        {"plain": 1500.0, "lnl_official": 600.0},
    ]
    assert packs == {"packed K=3 in all": 420.0}


def test_ratios_are_taken_within_a_repeat_not_between_medians():
    # before: per-repeat ratios 3, 2, 4 (median 3); the ratio of the medians would read
    # 2000 / 500 = 4.00, plain's swing between repeats deciding it.
    runs = {
        "before": [output([(3000, 1000), (1000, 500)], 420), output([(2000, 500)], 430)],
        "after": [output([(3000, 750), (1000, 250), (2000, 500)], 410)],
    }
    table = bench_commits.summary(runs)
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in table.splitlines()]
    rows = {row[0]: row[1:] for row in cells if len(row) == 4}
    assert rows["measure"] == ["before", "after", "Mann-Whitney p"]
    assert rows["ratio lnl_official_vs_plain, median (quartiles)"][:2] == [
        "3.00 (2.50-3.50)",
        "4.00 (4.00-4.00)",
    ]
    assert rows["plain images/s, median"] == ["2000", "2000", "1.00"]  # the same values
    assert rows["packed K=3 in all images/s, median"][:2] == ["425", "410"]
    assert "ratio lnl_vs_plain, median (quartiles)" not in rows  # no fused step measured
    assert table.splitlines()[0].startswith("2 step_throughput.py processes per commit")
    assert table.splitlines()[0].endswith(
        "each: torch 2.14.1, cpu, 2 threads, batch 128, 60 steps x 3 repeats (median images/s):"
    )


def test_saved_outputs_are_read_back_per_commit_in_the_order_given(tmp_path):
    for round_, commit, plain in [(1, "aaa", 3000), (1, "bbb", 2000), (2, "aaa", 1000)]:
        (tmp_path / f"{round_}_{commit}.txt").write_text(output([(plain, 500)], 300))
    runs = bench_commits.saved_runs(tmp_path, ["bbb", "aaa"])
    assert list(runs) == ["bbb", "aaa"]
    assert [bench_commits.parse(out)[0][0]["plain"] for out in runs["aaa"]] == [3000, 1000]
