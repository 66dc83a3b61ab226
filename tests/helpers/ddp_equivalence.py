"""Train a few steps on fixed batches with 1 or N CPU processes; save every rank's weights.

    python tests/helpers/ddp_equivalence.py --devices 2 --out DIR [--step fused|group_dro|lff]

``--step`` is LNL's official or fused step, or the GroupDRO or LfF method (whose group
weights and per-sample tables are buffers, saved and compared with the weights).

With N processes, a DistributedSampler without shuffling gives rank r the batches
r, r+N, ...; the 1-process run gets, at each step, those N batches concatenated: the same
global batch. The networks have
no BatchNorm, whose per-process batch statistics (SyncBatchNorm needs GPUs) would make the
two runs differ by design; what is compared is the gradient synchronisation itself.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl_lightning.data.colored_mnist import pass_batch  # noqa: E402
from lnl_lightning.data.contract import BIAS_GROUP, INDEX, LABEL, BiasSpec  # noqa: E402
from lnl_lightning.engine.module import DebiasModule  # noqa: E402
from lnl_lightning.methods.group_dro import GroupDROModule  # noqa: E402
from lnl_lightning.methods.lff import LfFModule  # noqa: E402
from lnl_lightning.methods.lnl import LNLModule  # noqa: E402
from tests.helpers.ddp import SaveWeightsPerRank  # noqa: E402
from tests.helpers.fixtures import random_batch  # noqa: E402

STEPS, LOCAL_BATCH, WORLD = 3, 4, 2
STEP_CHOICES = ("official", "fused", "group_dro", "lff")


class PixelHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 3 * 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out.view(len(x), 3, 8, *out.shape[2:]).transpose(1, 2)


def feature_extractor() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, 1))


def label_head() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(8, 16, 3, 2, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def build_module(step: str = "official") -> DebiasModule:
    torch.manual_seed(0)
    f, g = feature_extractor(), label_head()
    spec = BiasSpec(10, 10, 8, tuple((c, c) for c in range(10)))
    optimizer = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    if step in ("official", "fused"):
        return LNLModule(
            f, g, PixelHead(), spec, lambda_=0.1, mu=1.0, optimizer=optimizer, step=step
        )
    # the training split, by position: every local batch of the run, in order
    split = {k: torch.cat([b[k] for b in batches(WORLD)]) for k in (LABEL, BIAS_GROUP)}
    if step == "group_dro":  # a large eta: q moves enough to matter within 3 steps
        module = GroupDROModule(f, g, PixelHead(), spec, optimizer=optimizer, step_size=1.0)
        module.set_group_sizes(split[LABEL], split[BIAS_GROUP])
        return module
    twin = {"feature_extractor": feature_extractor(), "label_head": label_head()}
    module = LfFModule(f, g, PixelHead(), spec, optimizer=optimizer, make_networks=lambda: twin)
    module.set_sample_labels(split[LABEL])
    return module


def batches(devices: int) -> list[dict[str, torch.Tensor]]:
    local = [random_batch(LOCAL_BATCH, seed=i) for i in range(STEPS * WORLD)]
    for i, batch in enumerate(local):  # each image's position in the training split
        batch[INDEX] = torch.arange(i * LOCAL_BATCH, (i + 1) * LOCAL_BATCH)
    if devices == WORLD:
        return local
    return [
        {k: torch.cat([local[s * WORLD + r][k] for r in range(WORLD)]) for k in local[0]}
        for s in range(STEPS)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, choices=(1, WORLD), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--step", choices=STEP_CHOICES, default="official")
    args = parser.parse_args()
    strategy = (
        pl.strategies.DDPStrategy(process_group_backend="gloo") if args.devices > 1 else "auto"
    )
    data = batches(args.devices)
    # The processes are started by trainer.fit and each reruns this script: rank from the env.
    rank = int(os.environ.get("LOCAL_RANK", 0))
    sampler = DistributedSampler(data, num_replicas=args.devices, rank=rank, shuffle=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy=strategy,
        max_epochs=1,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[SaveWeightsPerRank(str(args.out))],
    )
    loader = DataLoader(data, batch_size=None, sampler=sampler, collate_fn=pass_batch)
    trainer.fit(build_module(args.step), loader)


if __name__ == "__main__":
    main()
