"""Learning Not to Learn (Kim et al., CVPR 2019), and the baseline as its lambda = mu = 0 case."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call

from lnl_lightning.data.contract import IMAGE, BiasSpec
from lnl_lightning.engine.module import (
    Backward,
    DebiasModule,
    NetworkFactory,
    OptimizerFactory,
    SchedulerFactory,
    StepResult,
    member_values,
    rng_states,
    set_rng_states,
)
from lnl_lightning.errors import ConfigError
from lnl_lightning.methods.losses import (
    bias_cross_entropy,
    member_negative_entropy,
    negative_entropy,
)
from lnl_lightning.nets.gradient_reversal import grad_reverse
from lnl_lightning.schemas import check_choice

__all__ = ["LNLModule", "bias_cross_entropy", "negative_entropy", "rng_states", "set_rng_states"]

Step = Literal["official", "fused"]


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

    The step is written over the member axis (see :mod:`.module`): each loss is one
    value per member, each member with its own lambda and mu, and a pack of K runs takes
    exactly the steps its members would take alone. Members of one pack are all baselines
    (mu = 0: one f+g step per batch) or none is (the second f+g step), and have lambda > 0
    all or none (step 1 runs h, moving its BatchNorm statistics, only then), since one
    optimizer steps them all.

    Several processes (DDP): each step has two backward passes, each reaching only part
    of the parameters (h nothing in step 1, g nothing in step 2); each is followed by one
    all-reduce of exactly the gradients it produced (:meth:`backward_and_reduce`): f+g
    after step 1, h (and f when mu > 0) after step 2.

    Args:
        lambda_: weight of the negative-entropy term (lambda); one per member in a pack.
        mu: scale of the gradient reversal into f (mu); one per member in a pack.
        step: "official" (the two steps above) or "fused" (one pass, see above).
        method: the run's label ("lnl"; ``conf/model/baseline.yaml`` sets "baseline").
        The others: see :class:`~lnl_lightning.engine.module.DebiasModule`.
    """

    packable = True
    graph_safe = True
    member_settings = ("lambda_", "mu")

    @classmethod
    def can_pack(cls, settings: Any) -> bool:
        """The official step only: the fused one is written for one run."""
        return cls.packable and settings.get("step", "official") == "official"

    def __init__(
        self,
        feature_extractor: nn.Module,
        label_head: nn.Module,
        bias_head: nn.Module,
        bias_spec: BiasSpec,
        lambda_: float | Sequence[float] = 0.01,
        mu: float | Sequence[float] = 0.1,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        step: Step = "official",
        test_names: Sequence[str] = ("test",),
        init_from: str | None = None,
        warm_start_lr: float | None = 0.001,
        method: str = "lnl",
        make_networks: NetworkFactory | None = None,
        val_names: Sequence[str] = ("val",),
    ) -> None:
        lambdas, mus = member_values("lambda_", lambda_), member_values("mu", mu)
        step = check_choice("model.step", step, Step)
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
            val_names=val_names,
        )
        if len(lambdas) != self.num_members or len(mus) != self.num_members:
            raise ConfigError(
                f"model.lambda_ and model.mu: one value per member ({self.num_members}), got "
                f"{lambdas} and {mus}"
            )
        if len({m > 0 for m in mus}) > 1:  # one optimizer steps them all: one rule for all
            raise ConfigError(
                f"a pack holds either baselines (model.mu=0: one f+g step per batch) or LNL "
                f"runs (model.mu>0: two), not both; got mu {mus}"
            )
        if len({lam > 0 for lam in lambdas}) > 1:
            # step 1 runs h (training mode: its BatchNorm statistics move) only when lambda > 0
            raise ConfigError(
                f"in a pack, model.lambda_ is > 0 for every member or for none; got {lambdas}"
            )
        if step != "official" and self.packed:
            raise ConfigError("packed runs train the official step only: model.step=official")
        one = not self.packed
        self.save_method_hyperparameters(
            lambda_=lambdas[0] if one else lambdas, mu=mus[0] if one else mus, step=step
        )
        self.step = step
        self.lambdas, self.mus = lambdas, mus

    @property
    def lambda_(self) -> float:
        """A run's lambda (a pack's first member's: all are > 0 or none is)."""
        return self.lambdas[0]

    @property
    def mu(self) -> float:
        """A run's mu (a pack's first member's: all are > 0 or none is)."""
        return self.mus[0]

    # ------------------------------------------------------------------ training
    def update(
        self, batch: dict[str, torch.Tensor], optimizers: Sequence[Any], backward: Backward
    ) -> StepResult:
        opt_main, opt_bias = optimizers
        if self.step == "fused":
            return self.fused_step(batch, opt_main, opt_bias, backward)
        label_loss, label_logits, features, logged = self.label_step(batch, opt_main, backward)
        bias_loss = self.bias_step(batch, features, opt_main, opt_bias, backward)
        return StepResult(label_loss, label_logits, bias_loss, logged)

    def entropy_term(self, bias_logits: torch.Tensor, logged: dict[str, torch.Tensor]) -> Any:
        """lambda times h's negative entropy, per member (logged as train/neg_entropy)."""
        neg_entropy = member_negative_entropy(self.by_member(bias_logits))
        logged["train/neg_entropy"] = neg_entropy.detach()
        return self.member_constant("lambda_", self.lambdas, neg_entropy) * neg_entropy

    def reversed_features(self, features: torch.Tensor) -> torch.Tensor:
        """f's features into h through the reversal: f gets -mu times h's gradient."""
        return grad_reverse(features, self.channel_scale("mu", self.mus, features))

    def label_step(
        self, batch: dict[str, torch.Tensor], opt_main: Any, backward: Backward
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Step 1: f and g learn the label and, with weight lambda_, to make h uncertain.

        Returns the label loss, the label logits (member layout), f's (detached) features
        and what to log.
        """
        logged: dict[str, torch.Tensor] = {}
        self.toggle_optimizer(opt_main)  # h gets no gradient, hence no update, here
        try:
            features = self.feature_extractor(batch[IMAGE])
            label_logits = self.label_head(features)
            label_loss = self.label_loss(label_logits, batch)
            loss = label_loss
            if self.lambda_ > 0:
                loss = loss + self.entropy_term(self.bias_head(features), logged)
            opt_main.zero_grad()
            # members share no weight: the sum gives each its own gradient
            backward(loss.sum(), [self.feature_extractor, self.label_head])
            opt_main.step()
        finally:
            self.untoggle_optimizer(opt_main)
        return label_loss, self.by_member(label_logits), features.detach(), logged

    def bias_step(
        self,
        batch: dict[str, torch.Tensor],
        features: torch.Tensor,
        opt_main: Any,
        opt_bias: Any,
        backward: Backward,
    ) -> torch.Tensor:
        """Step 2: h learns the bias; through the reversal layer f is pushed to un-learn it."""
        if self.mu > 0:
            # f changed in step 1: recompute its features, as the official code does.
            bias_input = self.reversed_features(self.feature_extractor(batch[IMAGE]))
        else:
            bias_input = features  # step 1's, detached: the baseline probe moves no f
        bias_loss = self.bias_loss(self.bias_head(bias_input), batch)
        # Zero-filled, not dropped: g's zero gradient still gets momentum and weight decay.
        opt_main.zero_grad(set_to_none=False)
        opt_bias.zero_grad()
        backward(
            bias_loss.sum(),
            [self.bias_head, self.feature_extractor] if self.mu > 0 else [self.bias_head],
        )
        opt_bias.step()
        if self.mu > 0:
            opt_main.step()  # f: reversed bias gradient; g: momentum and weight decay only
        return bias_loss

    def fused_step(
        self, batch: dict[str, torch.Tensor], opt_main: Any, opt_bias: Any, backward: Backward
    ) -> StepResult:
        """Steps 1 and 2 from one forward and one backward pass of f."""
        logged: dict[str, torch.Tensor] = {}
        features = self.feature_extractor(batch[IMAGE])
        label_logits = self.label_head(features)
        label_loss = self.label_loss(label_logits, batch)
        loss = label_loss
        if self.lambda_ > 0:
            # h with detached parameters: the entropy term moves f only, as in step 1
            frozen = {name: p.detach() for name, p in self.bias_head.named_parameters()}
            loss = loss + self.entropy_term(
                functional_call(self.bias_head, frozen, (features,)), logged
            )
        bias_input = self.reversed_features(features) if self.mu > 0 else features.detach()
        bias_loss = self.bias_loss(self.bias_head(bias_input), batch)
        opt_main.zero_grad()
        opt_bias.zero_grad()
        backward(
            (loss + bias_loss).sum(), [self.feature_extractor, self.label_head, self.bias_head]
        )
        opt_main.step()
        opt_bias.step()
        return StepResult(label_loss, self.by_member(label_logits), bias_loss, logged)
