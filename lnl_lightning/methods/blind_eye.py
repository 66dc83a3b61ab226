"""Turning a Blind Eye (Alvi et al., ECCV Workshops 2018): a confusion loss, no reversal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lnl_lightning.data.contract import IMAGE
from lnl_lightning.engine.module import Backward, DebiasModule, StepResult, check_weight
from lnl_lightning.methods.losses import member_uniform_cross_entropy


class BlindEyeModule(DebiasModule):
    """Alvi et al.'s bias removal, over the same f, g, h and recipe as LNL.

    Each training step:

    1. f and g step on ``CE(g(f(x)), label) + confusion_weight * CE(uniform, h(f(x)))``:
       the confusion loss is the cross-entropy between the uniform distribution and h's
       prediction, smallest when h cannot tell the bias classes apart; h is frozen here.
    2. h steps on its bias loss on f's (detached) features: it keeps learning to predict
       the bias, and no gradient flows back into f (no reversal, unlike LNL).

    Args:
        confusion_weight: alpha, the weight of the confusion loss in f and g's loss.
        method: the run's label ("blind_eye").
        The others: see :class:`~lnl_lightning.engine.module.DebiasModule`.
    """

    def __init__(
        self, *args: Any, confusion_weight: float = 1.0, method: str = "blind_eye", **kwargs: Any
    ) -> None:
        confusion_weight = check_weight("confusion_weight", confusion_weight)
        super().__init__(*args, method=method, **kwargs)
        self.save_method_hyperparameters(confusion_weight=confusion_weight)
        self.confusion_weight = float(confusion_weight)

    def update(
        self, batch: dict[str, torch.Tensor], optimizers: Sequence[Any], backward: Backward
    ) -> StepResult:
        opt_main, opt_bias = optimizers
        # 1. f, g: the label, and h confused (h gets no gradient, hence no update, here)
        self.toggle_optimizer(opt_main)
        try:
            features = self.feature_extractor(batch[IMAGE])
            label_logits = self.label_head(features)
            label_loss = self.label_loss(label_logits, batch)
            confusion = member_uniform_cross_entropy(self.by_member(self.bias_head(features)))
            opt_main.zero_grad()
            backward(
                (label_loss + self.confusion_weight * confusion).sum(),
                [self.feature_extractor, self.label_head],
            )
            opt_main.step()
        finally:
            self.untoggle_optimizer(opt_main)
        # 2. h: the bias, from f's features as they were in step 1
        bias_loss = self.train_bias_probe(batch, features, opt_bias, backward)
        logged = {"train/confusion_loss": confusion.detach()}
        return StepResult(label_loss, self.by_member(label_logits), bias_loss, logged)
