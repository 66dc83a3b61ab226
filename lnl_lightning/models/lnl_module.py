"""Learning Not to Learn (Kim et al., CVPR 2019), and the baseline as its lambda = mu = 0 case."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lnl_lightning.data.contract import BIAS_TARGET, IMAGE, LABEL, BiasSpec
from lnl_lightning.errors import ConfigError
from lnl_lightning.models.base_module import (
    DebiasModule,
    NetworkFactory,
    OptimizerFactory,
    SchedulerFactory,
    check_weight,
    rng_states,
    set_rng_states,
)
from lnl_lightning.models.gradient_reversal import grad_reverse
from lnl_lightning.models.losses import bias_cross_entropy, negative_entropy

__all__ = ["LNLModule", "bias_cross_entropy", "negative_entropy", "rng_states", "set_rng_states"]

STEPS = ("official", "fused")


class LNLModule(DebiasModule):
    """Learning Not to Learn (Kim et al., CVPR 2019).

    A feature extractor f feeds a label head g and a bias head h. Each training step
    runs the official algorithm:

    1. f and g step on ``CE(g(f(x)), label) + lambda_ * negative_entropy(h(f(x)))``:
       f learns the label and makes h's prediction uniform; h is frozen in this step.
    2. h steps on ``CE(h(GradReverse_mu(f(x))), bias_target)`` (for a per-pixel colour
       target the sum of the three channels' losses, :func:`bias_cross_entropy`): h learns
       to predict the bias while the reversal pushes f by ``-mu`` times that gradient. The
       f+g optimizer steps again, f with its gradient and g with a zero one, so g moves by
       momentum and weight decay: the official code's PyTorch 0.4 ``zero_grad()`` filled
       gradients with zeros rather than dropping them.

    ``step="fused"`` computes both updates from one forward and one backward pass of f
    (less time on a CPU): the gradients are those of the two steps, except that step 2
    sees f as it was before step 1's update, and f and g take one optimizer step per
    batch (f with the summed gradient) instead of two.

    With ``lambda_ = mu = 0`` (``model=baseline``) f and g learn the label alone and h
    is trained on detached features as a probe, so bias predictability is measured
    for both methods.

    Several processes (DDP): each step has two backward passes, each reaching only part
    of the parameters (h nothing in step 1, g nothing in step 2); each is followed by one
    all-reduce of exactly the gradients it produced (:meth:`backward_and_reduce`): f+g
    after step 1, h (and f when mu > 0) after step 2.

    Args:
        lambda_: weight of the negative-entropy term (lambda).
        mu: scale of the gradient reversal into f (mu).
        step: "official" (the two steps above) or "fused" (one pass, see above).
        method: the run's label ("lnl"; ``conf/model/baseline.yaml`` sets "baseline").
        The others: see :class:`~.base_module.DebiasModule`.
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        label_head: nn.Module,
        bias_head: nn.Module,
        bias_spec: BiasSpec,
        lambda_: float = 0.01,
        mu: float = 0.1,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        step: str = "official",
        test_names: Sequence[str] = ("test",),
        init_from: str | None = None,
        warm_start_lr: float | None = 0.001,
        method: str = "lnl",
        make_networks: NetworkFactory | None = None,
    ) -> None:
        lambda_, mu = check_weight("lambda_", lambda_), check_weight("mu", mu)
        if step not in STEPS:
            raise ConfigError(f"model.step must be one of {STEPS}, got '{step}'")
        super().__init__(
            feature_extractor,
            label_head,
            bias_head,
            bias_spec,
            method=method,
            optimizer=optimizer,
            scheduler=scheduler,
            test_names=test_names,
            init_from=init_from,
            warm_start_lr=warm_start_lr,
            make_networks=make_networks,
        )
        self.save_method_hyperparameters(lambda_=lambda_, mu=mu, step=step)
        self.step = step
        self.lambda_ = float(lambda_)
        self.mu = float(mu)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_main, opt_bias = self.optimizers()
        if self.step == "fused":
            label_loss, label_logits, bias_loss = self.fused_step(batch, opt_main, opt_bias)
        else:
            label_loss, label_logits, features = self.label_step(batch, opt_main)
            bias_loss = self.bias_step(batch, features, opt_main, opt_bias)

        self.record_step(batch, batch_idx, label_loss, label_logits, bias_loss)

    def label_step(
        self, batch: dict[str, torch.Tensor], opt_main: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step 1: f and g learn the label and, with weight lambda_, to make h uncertain.

        Returns the label loss, the label logits and f's (detached) features.
        """
        self.toggle_optimizer(opt_main)  # h gets no gradient, hence no update, here
        try:
            features = self.feature_extractor(batch[IMAGE])
            label_logits = self.label_head(features)
            label_loss = F.cross_entropy(label_logits, batch[LABEL])
            loss = label_loss
            if self.lambda_ > 0:
                neg_entropy = negative_entropy(self.bias_head(features))
                loss = loss + self.lambda_ * neg_entropy
                self.log("train/neg_entropy", neg_entropy.detach())
            opt_main.zero_grad()
            self.backward_and_reduce(loss, [self.feature_extractor, self.label_head])
            opt_main.step()
        finally:
            self.untoggle_optimizer(opt_main)
        return label_loss, label_logits, features.detach()

    def bias_step(
        self, batch: dict[str, torch.Tensor], features: torch.Tensor, opt_main: Any, opt_bias: Any
    ) -> torch.Tensor:
        """Step 2: h learns the bias; through the reversal layer f is pushed to un-learn it."""
        if self.mu > 0:
            # f changed in step 1: recompute its features, as the official code does.
            bias_input = grad_reverse(self.feature_extractor(batch[IMAGE]), self.mu)
        else:
            bias_input = features  # step 1's, detached: the baseline probe moves no f
        bias_loss = bias_cross_entropy(self.bias_head(bias_input), batch[BIAS_TARGET])
        # Zero-filled, not dropped: g's zero gradient still gets momentum and weight decay.
        opt_main.zero_grad(set_to_none=False)
        opt_bias.zero_grad()
        self.backward_and_reduce(
            bias_loss, [self.bias_head, self.feature_extractor] if self.mu > 0 else [self.bias_head]
        )
        opt_bias.step()
        if self.mu > 0:
            opt_main.step()  # f: reversed bias gradient; g: momentum and weight decay only
        return bias_loss

    def fused_step(
        self, batch: dict[str, torch.Tensor], opt_main: Any, opt_bias: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1 and 2 from one forward and one backward pass of f."""
        features = self.feature_extractor(batch[IMAGE])
        label_logits = self.label_head(features)
        label_loss = F.cross_entropy(label_logits, batch[LABEL])
        loss = label_loss
        if self.lambda_ > 0:
            # h with detached parameters: the entropy term moves f only, as in step 1
            frozen = {name: p.detach() for name, p in self.bias_head.named_parameters()}
            neg_entropy = negative_entropy(functional_call(self.bias_head, frozen, (features,)))
            loss = loss + self.lambda_ * neg_entropy
            self.log("train/neg_entropy", neg_entropy.detach())
        bias_input = grad_reverse(features, self.mu) if self.mu > 0 else features.detach()
        bias_loss = bias_cross_entropy(self.bias_head(bias_input), batch[BIAS_TARGET])
        opt_main.zero_grad()
        opt_bias.zero_grad()
        self.backward_and_reduce(
            loss + bias_loss, [self.feature_extractor, self.label_head, self.bias_head]
        )
        opt_main.step()
        opt_bias.step()
        return label_loss, label_logits, bias_loss
