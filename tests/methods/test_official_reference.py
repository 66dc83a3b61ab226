"""The official step, exactly: weight by weight against a literal port of the official trainer.

Every parameter, BatchNorm buffer and momentum buffer of f, g and h must equal the port's after
each of several batches, with the official hyper-parameters (SGD lr 0.01, momentum 0.9, weight
decay 5e-4, lambda 0.01, reversal 0.1), the official colour target computed by the port from the
same uint8 images, and the official initialisation.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lnl_lightning.data.colored_mnist import ColoredImages
from lnl_lightning.data.contract import BIAS_TARGET, IMAGE, LABEL, BiasSpec
from lnl_lightning.data.mnist_colors import REBIAS_PALETTE, colorize
from lnl_lightning.methods.lnl import LNLModule
from lnl_lightning.nets import builders

from ..helpers import official_reference as official
from ..helpers.fixtures import fake_digits, fit_on_batches

SPEC = BiasSpec(
    num_classes=10,
    num_bias_groups=10,
    num_bias_classes=8,
    aligned_cells=tuple((c, c) for c in range(10)),
)
NUM_BATCHES, BATCH_SIZE = 6, 32
ATOL = 1e-6

# port's names -> this package's names (f = feature_extractor, g = label_head, h = bias_head)
NAME_MAP = {
    "net.bn0.": "feature_extractor.0.",
    "net.conv1.": "feature_extractor.1.",
    "net.conv2.": "feature_extractor.4.",
    "net.conv3.": "label_head.0.",
    "net.conv4.": "label_head.2.",
    "net.fc.": "label_head.6.",
    **{
        f"pred_net_{c}.{layer}.": f"bias_head.channels.{i}.{index}."
        for i, c in enumerate("rgb")
        for layer, index in (("pred_conv1", 0), ("pred_bn1", 1), ("pred_conv2", 3))
    },
}


def ours_name(port_name: str) -> str:
    prefix = next(p for p in NAME_MAP if port_name.startswith(p))
    return NAME_MAP[prefix] + port_name[len(prefix) :]


def colored_batches(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Batches of coloured bar 'digits' (paper palette, sigma^2 0.02) with their uint8 images."""
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(rng.integers(0, 10, NUM_BATCHES * BATCH_SIZE))
    digits = torch.from_numpy(fake_digits(labels.numpy(), rng))
    palette = torch.tensor(REBIAS_PALETTE, dtype=torch.float32) / 255
    images = colorize(digits, labels, palette, 0.02, rng)
    data = ColoredImages(images, labels, labels, target_size=14, num_bins=8)
    batches = []
    for start in range(0, len(labels), BATCH_SIZE):
        index = list(range(start, start + BATCH_SIZE))
        batch = data.__getitems__(index)
        batch["uint8"] = images[index]
        batches.append(batch)
    return batches


def module_state(module: LNLModule) -> dict[str, torch.Tensor]:
    """Parameters, buffers and momentum buffers of f, g and h, keyed by state_dict name."""
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    names = {id(p): n for n, p in module.named_parameters()}
    for optimizer in module.optimizers():
        for p, p_state in optimizer.optimizer.state.items():
            if "momentum_buffer" in p_state:
                state[f"momentum:{names[id(p)]}"] = p_state["momentum_buffer"].clone()
    return {k: v for k, v in state.items() if k.split(":")[-1].startswith(tuple(MODULES))}


MODULES = ("feature_extractor.", "label_head.", "bias_head.")


def port_state(trainer: official.OfficialTrainer) -> dict[str, torch.Tensor]:
    """The port's state under this package's names."""
    named = {
        "net": trainer.net,
        "pred_net_r": trainer.pred_net_r,
        "pred_net_g": trainer.pred_net_g,
        "pred_net_b": trainer.pred_net_b,
    }
    state = {}
    for prefix, module in named.items():
        for k, v in module.state_dict().items():
            state[ours_name(f"{prefix}.{k}")] = v.detach().clone()
        for k, p in module.named_parameters():
            for optimizer in trainer.optimizers():
                buffer = optimizer.state.get(p, {}).get("momentum_buffer")
                if buffer is not None:
                    state[f"momentum:{ours_name(f'{prefix}.{k}')}"] = buffer.clone()
    return state


def make_module(lambda_: float, mu: float) -> LNLModule:
    torch.manual_seed(0)
    return LNLModule(
        builders.mnist_feature_extractor(),
        builders.mnist_label_head(10),
        builders.PixelColorHead(),
        SPEC,
        lambda_=lambda_,
        mu=mu,
        optimizer=functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=5e-4),
    )


def port_from(module: LNLModule) -> official.OfficialTrainer:
    """The official trainer, starting from the module's initial weights."""
    trainer = official.OfficialTrainer()
    ours = module.state_dict()
    for prefix, net in (
        ("net", trainer.net),
        ("pred_net_r", trainer.pred_net_r),
        ("pred_net_g", trainer.pred_net_g),
        ("pred_net_b", trainer.pred_net_b),
    ):
        net.load_state_dict({k: ours[ours_name(f"{prefix}.{k}")] for k in net.state_dict()})
    return trainer


class Recorder(pl.Callback):
    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states.append(module_state(pl_module))


def fit_and_record(module: LNLModule, batches: list[dict]) -> list[dict[str, torch.Tensor]]:
    recorder = Recorder()
    plain = [{k: v for k, v in b.items() if k != "uint8"} for b in batches]
    fit_on_batches(module, plain, max_epochs=1, callbacks=[recorder])
    return recorder.states


def assert_same_state(ours: dict, port: dict, step: int, only: tuple[str, ...]) -> None:
    keys = [k for k in port if k.split(":")[-1].startswith(only)]
    assert keys and set(keys) <= set(ours), sorted(set(keys) - set(ours))
    for key in keys:
        torch.testing.assert_close(
            ours[key].float(), port[key].float(), atol=ATOL, rtol=0,
            msg=lambda m, key=key: f"after batch {step}, {key}: {m}",
        )  # fmt: skip


def test_lnl_step_equals_the_official_train_step_weight_by_weight():
    batches = colored_batches()
    module = make_module(lambda_=official.LAMBDA, mu=official.REVERSAL)
    port = port_from(module)
    ours = fit_and_record(module, batches)
    assert len(ours) == NUM_BATCHES
    for step, (batch, state) in enumerate(zip(batches, ours, strict=True), start=1):
        color_labels = torch.stack(
            [official.color_target(im.permute(1, 2, 0).numpy()) for im in batch["uint8"]]
        )
        port.train_step(batch[IMAGE], color_labels, batch[LABEL])
        assert_same_state(state, port_state(port), step, MODULES)


def test_baseline_step_equals_the_official_baseline_step_weight_by_weight():
    batches = colored_batches(seed=1)
    module = make_module(lambda_=0.0, mu=0.0)
    port = port_from(module)
    ours = fit_and_record(module, batches)
    for step, (batch, state) in enumerate(zip(batches, ours, strict=True), start=1):
        port.train_step_baseline(batch[IMAGE], batch[LABEL])
        # h is this package's probe (the official baseline has no h): f and g only
        assert_same_state(state, port_state(port), step, ("feature_extractor.", "label_head."))


def test_colour_target_equals_the_official_data_loader():
    batch = colored_batches(seed=2)[0]
    expected = torch.stack(
        [official.color_target(im.permute(1, 2, 0).numpy()) for im in batch["uint8"]]
    )
    expected[expected >= 255] = -100  # the official ignore value is 255, ours PyTorch's
    assert torch.equal(batch[BIAS_TARGET], expected)
    assert (expected == -100).any() and (expected >= 0).any()


@pytest.mark.parametrize("builder", ["mnist_feature_extractor", "mnist_label_head"])
def test_f_and_g_start_from_the_official_initialisation(builder):
    """He-normal conv weights N(0, 2 / (k*k*out)), BatchNorm 1 and 0, as _weights_init."""
    torch.manual_seed(0)
    net = getattr(builders, builder)()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs
    for conv in convs:
        expected = (2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels)) ** 0.5
        std = conv.weight.std().item()
        assert abs(std / expected - 1) < 0.1, (conv, std, expected)
        assert abs(conv.weight.mean().item()) < 0.1 * expected
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
