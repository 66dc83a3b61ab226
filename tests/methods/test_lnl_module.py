"""The training step is the official algorithm: checked weight by weight on one batch."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F

from lnl_lightning.data.contract import BIAS_TARGET, IGNORE_INDEX, IMAGE, LABEL, BiasSpec
from lnl_lightning.errors import ConfigError
from lnl_lightning.methods.lnl import LNLModule, bias_cross_entropy, negative_entropy
from lnl_lightning.nets import builders

from ..helpers.fixtures import fit_on_batches, random_batch

SPEC = BiasSpec(
    num_classes=10,
    num_bias_groups=10,
    num_bias_classes=8,
    aligned_cells=tuple((c, c) for c in range(10)),
)
LR = 0.1


def make_module(lambda_: float, mu: float, step: str = "official") -> LNLModule:
    torch.manual_seed(0)
    return LNLModule(
        builders.mnist_feature_extractor(),
        builders.mnist_label_head(10),
        builders.PixelColorHead(),
        SPEC,
        lambda_=lambda_,
        mu=mu,
        step=step,
        # plain SGD: an update is exactly -lr x gradient, so it can be predicted
        optimizer=functools.partial(torch.optim.SGD, lr=LR),
    )


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


def snapshot(model: LNLModule) -> dict[str, dict]:
    return {
        name: params(getattr(model, name))
        for name in ("feature_extractor", "label_head", "bias_head")
    }


def run_one_step(model: LNLModule, batch: dict) -> list[tuple[str, dict, dict, LNLModule]]:
    """Fit on one batch; record the weights around step 1 and step 2."""
    records = []
    for step in ("label_step", "bias_step", "fused_step"):
        original = getattr(model, step)

        def spy(*args, _original=original, _step=step):
            before, frozen = snapshot(model), copy.deepcopy(model)
            out = _original(*args)
            records.append((_step, before, snapshot(model), frozen))
            return out

        setattr(model, step, spy)
    fit_on_batches(model, [batch], max_steps=1)
    return records


def expected_bias_gradient_on_f(frozen: LNLModule, batch: dict) -> dict[str, torch.Tensor]:
    """d CE(h(f(x)), bias_target) / d f, without any reversal, on a frozen copy of the model."""
    frozen.train()
    frozen.zero_grad()
    loss = bias_cross_entropy(
        frozen.bias_head(frozen.feature_extractor(batch[IMAGE])), batch[BIAS_TARGET]
    )
    loss.backward()
    return {k: p.grad.clone() for k, p in frozen.feature_extractor.named_parameters()}


@pytest.mark.parametrize("mu", [0.1, 1.0])
def test_lnl_step_follows_the_official_algorithm(mu):
    batch = random_batch()
    records = run_one_step(make_module(lambda_=0.01, mu=mu), batch)
    (_, before1, after1, frozen1), (_, before2, after2, frozen2) = records

    # step 1: f and g descend CE + lambda * sum_k p_k log p_k (computed here from scratch), h
    # is not updated
    frozen1.train()
    f, g, h = frozen1.feature_extractor, frozen1.label_head, frozen1.bias_head
    features = f(batch[IMAGE])
    p = torch.softmax(h(features), dim=1)
    neg_entropy = (p * torch.log(p)).sum(dim=1).mean()
    loss = F.cross_entropy(g(features), batch[LABEL]) + 0.01 * neg_entropy
    grads = torch.autograd.grad(loss, [*f.parameters(), *g.parameters()])
    names = [
        *(("feature_extractor", n) for n, _ in f.named_parameters()),
        *(("label_head", n) for n, _ in g.named_parameters()),
    ]
    for (module, name), grad in zip(names, grads, strict=True):
        update = after1[module][name] - before1[module][name]
        assert torch.allclose(update, -LR * grad, atol=1e-6, rtol=1e-4), (module, name)
    assert not changed(before1["bias_head"], after1["bias_head"])

    # step 2: h learns, g is untouched, f moves by +lr * mu * dL_bias/df (reversed descent)
    assert changed(before2["bias_head"], after2["bias_head"])
    assert not changed(before2["label_head"], after2["label_head"])
    grad = expected_bias_gradient_on_f(frozen2, batch)
    for name, g in grad.items():
        update = after2["feature_extractor"][name] - before2["feature_extractor"][name]
        assert torch.allclose(update, LR * mu * g, atol=1e-6, rtol=1e-4), name
    assert any(g.abs().sum() > 0 for g in grad.values())


def test_baseline_leaves_f_untouched_by_the_bias_loss():
    batch = random_batch()
    records = run_one_step(make_module(lambda_=0.0, mu=0.0), batch)
    (_, before1, after1, _), (_, before2, after2, _) = records
    assert changed(before1["feature_extractor"], after1["feature_extractor"])
    assert not changed(before1["bias_head"], after1["bias_head"])
    # the probe h trains, on detached features
    assert changed(before2["bias_head"], after2["bias_head"])
    assert not changed(before2["feature_extractor"], after2["feature_extractor"])
    assert not changed(before2["label_head"], after2["label_head"])


def h_entropy_after_step_1(lambda_: float) -> float:
    """The mean entropy of h's prediction on the batch, with f as step 1 left it (h as before)."""
    batch = random_batch()
    (_, _, after, frozen), *_ = run_one_step(make_module(lambda_=lambda_, mu=0.0), batch)
    frozen.train()
    with torch.no_grad():
        for name, p in frozen.feature_extractor.named_parameters():
            p.copy_(after["feature_extractor"][name])
        logits = frozen.bias_head(frozen.feature_extractor(batch[IMAGE]))
    return -float(negative_entropy(logits))


def test_the_entropy_term_makes_h_less_certain():
    """Step 1 with lambda > 0 moves f so that h's prediction has more entropy than plain
    training leaves it, and more the larger lambda is (a flipped sign makes h surer)."""
    plain, some, more = (h_entropy_after_step_1(lam) for lam in (0.0, 1.0, 3.0))
    assert plain < some < more, (plain, some, more)


def test_negative_entropy_is_safe_and_correct():
    uniform = torch.zeros(2, 8, 3, 4, 4)
    assert negative_entropy(uniform).item() == pytest.approx(-torch.log(torch.tensor(8.0)).item())
    certain = torch.zeros(2, 8)
    certain[:, 0] = 1e4  # p = 0 elsewhere: naive p * log(p) gives NaN
    value = negative_entropy(certain)
    assert torch.isfinite(value) and value.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "key"), [({"lambda_": -1.0}, "model.lambda_"), ({"mu": -0.5}, "model.mu")]
)
def test_negative_weights_are_rejected(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        LNLModule(
            builders.mnist_feature_extractor(),
            builders.mnist_label_head(),
            builders.PixelColorHead(),
            SPEC,
            **kwargs,
        )


def test_warm_start_loads_f_and_g_only(tmp_path):
    source = make_module(0.0, 0.0)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "base.ckpt")
    torch.manual_seed(123)
    target = LNLModule(
        builders.mnist_feature_extractor(),
        builders.mnist_label_head(),
        builders.PixelColorHead(),
        SPEC,
        init_from=str(tmp_path / "base.ckpt"),
    )
    assert not changed(params(source.feature_extractor), params(target.feature_extractor))
    assert not changed(params(source.label_head), params(target.label_head))
    assert changed(params(source.bias_head), params(target.bias_head))
    optimizers = target.configure_optimizers()  # no scheduler configured: a list of two
    assert all(group["lr"] == 0.001 for opt in optimizers for group in opt.param_groups)
    with pytest.raises(ConfigError, match="model.init_from"):
        LNLModule(
            builders.mnist_feature_extractor(),
            builders.mnist_label_head(),
            builders.PixelColorHead(),
            SPEC,
            init_from=str(tmp_path / "missing.ckpt"),
        )


@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_fused_step_applies_both_updates_from_one_pass(mu):
    lambda_ = 0.5
    batch = random_batch()
    model = make_module(lambda_=lambda_, mu=mu, step="fused")
    ((name, before, after, frozen),) = run_one_step(model, batch)
    assert name == "fused_step"
    frozen.train()
    f, g, h = frozen.feature_extractor, frozen.label_head, frozen.bias_head
    f_params, g_params, h_params = (list(m.parameters()) for m in (f, g, h))
    features = f(batch[IMAGE])
    main_loss = F.cross_entropy(g(features), batch[LABEL]) + lambda_ * negative_entropy(h(features))
    grad_a = torch.autograd.grad(main_loss, f_params + g_params)  # h's parameters excluded
    features = f(batch[IMAGE])
    bias_loss = bias_cross_entropy(h(features), batch[BIAS_TARGET])
    grad_b = torch.autograd.grad(bias_loss, f_params + h_params)
    n_f = len(f_params)
    expected = {
        "feature_extractor": [a - mu * b for a, b in zip(grad_a[:n_f], grad_b[:n_f], strict=True)],
        "label_head": list(grad_a[n_f:]),
        "bias_head": list(grad_b[n_f:]),
    }
    for module, grads in expected.items():
        names = list(before[module])
        for key, grad in zip(names, grads, strict=True):
            update = after[module][key] - before[module][key]
            assert torch.allclose(update, -LR * grad, atol=1e-6, rtol=1e-4), (module, key)


def test_unknown_step_is_rejected():
    with pytest.raises(ConfigError, match="model.step"):
        make_module(0.01, 0.1, step="fast")


def test_no_checkpoint_is_written_once_a_loss_was_not_finite():
    from lnl_lightning.errors import TrainingDiverged

    module = make_module(0.01, 0.1)
    finite = torch.tensor(1.0)
    module._watch(finite.view(1), finite.view(1))
    module.on_save_checkpoint({})  # all finite: saving goes ahead
    module._watch(torch.tensor([float("nan")]), finite.view(1))
    with pytest.raises(TrainingDiverged, match="the label loss .* at training batch 2"):
        module.on_save_checkpoint({})  # e.g. SIGTERM before the periodic check saw it


def test_bias_loss_is_the_sum_of_the_channel_means():
    """Official CE_r + CE_g + CE_b: each channel's mean over its own non-ignored pixels."""
    logits = torch.randn(2, 8, 3, 2, 2)
    target = torch.randint(0, 8, (2, 3, 2, 2))
    target[:, 1, 0] = IGNORE_INDEX  # channels with different numbers of valid pixels
    target[0, 2] = IGNORE_INDEX
    expected = sum(
        F.cross_entropy(logits[:, :, c], target[:, c], ignore_index=IGNORE_INDEX) for c in range(3)
    )
    assert bias_cross_entropy(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert bias_cross_entropy(logits, target).item() != pytest.approx(
        F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX).item() * 3, rel=1e-3
    )
    target[:, 0] = IGNORE_INDEX  # a channel with nothing to predict adds 0, not NaN
    expected = sum(
        F.cross_entropy(logits[:, :, c], target[:, c], ignore_index=IGNORE_INDEX) for c in (1, 2)
    )
    assert bias_cross_entropy(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    per_image = torch.randn(4, 2), torch.tensor([0, 1, IGNORE_INDEX, 1])
    assert torch.equal(
        bias_cross_entropy(*per_image), F.cross_entropy(*per_image, ignore_index=IGNORE_INDEX)
    )


def test_colour_head_is_three_independent_heads_unless_shared():
    official, shared = builders.PixelColorHead(), builders.PixelColorHead(shared=True)
    features = torch.randn(2, 32, 14, 14)
    assert official(features).shape == shared(features).shape == (2, 8, 3, 14, 14)
    hidden = 32 * 32 * 9 + 32 + 2 * 32  # conv + bias + BatchNorm
    assert sum(p.numel() for p in official.parameters()) == 3 * (hidden + 32 * 8 * 9 + 8)
    assert sum(p.numel() for p in shared.parameters()) == hidden + 32 * 24 * 9 + 24
    # one channel's logits depend on that channel's head only
    official.eval()
    before = official(features)
    with torch.no_grad():
        official.channels[1][3].weight.add_(1.0)
    after = official(features)
    assert torch.equal(before[:, :, 0], after[:, :, 0]) and torch.equal(
        before[:, :, 2], after[:, :, 2]
    )
    assert not torch.equal(before[:, :, 1], after[:, :, 1])


def test_warm_start_takes_the_f_and_g_optimizer_state_as_the_official_load_model(tmp_path):
    momentum_sgd = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=5e-4)
    source = make_module(0.0, 0.0)
    source.optimizer_factory = momentum_sgd
    trainer = fit_on_batches(source, [random_batch(seed=0), random_batch(seed=1)], max_steps=2)
    trainer.save_checkpoint(tmp_path / "base.ckpt")
    saved = source.optimizers()[0].optimizer.state_dict()

    torch.manual_seed(123)
    target = LNLModule(
        builders.mnist_feature_extractor(),
        builders.mnist_label_head(),
        builders.PixelColorHead(),
        SPEC,
        optimizer=momentum_sgd,
        init_from=str(tmp_path / "base.ckpt"),
    )
    opt_main, opt_bias = target.configure_optimizers()
    loaded = opt_main.state_dict()
    assert saved["state"] and saved["state"].keys() == loaded["state"].keys()
    for index, state in saved["state"].items():
        assert torch.equal(state["momentum_buffer"], loaded["state"][index]["momentum_buffer"])
    assert not opt_bias.state_dict()["state"], "h and its optimizer start afresh"
    assert all(group["lr"] == 0.001 for opt in (opt_main, opt_bias) for group in opt.param_groups)


def test_warm_start_from_a_missing_checkpoint_says_which_run_must_finish(tmp_path):
    with pytest.raises(ConfigError, match="model.init_from: there is no checkpoint .*missing.ckpt"):
        LNLModule(
            builders.mnist_feature_extractor(),
            builders.mnist_label_head(),
            builders.PixelColorHead(),
            SPEC,
            init_from=str(tmp_path / "missing.ckpt"),
        )


def test_a_checkpoint_restores_every_generator_it_saved():
    import random

    import numpy as np

    module = make_module(lambda_=0.01, mu=0.1)
    checkpoint: dict = {"state_dict": {}}
    torch.manual_seed(123)
    module.on_save_checkpoint(checkpoint)

    def draws():
        return (random.random(), float(np.random.rand()), float(torch.rand(())))

    first = draws()
    draws()  # the generators move on, as training does after a checkpoint
    module.on_load_checkpoint(checkpoint)
    assert draws() == first


def test_cuda_generator_states_of_more_gpus_than_here_restore_those_that_exist(monkeypatch, caplog):
    """A checkpoint from 2 GPUs resumed on 1: the first GPU's state, and a warning."""
    from lnl_lightning.engine import rng

    restored = []
    states = rng.rng_states()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    def set_rng_state(state, device="cuda"):
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= 1:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        restored.append((index, state))

    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    states["cuda"] = [
        torch.full((8,), 1, dtype=torch.uint8),
        torch.full((8,), 2, dtype=torch.uint8),
    ]
    rng.set_rng_states(states)
    assert [(index, int(state[0])) for index, state in restored] == [(0, 1)]
    assert "2 GPU(s), this machine has 1" in caplog.text
