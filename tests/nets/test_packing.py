"""Packed runs: K members trained as one network end exactly where K separate runs end.

The runs train in float64: a grouped convolution sums in another order than K separate ones,
and in float32 that noise (~1e-7) can flip a ReLU that sits at 0 and change a gradient by
0.5 % in one step, chaotically (measured). In float64 such a flip is improbable, so what is
compared is the algorithm, member by member: same weights and momentum at rtol 1e-5.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lnl_lightning.data.colored_mnist import ColoredImages
from lnl_lightning.data.contract import IMAGE, LABEL, BiasSpec
from lnl_lightning.data.device_batches import DeviceBatches
from lnl_lightning.data.mnist_colors import REBIAS_PALETTE, colorize
from lnl_lightning.data.sampling import ResumableLoader
from lnl_lightning.engine.packed import pack_runs, unpack_runs
from lnl_lightning.errors import ConfigError
from lnl_lightning.methods.lnl import LNLModule
from lnl_lightning.nets import builders
from lnl_lightning.nets.packing import pack, pack_parameter_values, unpack_parameter_values

from ..helpers.fixtures import fake_digits, quiet_trainer

SPEC = BiasSpec(
    num_classes=10,
    num_bias_groups=10,
    num_bias_classes=8,
    aligned_cells=tuple((c, c) for c in range(10)),
)
NUM_IMAGES, BATCH_SIZE, EPOCHS = 80, 32, 2  # 3 batches per epoch, the last one short
RTOL, ATOL = 1e-5, 1e-7
NETWORKS = ("feature_extractor", "label_head", "bias_head")


def colored_data(color_vars: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One dataset per sigma^2: uint8 images (D, n, 3, 28, 28), labels and groups (D, n)."""
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 10, NUM_IMAGES))
    digits = torch.from_numpy(fake_digits(labels.numpy(), rng))
    palette = torch.tensor(REBIAS_PALETTE, dtype=torch.float32) / 255
    images = torch.stack([colorize(digits, labels, palette, v, rng) for v in color_vars])
    stacked = labels.expand(len(color_vars), -1).clone()
    return images, stacked, stacked.clone()


def member(seed: int, lambda_: float, mu: float, **kwargs) -> LNLModule:
    torch.manual_seed(seed)
    return LNLModule(
        builders.mnist_feature_extractor(),
        builders.mnist_label_head(),
        builders.PixelColorHead(),
        SPEC,
        lambda_=lambda_,
        mu=mu,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4),
        **kwargs,
    )


def fit(
    module: pl.LightningModule, loader: DeviceBatches, epochs: int = EPOCHS, **kwargs
) -> pl.Trainer:
    """Train on ``loader`` in float64 (see the module docstring); return the Trainer."""
    trainer = quiet_trainer(max_epochs=epochs, precision="64-true", **kwargs)
    trainer.fit(module, train_dataloaders=loader)
    return trainer


def optimizer_state(module: LNLModule) -> dict[str, torch.Tensor]:
    """Momentum buffers of a trained standalone module, by parameter name."""
    names = {p: n for n, p in module.named_parameters()}
    return {
        names[p]: s["momentum_buffer"]
        for optimizer in module.optimizers()
        for p, s in optimizer.optimizer.state.items()
    }


def unpacked_optimizer_state(module: LNLModule) -> dict[str, torch.Tensor]:
    """Momentum buffers that :meth:`unpack_runs` handed this member, by name."""
    params = [
        [*module.feature_extractor.parameters(), *module.label_head.parameters()],
        list(module.bias_head.parameters()),
    ]
    names = {p: n for n, p in module.named_parameters()}
    return {
        names[params[i][index]]: s["momentum_buffer"]
        for i, saved in enumerate(module.packed_optimizer_states)
        for index, s in saved["state"].items()
    }


def assert_members_match(alone: list[LNLModule], packed: list[LNLModule]) -> None:
    for k, (a, p) in enumerate(zip(alone, packed, strict=True)):
        a_state, p_state = a.state_dict(), p.state_dict()
        networks_state = [n for n in a_state if n.split(".")[0] in NETWORKS]
        assert len(networks_state) == 3 + 10 + 8 + 3 * 7  # f, g, h: weights and BN buffers
        for name in networks_state:
            torch.testing.assert_close(
                p_state[name],
                a_state[name],
                rtol=RTOL,
                atol=ATOL,
                check_dtype=False,
                msg=f"member {k}: {name}",
            )
        a_buffers, p_buffers = optimizer_state(a), unpacked_optimizer_state(p)
        assert a_buffers.keys() == p_buffers.keys()
        # Summed gradients: the grouped kernels' float noise is relative to the gradients'
        # scale (a conv bias before BatchNorm has a true gradient of 0, so only noise).
        scale = max(float(v.abs().max()) for v in a_buffers.values())
        for name, value in a_buffers.items():
            torch.testing.assert_close(
                p_buffers[name].double(),
                value,
                rtol=RTOL,
                atol=RTOL * scale,
                msg=f"member {k}: {name}",
            )


def train_alone_and_packed(settings, images, labels, groups, **kwargs):
    alone = [member(seed, lam, mu, **kwargs) for seed, lam, mu in settings]
    members = [copy.deepcopy(m) for m in alone]
    for k, (module, (seed, _, _)) in enumerate(zip(alone, settings, strict=True)):
        fit(module, DeviceBatches(images, labels, groups, [k], BATCH_SIZE, [seed], 14, 8, False))
    packed = pack_runs(members)
    seeds = [seed for seed, _, _ in settings]
    fit(
        packed,
        DeviceBatches(images, labels, groups, range(len(settings)), BATCH_SIZE, seeds, 14, 8),
    )
    return alone, unpack_runs(packed)


@pytest.mark.parametrize(
    "settings",
    [
        [(0, 0.01, 0.1), (1, 0.1, 0.3), (2, 0.05, 0.05)],  # LNL: each its own lambda and mu
        [(0, 0.0, 0.0), (1, 0.0, 0.0), (2, 0.0, 0.0)],  # baselines (h a probe)
    ],
    ids=["lnl", "baseline"],
)
def test_packed_members_end_where_separate_runs_end(settings):
    """K = 3 members, each with its own seed (init and order), sigma^2, lambda and mu."""
    images, labels, groups = colored_data([0.02, 0.035, 0.05])
    alone, packed = train_alone_and_packed(settings, images, labels, groups)
    assert_members_match(alone, packed)
    # and they did train apart: different members ended with different weights
    weights = [m.label_head[6].weight for m in packed]
    assert not torch.allclose(weights[0], weights[1])


def test_warm_started_members_carry_their_own_momentum(tmp_path):
    """Warm start from each member's own baseline checkpoint, momentum buffers included."""
    images, labels, groups = colored_data([0.02, 0.05])
    sources = []
    for k, seed in enumerate((3, 4)):
        baseline = member(seed, 0.0, 0.0)
        loader = DeviceBatches(images, labels, groups, [k], BATCH_SIZE, [seed], 14, 8, False)
        trainer = fit(baseline, loader, epochs=1)
        path = tmp_path / f"baseline{k}.ckpt"
        trainer.save_checkpoint(path)
        sources.append(str(path))
    settings = [(10, 0.01, 0.1), (11, 0.01, 0.1)]
    warm = list(zip(settings, sources, strict=True))
    alone = [member(s, lam, mu, init_from=src) for (s, lam, mu), src in warm]
    members = [member(s, lam, mu, init_from=src) for (s, lam, mu), src in warm]
    for k, (module, (seed, _, _)) in enumerate(zip(alone, settings, strict=True)):
        fit(module, DeviceBatches(images, labels, groups, [k], BATCH_SIZE, [seed], 14, 8, False))
    packed = pack_runs(members)
    fit(packed, DeviceBatches(images, labels, groups, [0, 1], BATCH_SIZE, [10, 11], 14, 8))
    assert packed.trainer.optimizers[0].param_groups[0]["lr"] == 0.001
    assert_members_match(alone, unpack_runs(packed))


def test_device_batches_serve_what_the_dataloader_serves():
    """One member: the same batches, in the same order, as the ordinary shuffled loader."""
    images, labels, groups = colored_data([0.03])
    dataset = ColoredImages(images[0], labels[0], groups[0], 14, 8)
    pl.seed_everything(7)
    from lnl_lightning.data.colored_mnist import pass_batch

    ordinary = ResumableLoader(dataset, batch_size=BATCH_SIZE, collate_fn=pass_batch)
    device = DeviceBatches(images, labels, groups, [0], BATCH_SIZE, [7], 14, 8, packed=False)
    for epoch in (0, 1):
        ordinary.sampler.set_epoch(epoch)
        device.sampler.set_epoch(epoch)
        expected, got = list(ordinary), list(device)
        assert len(got) == len(expected) == len(device) == 3
        for a, b in zip(expected, got, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]), (epoch, key)


def test_device_batches_resume_after_the_batches_seen():
    images, labels, groups = colored_data([0.03, 0.04])
    loader = DeviceBatches(images, labels, groups, [0, 1], BATCH_SIZE, [1, 2], 14, 8)
    loader.sampler.set_epoch(1)
    full = list(loader)
    assert full[0]["image"].shape == (BATCH_SIZE, 6, 28, 28)
    assert full[0]["bias_target"].shape == (BATCH_SIZE, 2, 3, 14, 14)
    assert full[-1]["label"].shape == (NUM_IMAGES - 2 * BATCH_SIZE, 2)
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    resumed = DeviceBatches(images, labels, groups, [0, 1], BATCH_SIZE, [1, 2], 14, 8)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == 2
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(full[1:], rest, strict=True))


def test_pack_round_trips_every_weight_and_momentum_value():
    torch.manual_seed(0)
    nets = [builders.PixelColorHead() for _ in range(3)]
    for net in nets:
        for b in net.buffers():
            if b.dtype.is_floating_point:
                b.uniform_(0.5, 1.5)
    packed = pack(nets)
    for k, net in enumerate(nets):
        state = packed.member_state_dict(k)
        assert state.keys() == net.state_dict().keys()
        assert all(torch.equal(state[n], v) for n, v in net.state_dict().items())
    values = [{n: torch.randn_like(p) for n, p in net.named_parameters()} for net in nets]
    packed_values = pack_parameter_values(packed, values)
    names = [n for n, _ in nets[1].named_parameters()]
    back = unpack_parameter_values(packed, packed_values, 1, names)
    assert all(torch.equal(back[n], values[1][n]) for n in names)
    with pytest.raises(KeyError, match="no value"):
        pack_parameter_values(packed, [values[0], values[1], {}])


def test_a_pack_refuses_what_it_cannot_train_exactly():
    with pytest.raises(ConfigError, match="baselines"):
        pack_runs([member(0, 0.0, 0.0), member(1, 0.01, 0.1)])
    with pytest.raises(ConfigError, match="lambda"):  # h's BatchNorm would see extra batches
        pack_runs([member(0, 0.0, 0.1), member(1, 0.01, 0.1)])
    with pytest.raises(ConfigError, match="official step"):
        pack_runs([member(0, 0.01, 0.1, step="fused")])
    with pytest.raises(ConfigError, match="shared=false"):
        pack([builders.PixelColorHead(shared=True)])


def test_the_graph_ready_step_is_the_same_step():
    """``cuda_graph=True`` (raw optimizers, Lightning's step count kept) changes nothing on CPU."""
    images, labels, groups = colored_data([0.02, 0.05])
    settings = [(0, 0.01, 0.1), (1, 0.05, 0.2)]
    packs, steps = [], []
    for cuda_graph in (False, True):
        pack_ = pack_runs([member(s, lam, mu) for s, lam, mu in settings], cuda_graph)
        trainer = quiet_trainer(max_epochs=EPOCHS)  # float32: the two paths are the same ops
        trainer.fit(pack_, DeviceBatches(images, labels, groups, [0, 1], BATCH_SIZE, [0, 1], 14, 8))
        packs.append(pack_.state_dict())
        steps.append(trainer.global_step)
    assert steps[0] == steps[1] == EPOCHS * 3 * 3  # 3 batches, 3 optimizer steps each
    assert packs[0].keys() == packs[1].keys()
    assert all(torch.equal(packs[0][k], packs[1][k]) for k in packs[0])


class ReplayedCall:
    """Stands in for a CUDA graph on a CPU: replay() runs the captured call on its inputs."""

    def __init__(self, run, inputs) -> None:
        self.run, self.inputs = run, inputs

    def replay(self) -> None:
        self.run(self.inputs)


def test_capture_and_replay_bookkeeping_trains_as_the_eager_step():
    """Warm-up, capture, replays with copied inputs, a recapture when the lr changes, and
    eager short batches: the same weights as eager steps (a stand-in graph, on a CPU)."""
    images, labels, groups = colored_data([0.02, 0.05])
    settings = [(0, 0.01, 0.1), (1, 0.05, 0.2)]
    states, captures = [], []
    for cuda_graph in (False, True):
        members = [
            member(
                s,
                lam,
                mu,
                scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
            )
            for s, lam, mu in settings
        ]
        pack_ = pack_runs(members, cuda_graph)
        if cuda_graph:
            pack_._graphs_available = lambda: True
            pack_._on_side_stream = lambda run, batch: run(batch)

            def capture(run, inputs):
                captures.append(len(inputs["label"]))
                return ReplayedCall(run, inputs), None

            pack_._capture = capture
        fit(pack_, DeviceBatches(images, labels, groups, [0, 1], BATCH_SIZE, [0, 1], 14, 8), 4)
        states.append(pack_.state_dict())
    # epoch 0: 2 warm-up steps and a short batch; epoch 1: warm-up, capture; epoch 2: the lr
    # halves, so a new capture; the short last batch of each epoch never captured
    assert captures == [BATCH_SIZE, BATCH_SIZE]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


HOST_SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


def written_tensors(pack_: LNLModule, optimizers) -> dict[str, torch.Tensor]:
    """What a captured step writes that outlives it: weights, buffers (the epoch sums and
    counters included) and the optimizers' state (gradients live in the graph's own pool)."""
    tensors = dict(pack_.named_parameters())
    tensors.update(pack_.named_buffers())
    for i, optimizer in enumerate(optimizers):
        for p, state in optimizer.state.items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"opt{i}.{id(p)}.{key}"] = value
    return tensors


def test_the_graph_step_writes_in_place_and_never_syncs_with_the_host(monkeypatch):
    """What a CUDA graph needs, checked on a CPU: every tensor the step writes keeps its
    storage from step to step (a replay writes where the capture wrote; ``x = x + 1`` would
    freeze it on a GPU), across an epoch start too, and the step never reads a value back."""
    images, labels, groups = colored_data([0.02, 0.05])
    pack_ = pack_runs([member(0, 0.01, 0.1), member(1, 0.05, 0.2)], cuda_graph=True)
    loader = DeviceBatches(images, labels, groups, [0, 1], BATCH_SIZE, [0, 1], 14, 8)
    quiet_trainer(max_epochs=1, limit_train_batches=1).fit(pack_, train_dataloaders=loader)
    raw = [opt.optimizer for opt in pack_.optimizers()]
    batch = next(iter(loader))
    inputs = {key: value.clone() for key, value in batch.items()}
    held = written_tensors(pack_, raw)  # held, so a new tensor cannot reuse their memory
    before = {name: t.data_ptr() for name, t in held.items()}
    steps = int(pack_.steps_done)
    sums = pack_.train_sums.clone()

    def no_sync(*args, **kwargs):
        raise AssertionError("the captured step read a tensor back to the host")

    with monkeypatch.context() as patch:
        for name in HOST_SYNCS:
            patch.setattr(torch.Tensor, name, no_sync)
        for _ in range(2):
            pack_._raw_step(inputs, raw)
        pack_.on_train_epoch_start()  # the epoch sums are zeroed in place
        pack_._raw_step(inputs, raw)
    after = {name: t.data_ptr() for name, t in written_tensors(pack_, raw).items()}
    assert after.keys() == before.keys()
    moved = [name for name in before if after[name] != before[name]]
    assert not moved, f"reallocated by the step: {moved}"
    assert int(pack_.steps_done) == steps + 3 and not torch.equal(pack_.train_sums, sums)
    assert torch.equal(inputs[LABEL], batch[LABEL])  # the captured inputs are only read


def test_a_captured_short_batch_is_replaced_by_a_capture_of_the_full_batch():
    """A first batch shorter than the rest (a resumed epoch's, a small first shard) was
    captured; every later full batch then ran eagerly, silently. Now the full size is
    captured anew after one warm-up step, and replayed from then on."""
    pack_ = pack_runs([member(0, 0.01, 0.1)], cuda_graph=True)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    events, captures = [], []

    class Graph:
        def __init__(self, inputs) -> None:
            self.inputs = inputs

        def replay(self) -> None:
            events.append(("replay", len(self.inputs[LABEL])))

    def capture(run, inputs):
        captures.append(len(inputs[LABEL]))
        return Graph(inputs), None

    pack_._on_side_stream = lambda run, batch: events.append(("warm-up", len(batch[LABEL])))
    pack_._capture = capture

    def run(batch):
        events.append(("eager", len(batch[LABEL])))

    for size in [10] * 4 + [32] * 4 + [7, 32]:
        batch = {LABEL: torch.zeros(size, 1, dtype=torch.long), IMAGE: torch.zeros(size, 3)}
        pack_._replay(batch, run, (optimizer,))
    assert captures == [10, 32]
    assert events == (
        [("warm-up", 10)] * 3
        + [("replay", 10), ("warm-up", 32), ("replay", 32), ("replay", 32), ("replay", 32)]
        + [("eager", 7), ("replay", 32)]
    )


def test_epoch_sums_stay_float64_under_half_precision_weights():
    """bf16-true converts every floating buffer: the epoch sums must not become bfloat16
    (at 128 images a batch, bfloat16 cannot count past a few batches exactly)."""
    images, labels, groups = colored_data([0.02])
    pack_ = pack_runs([member(0, 0.01, 0.1)])
    trainer = quiet_trainer(max_epochs=1, precision="bf16-true")
    trainer.fit(pack_, DeviceBatches(images, labels, groups, [0], BATCH_SIZE, [0], 14, 8))
    assert next(pack_.feature_extractor.parameters()).dtype == torch.bfloat16
    assert pack_.train_sums.dtype == torch.float64
    assert pack_.train_sums[0, 3] == NUM_IMAGES
