"""The CUDA-graph training step against the eager step, on the same device, from the same start.

Two packs of K official LNL runs (different seeds, lambda and mu per member) are built
identically and trained over the same batches, one with every step eager, one replayed from a
CUDA graph (``pack_runs(members, cuda_graph=True)``: warm-up, capture, replays, a recapture when
the learning rate changes, eager short batches). TF32 is off and deterministic algorithms on,
so that the two differ only if the replay does something the eager step does not; the result
is the largest difference over every weight, BatchNorm statistic, momentum buffer and epoch sum.

    python benchmarks/graph_vs_eager.py --device cuda --steps 300

On a CPU there is no graph (both paths run eagerly): the comparison then checks the script.
The last line is ``graph_vs_eager: identical`` or ``graph_vs_eager: max_abs_diff=...``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import warnings

import pytorch_lightning as pl
import step_throughput as bench
import torch
from torch.utils.data import DataLoader

from lnl_lightning.data.colored_mnist import pass_batch
from lnl_lightning.data.contract import BIAS_TARGET, IMAGE, LABEL
from lnl_lightning.engine.packed import pack_runs
from lnl_lightning.methods.lnl import LNLModule

MEMBERS = ((0, 0.01, 0.1), (1, 0.05, 0.2))  # seed, lambda, mu


def packed_batches(steps: int, members: int) -> list[dict[str, torch.Tensor]]:
    """``steps`` full batches, then a short one (as an epoch's last), in the packed layout."""
    batches = bench.make_batches(steps + 1)
    batches[-1] = {k: v[: bench.BATCH // 3] for k, v in batches[-1].items()}
    return [
        {
            IMAGE: b[IMAGE].repeat(1, members, 1, 1),
            LABEL: b[LABEL][:, None].expand(-1, members).contiguous(),
            BIAS_TARGET: b[BIAS_TARGET][:, None].expand(-1, members, -1, -1, -1).contiguous(),
            "bias_group": b["bias_group"][:, None].expand(-1, members).contiguous(),
        }
        for b in batches
    ]


def train(batches: list[dict], cuda_graph: bool, epochs: int) -> tuple[dict, int]:
    """Train a fresh pack over ``batches`` for ``epochs``; its state and the captures made."""
    scheduler = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    members = [
        LNLModule(
            *bench.nets(seed),
            bench.SPEC,
            lambda_=lam,
            mu=mu,
            optimizer=bench.sgd,
            scheduler=scheduler,
        )
        for seed, lam, mu in MEMBERS
    ]
    pack = pack_runs(members, cuda_graph=cuda_graph)
    trainer = pl.Trainer(
        accelerator=bench.DEVICE.type,
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        deterministic=True,
    )
    captures = []
    capture = pack._capture

    def counted(run, inputs):
        captures.append(len(inputs[LABEL]))
        return capture(run, inputs)

    pack._capture = counted
    trainer.fit(pack, DataLoader(batches, batch_size=None, collate_fn=pass_batch))
    state = {f"weights.{k}": v.detach().double().cpu() for k, v in pack.state_dict().items()}
    for i, optimizer in enumerate(trainer.optimizers):
        for j, p in enumerate(optimizer.param_groups[0]["params"]):
            buffer = optimizer.state.get(p, {}).get("momentum_buffer")
            if buffer is not None:
                state[f"momentum.{i}.{j}"] = buffer.double().cpu()
    return state, len(captures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="full batches per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="the lr halves each epoch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    bench.DEVICE = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 with float32
    torch.backends.cudnn.allow_tf32 = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning_fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    batches = packed_batches(args.steps, len(MEMBERS))
    eager, _ = train(batches, cuda_graph=False, epochs=args.epochs)
    graph, captures = train(batches, cuda_graph=True, epochs=args.epochs)
    graphs = bench.DEVICE.type == "cuda"
    print(
        f"{args.device}: {len(MEMBERS)} members, {args.epochs} epochs of {args.steps} full "
        f"batches + 1 short, TF32 off, deterministic; {captures} capture(s) "
        f"({'CUDA graph replays' if graphs else 'no CUDA graph on this device: both eager'})"
    )
    if eager.keys() != graph.keys():
        print(f"graph_vs_eager: different state keys: {sorted(eager.keys() ^ graph.keys())}")
        raise SystemExit(1)
    diffs = {
        k: float((eager[k] - graph[k]).abs().max()) if eager[k].numel() else 0.0 for k in eager
    }
    worst = max(diffs, key=diffs.get)
    scale = float(eager[worst].abs().max()) or 1.0
    moved = sum(1 for k in eager if diffs[k] > 0)
    if graphs and captures == 0:
        print("graph_vs_eager: no capture was made: the graph path did not run")
        raise SystemExit(1)
    if moved == 0:
        print(f"graph_vs_eager: identical ({len(eager)} tensors)")
    else:
        print(
            f"graph_vs_eager: max_abs_diff={diffs[worst]:.3g} "
            f"(relative {diffs[worst] / scale:.3g}) in {worst}; "
            f"{moved}/{len(eager)} tensors differ"
        )


if __name__ == "__main__":
    main()
