"""BlindEye, GroupDRO and LfF: each update checked against a hand computation on a tiny batch."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from lnl_lightning.data.contract import BIAS_GROUP, BIAS_TARGET, IMAGE, INDEX, LABEL, BiasSpec
from lnl_lightning.errors import ConfigError
from lnl_lightning.methods.blind_eye import BlindEyeModule
from lnl_lightning.methods.group_dro import GroupDROModule
from lnl_lightning.methods.lff import LfFModule, generalized_cross_entropy
from lnl_lightning.methods.losses import bias_cross_entropy, uniform_cross_entropy
from lnl_lightning.nets import builders

from ..helpers.fixtures import fit_on_batches, random_batch

SPEC = BiasSpec(
    num_classes=10,
    num_bias_groups=10,
    num_bias_classes=8,
    aligned_cells=tuple((c, c) for c in range(10)),
)
LR = 0.1


def mnist_networks() -> dict[str, torch.nn.Module]:
    return {
        "feature_extractor": builders.mnist_feature_extractor(),
        "label_head": builders.mnist_label_head(10),
        "bias_head": builders.PixelColorHead(),
    }


def make(cls, **kwargs):
    torch.manual_seed(0)
    # plain SGD: an update is exactly -lr x gradient, so it can be predicted
    return cls(
        **mnist_networks(),
        bias_spec=SPEC,
        optimizer=functools.partial(torch.optim.SGD, lr=LR),
        **kwargs,
    )


def batch_with_index(n: int = 8) -> dict[str, torch.Tensor]:
    batch = random_batch(n)
    batch[INDEX] = torch.arange(n)
    return batch


def gradients(loss: torch.Tensor, *modules: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    params = [p for m in modules for p in m.parameters()]
    grads = iter(torch.autograd.grad(loss, params, allow_unused=True))
    return [[next(grads) for _ in m.parameters()] for m in modules]


def assert_moved_by(before: torch.nn.Module, after: torch.nn.Module, grads: list[torch.Tensor]):
    for (name, p0), p1, g in zip(before.named_parameters(), after.parameters(), grads, strict=True):
        expected = torch.zeros_like(p0) if g is None else -LR * g
        torch.testing.assert_close(
            p1.detach() - p0.detach(), expected, atol=1e-6, rtol=1e-4, msg=name
        )


# ----------------------------------------------------------------------------- BlindEye
def test_confusion_loss_is_the_cross_entropy_against_uniform():
    # two classes, p = (1/4, 3/4): CE(uniform, p) = -(log 1/4 + log 3/4) / 2
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert uniform_cross_entropy(logits).item() == pytest.approx(
        (math.log(4) + math.log(4 / 3)) / 2
    )
    assert uniform_cross_entropy(torch.zeros(2, 8, 3, 4, 4)).item() == pytest.approx(math.log(8))


def test_blind_eye_step_confuses_h_through_f_and_trains_h_on_detached_features():
    alpha = 0.5
    batch = random_batch()
    model = make(BlindEyeModule, confusion_weight=alpha)
    before = copy.deepcopy(model).train()
    fit_on_batches(model, [batch], max_steps=1)

    f, g, h = before.feature_extractor, before.label_head, before.bias_head
    features = f(batch[IMAGE])
    main = F.cross_entropy(g(features), batch[LABEL])
    main = main - alpha * F.log_softmax(h(features), dim=1).mean(dim=1).mean()
    grad_f, grad_g = gradients(main, f, g)
    (grad_h,) = gradients(bias_cross_entropy(h(features.detach()), batch[BIAS_TARGET]), h)
    assert_moved_by(f, model.feature_extractor, grad_f)
    assert_moved_by(g, model.label_head, grad_g)
    assert_moved_by(h, model.bias_head, grad_h)


# ----------------------------------------------------------------------------- GroupDRO
TINY = BiasSpec(
    num_classes=2, num_bias_groups=2, num_bias_classes=2, aligned_cells=((0, 0), (1, 1))
)


def tiny_dro(**kwargs) -> GroupDROModule:
    return GroupDROModule(
        torch.nn.Identity(), torch.nn.Identity(), torch.nn.Identity(), TINY, **kwargs
    )


def test_group_dro_weights_follow_the_exponentiated_group_losses():
    model = tiny_dro(step_size=0.5)
    # training split: cells (label, group) -> 0, 0, 1, 3 (cell 2 = label 1 on group 0 is empty)
    model.set_group_sizes(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1]))
    assert model.group_sizes.tolist() == [2, 1, 0, 1]
    assert model.group_weights.tolist() == pytest.approx([1 / 3, 1 / 3, 0, 1 / 3])

    losses = model.group_losses(torch.tensor([1.0, 3.0, 2.0, 4.0]), torch.tensor([0, 0, 1, 3]))
    assert losses.tolist() == [2.0, 2.0, 0.0, 4.0]  # means per cell, 0 where none
    model.update_group_weights(losses)
    e = math.e
    assert model.group_weights.tolist() == pytest.approx(
        [e / (2 * e + e**2), e / (2 * e + e**2), 0, e**2 / (2 * e + e**2)]
    )

    adjusted = tiny_dro(step_size=0.5, group_adjustment=1.0)
    adjusted.set_group_sizes(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1]))
    adjusted.update_group_weights(losses)  # + 1 / sqrt(n_g): 1/sqrt(2), 1, -, 1
    w = [math.exp(0.5 * (2 + 2**-0.5)), math.exp(0.5 * 3), 0, math.exp(0.5 * 5)]
    assert adjusted.group_weights.tolist() == pytest.approx([v / sum(w) for v in w])


def test_group_dro_step_descends_the_weighted_group_losses():
    eta = 2.0
    batch = random_batch(16)
    model = make(GroupDROModule, step_size=eta)
    labels = torch.arange(100) % 10
    model.set_group_sizes(labels, labels)  # every training image aligned, as Colored MNIST's
    before = copy.deepcopy(model).train()
    fit_on_batches(model, [batch], max_steps=1)

    f, g = before.feature_extractor, before.label_head
    per_sample = F.cross_entropy(g(f(batch[IMAGE])), batch[LABEL], reduction="none")
    cells = (batch[LABEL] * 10 + batch[BIAS_GROUP]).tolist()
    q = {c: 0.1 for c in range(0, 100, 11)}  # uniform over the 10 cells the split holds
    mean = {
        c: sum(per_sample[i] for i in range(16) if cells[i] == c) / cells.count(c)
        for c in set(cells)
    }
    q = {c: w * math.exp(eta * float(mean[c].detach()) if c in mean else 0.0) for c, w in q.items()}
    total = sum(q.values())
    robust = sum(q[c] / total * mean[c] for c in mean if c in q)
    grad_f, grad_g = gradients(robust, f, g)
    assert_moved_by(f, model.feature_extractor, grad_f)
    assert_moved_by(g, model.label_head, grad_g)
    assert model.group_weights.sum().item() == pytest.approx(1.0)
    assert model.group_weights[[c for c in range(100) if c % 11]].abs().sum() == 0


# ---------------------------------------------------------------------------------- LfF
def test_generalized_cross_entropy_is_ce_times_q_p_to_the_q():
    logits = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)  # p = (1/4, 3/4)
    q = 0.7
    loss = generalized_cross_entropy(logits, torch.tensor([1]), q)
    assert loss.item() == pytest.approx(-math.log(0.75) * q * 0.75**q)
    # its gradient is that of (1 - p_y^q) / q, times q: dp_y^q/dlogits = q p^q (onehot - p)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    expected = -q * 0.75**q * (torch.tensor([[0.0, 1.0]]) - torch.tensor([[0.25, 0.75]]))
    torch.testing.assert_close(grad, expected)


def tiny_lff(ema: float) -> LfFModule:
    parts = {
        "feature_extractor": torch.nn.Identity(),
        "label_head": torch.nn.Identity(),
        "bias_head": torch.nn.Identity(),
    }
    return LfFModule(**parts, bias_spec=TINY, ema=ema, make_networks=lambda: dict(parts))


def test_lff_weights_are_relative_difficulty_of_class_normalised_moving_averages():
    model = tiny_lff(ema=0.5)
    model.set_sample_labels(torch.tensor([0, 0, 1, 1]))
    w = model.sample_weights(
        torch.tensor([0, 1, 2]),
        torch.tensor([0, 0, 1]),
        torch.tensor([1.0, 2.0, 3.0]),
        torch.tensor([2.0, 2.0, 1.0]),
    )
    # first sight takes the loss; class maxima: biased 2 (class 0), 3 (class 1); debiased 2, 1
    assert model.loss_ema_biased.tolist() == [1, 2, 3, 0]
    assert w.tolist() == pytest.approx([0.5 / 1.5, 0.5, 0.5], abs=1e-6)
    w = model.sample_weights(
        torch.tensor([0]), torch.tensor([0]), torch.tensor([3.0]), torch.tensor([0.0])
    )
    # again: 0.5 * old + 0.5 * new -> biased 2, debiased 1; class-0 maxima 2 and 2
    assert model.loss_ema_biased[0].item() == 2 and model.loss_ema_debiased[0].item() == 1
    assert w.tolist() == pytest.approx([1 / 1.5], abs=1e-6)


def test_lff_step_trains_the_twin_with_gce_and_f_g_with_weighted_ce():
    q = 0.7
    batch = batch_with_index(8)
    torch.manual_seed(0)
    model = LfFModule(
        **mnist_networks(),
        bias_spec=SPEC,
        q=q,
        optimizer=functools.partial(torch.optim.SGD, lr=LR),
        make_networks=mnist_networks,
    )
    model.set_sample_labels(torch.cat([batch[LABEL], torch.tensor([3, 4])]))  # 10 images
    before = copy.deepcopy(model).train()
    fit_on_batches(model, [batch], max_steps=1)

    f, g, fb, gb = (
        before.feature_extractor,
        before.label_head,
        before.biased_feature_extractor,
        before.biased_label_head,
    )
    assert any(not torch.equal(a, b) for a, b in zip(f.parameters(), fb.parameters(), strict=True))
    labels = batch[LABEL]
    ce_b = F.cross_entropy(gb(fb(batch[IMAGE])), labels, reduction="none")
    ce_d = F.cross_entropy(g(f(batch[IMAGE])), labels, reduction="none")
    # first sight: the averages are the losses; normalised by each class's largest in the batch
    max_b = torch.stack([ce_b[labels == c].max() for c in labels.tolist()]).detach()
    max_d = torch.stack([ce_d[labels == c].max() for c in labels.tolist()]).detach()
    rel_b, rel_d = ce_b.detach() / max_b, ce_d.detach() / max_d
    weights = rel_b / (rel_b + rel_d + 1e-8)
    p_y = F.softmax(gb(fb(batch[IMAGE])), 1).gather(1, labels[:, None]).squeeze(1).detach()
    loss = (ce_b * q * p_y**q).mean() + (ce_d * weights).mean()
    grad_f, grad_g, grad_fb, grad_gb = gradients(loss, f, g, fb, gb)
    assert_moved_by(f, model.feature_extractor, grad_f)
    assert_moved_by(g, model.label_head, grad_g)
    assert_moved_by(fb, model.biased_feature_extractor, grad_fb)
    assert_moved_by(gb, model.biased_label_head, grad_gb)
    assert model.sample_seen.tolist() == [True] * 8 + [False] * 2


@pytest.mark.parametrize(
    ("cls", "kwargs", "key"),
    [
        (BlindEyeModule, {"confusion_weight": -1.0}, "model.confusion_weight"),
        (GroupDROModule, {"step_size": float("inf")}, "model.step_size"),
        (LfFModule, {"q": 0.0, "make_networks": mnist_networks}, "model.q"),
        (LfFModule, {"ema": 1.0, "make_networks": mnist_networks}, "model.ema"),
    ],
)
def test_bad_method_settings_are_refused_by_key(cls, kwargs, key):
    with pytest.raises(ConfigError, match=key):
        cls(**mnist_networks(), bias_spec=SPEC, **kwargs)
