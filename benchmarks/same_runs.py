"""Are two sets of runs the same? ``python benchmarks/same_runs.py DIR_A DIR_B``.

For every run folder below DIR_A (one with a ``metrics.json``) and the folder at the same
relative path below DIR_B: are the final metrics equal, and are all tensors of
``checkpoints/last.ckpt``'s state_dict bit-identical? Prints one line per run and exits with
1 if any differs. Used to show that a refactor left a method's numbers unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def compare(a: Path, b: Path) -> tuple[bool, str]:
    metrics_a = json.loads((a / "metrics.json").read_text())["metrics"]
    metrics_b = json.loads((b / "metrics.json").read_text())["metrics"]
    differing = sorted(
        k for k in metrics_a.keys() | metrics_b.keys() if metrics_a.get(k) != metrics_b.get(k)
    )
    state_a = torch.load(a / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    state_b = torch.load(b / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    tensors = sorted(
        k
        for k in state_a.keys() | state_b.keys()
        if k not in state_a or k not in state_b or not torch.equal(state_a[k], state_b[k])
    )
    same = not differing and not tensors
    text = (
        f"{len(metrics_a)} metrics equal, {len(state_a)} tensors bit-identical"
        f" (test/acc {metrics_a.get('test/acc'):.4f})"
        if same
        else f"metrics differing: {differing}; tensors differing: {tensors[:5]}"
    )
    return same, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    all_same = True
    for summary in sorted(args.first.rglob("metrics.json")):
        run = summary.parent.relative_to(args.first)
        other = args.second / run
        if not (other / "metrics.json").is_file():
            print(f"{run}: missing in {args.second}")
            all_same = False
            continue
        same, text = compare(summary.parent, other)
        all_same &= same
        print(f"{run}: {'same' if same else 'DIFFERENT'}: {text}")
    sys.exit(0 if all_same else 1)


if __name__ == "__main__":
    main()
