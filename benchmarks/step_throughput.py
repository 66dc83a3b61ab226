"""Images/s of the training step on the Colored MNIST net at batch 128 (``make bench``).

Measured in one process, variants interleaved over several repeats so that machine noise
hits all of them; each figure is the median over repeats:

- plain:        bare PyTorch, cross-entropy step of f+g (no h at all)
- baseline:     the LightningModule with lambda = mu = 0 (f+g step plus the h probe)
- lnl_official: the LightningModule, official two-pass LNL step
- lnl_fused:    the LightningModule, fused one-pass LNL step (model.step=fused)
- bare_fused:   the fused LNL step as a bare PyTorch loop, no Lightning

The last line is ``ratios: lnl_vs_plain=X.XX lightning_vs_bare=Y.YY``: the time of a fused
LNL step over a plain step, and Lightning's loop over the bare loop (same fused step).

Then packs (``--packs 1,7,21``): K official LNL runs trained as one packed network
(:func:`lnl_lightning.engine.packed.pack_runs`, with ``cuda_graph=True``: replayed from a
CUDA graph on a GPU); K = 1 is ``perf=fast``. Each prints the images/s of one member and of all K.

    python benchmarks/step_throughput.py [--steps 60] [--repeats 5] [--threads 2] [--device cuda]

``--device cuda`` (``make bench ARGS="--device cuda"``) measures on the GPU, with the batches
already on it, and prints the same ratios and absolute images/s. ``--profile FILE`` then
profiles the official LNL step in Lightning's loop (torch.profiler) and writes the table of
operators by self CPU time, and by device time on a GPU, into FILE.
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.data import DataLoader

from lnl_lightning.data.colored_mnist import pass_batch
from lnl_lightning.data.contract import BIAS_TARGET, IGNORE_INDEX, IMAGE, LABEL, BiasSpec
from lnl_lightning.engine.callbacks import TrainThroughput
from lnl_lightning.engine.packed import pack_runs
from lnl_lightning.methods.lnl import LNLModule, bias_cross_entropy, negative_entropy
from lnl_lightning.nets import builders
from lnl_lightning.nets.gradient_reversal import grad_reverse

BATCH = 128
SPEC = BiasSpec(10, 10, 8, tuple((c, c) for c in range(10)))


DEVICE = torch.device("cpu")


def elapsed_since(start: float) -> float:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def make_batches(steps: int) -> list[dict[str, torch.Tensor]]:
    """Colored-MNIST-shaped batches: sparse strokes on black, background ignored by h."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        images = torch.rand(BATCH, 3, 28, 28, generator=g) * (
            torch.rand(BATCH, 1, 28, 28, generator=g) > 0.8
        )
        target = (images[:, :, 1::2, 1::2] * 255).long() // 32
        target[images[:, :, 1::2, 1::2] == 0] = IGNORE_INDEX
        batch = {
            IMAGE: images,
            LABEL: torch.randint(0, 10, (BATCH,), generator=g),
            BIAS_TARGET: target,
            "bias_group": torch.randint(0, 10, (BATCH,), generator=g),
        }
        batches.append({k: v.to(DEVICE) for k, v in batch.items()})
    return batches


def sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def nets(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    return (
        builders.mnist_feature_extractor().to(DEVICE),
        builders.mnist_label_head(10).to(DEVICE),
        builders.PixelColorHead().to(DEVICE),
    )


def bare_plain(batches: list[dict]) -> float:
    f, g, _ = nets()
    opt = sgd([*f.parameters(), *g.parameters()])
    start = time.perf_counter()
    for batch in batches:
        loss = F.cross_entropy(g(f(batch[IMAGE])), batch[LABEL])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return len(batches) * BATCH / elapsed_since(start)


def bare_fused(batches: list[dict], lambda_: float = 0.01, mu: float = 0.1) -> float:
    f, g, h = nets()
    opt_main, opt_bias = sgd([*f.parameters(), *g.parameters()]), sgd(h.parameters())
    start = time.perf_counter()
    for batch in batches:
        features = f(batch[IMAGE])
        loss = F.cross_entropy(g(features), batch[LABEL])
        frozen = {name: p.detach() for name, p in h.named_parameters()}
        loss = loss + lambda_ * negative_entropy(functional_call(h, frozen, (features,)))
        bias_logits = h(grad_reverse(features, mu))
        loss = loss + bias_cross_entropy(bias_logits, batch[BIAS_TARGET])
        opt_main.zero_grad()
        opt_bias.zero_grad()
        loss.backward()
        opt_main.step()
        opt_bias.step()
    return len(batches) * BATCH / elapsed_since(start)


def lightning(batches: list[dict], **model_kwargs) -> float:
    f, g, h = nets()
    model = LNLModule(f, g, h, SPEC, optimizer=functools.partial(sgd), **model_kwargs)
    return lightning_images_per_s(model, batches)


def lightning_images_per_s(model: pl.LightningModule, batches: list[dict]) -> float:
    """One epoch over ``batches`` in Lightning's loop: its train/images_per_s."""
    trainer = pl.Trainer(
        accelerator=DEVICE.type,
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[TrainThroughput()],
    )
    trainer.fit(model, DataLoader(batches, batch_size=None, collate_fn=pass_batch))
    return float(trainer.callback_metrics["train/images_per_s"])


VARIANTS: dict[str, Callable[[list[dict]], float]] = {
    "plain": bare_plain,
    "baseline": functools.partial(lightning, lambda_=0.0, mu=0.0),
    "lnl_official": functools.partial(lightning, lambda_=0.01, mu=0.1, step="official"),
    "lnl_fused": functools.partial(lightning, lambda_=0.01, mu=0.1, step="fused"),
    "bare_fused": bare_fused,
}


def packed(batches: list[dict], members: int) -> float:
    """Images/s of one member of a pack of ``members`` official LNL runs (CUDA graph on a GPU)."""
    modules = [
        LNLModule(*nets(seed=k), SPEC, optimizer=functools.partial(sgd)) for k in range(members)
    ]
    model = pack_runs(modules, cuda_graph=True)
    packed_batches = [
        {
            IMAGE: b[IMAGE].repeat(1, members, 1, 1),
            LABEL: b[LABEL][:, None].expand(-1, members).contiguous(),
            BIAS_TARGET: b[BIAS_TARGET][:, None].expand(-1, members, -1, -1, -1).contiguous(),
            "bias_group": b["bias_group"][:, None].expand(-1, members).contiguous(),
        }
        for b in batches
    ]
    return lightning_images_per_s(model, packed_batches)


def profile_official_step(batches: list[dict], path: str) -> None:
    """torch.profiler over the official LNL step in Lightning's loop: operator tables."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if DEVICE.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        images_per_s = VARIANTS["lnl_official"](batches)
    averages = prof.key_averages()
    tables = [
        f"official LNL step, {len(batches)} steps of {BATCH} on {DEVICE.type}: "
        f"{images_per_s:.0f} images/s under the profiler",
        averages.table(sort_by="self_cpu_time_total", row_limit=40),
    ]
    if DEVICE.type == "cuda":
        tables.append(averages.table(sort_by="self_cuda_time_total", row_limit=25))
    with open(path, "w") as file:
        file.write("\n\n".join(tables) + "\n")
    print(f"profile written to {path}")


def measure_variants(batches: list[dict], variants: dict[str, Callable], args) -> None:
    for run in variants.values():  # warm-up: allocator, kernels, imports
        run(batches[:5])
    results: dict[str, list[float]] = defaultdict(list)
    for repeat in range(args.repeats):
        for name, run in variants.items():
            results[name].append(run(batches))
        print(
            f"repeat {repeat + 1}/{args.repeats}: "
            + ", ".join(f"{n} {v[-1]:.0f}" for n, v in results.items()),
            flush=True,
        )
    median = {name: statistics.median(values) for name, values in results.items()}
    print(
        f"torch {torch.__version__}, {DEVICE.type}, {args.threads} threads, batch {BATCH}, "
        f"{args.steps} steps x {args.repeats} repeats (median images/s):"
    )
    for name, value in median.items():
        relative = (
            f"   step time x{median['plain'] / value:.2f} of plain" if "plain" in median else ""
        )
        print(f"  {name:13s} {value:8.0f} images/s{relative}")
    if {"plain", "lnl_official"} <= median.keys():
        print(f"ratios: lnl_official_vs_plain={median['plain'] / median['lnl_official']:.2f}")
    if {"plain", "lnl_fused", "bare_fused"} <= median.keys():
        print(
            f"ratios: lnl_vs_plain={median['plain'] / median['lnl_fused']:.2f} "
            f"lightning_vs_bare={median['bare_fused'] / median['lnl_fused']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--profile", default=None, help="also profile the official step into FILE")
    parser.add_argument(
        "--packs",
        default=None,
        help="pack widths, e.g. 1,7,21 (default: 1,3 on cpu, 1,7,21,42 on cuda)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"step variants to measure, comma-separated, or none (default: {','.join(VARIANTS)})",
    )
    args = parser.parse_args()
    chosen = [] if args.variants == "none" else args.variants.split(",")
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)} or none")
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning_fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    batches = make_batches(args.steps)
    if chosen:
        measure_variants(batches, {name: VARIANTS[name] for name in chosen}, args)
    widths = args.packs or ("1,7,21,42" if DEVICE.type == "cuda" else "1,3")
    for width in (int(w) for w in widths.split(",")):
        packed(batches[:5], width)  # warm-up: the CUDA graph's capture and allocations
        rates = [packed(batches, width) for _ in range(args.repeats)]
        rate = statistics.median(rates)
        print(
            f"  packed K={width:<3d} {rate:8.0f} images/s per member, {rate * width:9.0f} in all"
            f"   ({'CUDA graph' if DEVICE.type == 'cuda' else 'eager'}; median of {args.repeats})",
            flush=True,
        )
    if args.profile:
        profile_official_step(batches, args.profile)


if __name__ == "__main__":
    main()
