"""K Learning Not to Learn runs trained as one packed network (see :mod:`.packing`).

Each member is an ordinary :class:`LNLModule`, built from its own config and seed, so it
starts exactly as its own run would (initial weights, warm start, optimizer settings). The
pack trains their packed copies with the official two-step algorithm on a batch that holds
one batch of each member's data, side by side: member k sees its own images, in its own
order, with its own lambda and mu. At the end, :meth:`PackedLNLModule.unpack` writes each
member's weights and optimizer state back into its own module, ready to be saved as an
ordinary run's checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lnl_lightning.data.contract import BIAS_GROUP, BIAS_TARGET, IGNORE_INDEX, IMAGE, LABEL
from lnl_lightning.errors import ConfigError, TrainingDiverged
from lnl_lightning.metrics import group_summary
from lnl_lightning.models.base_module import RunModule
from lnl_lightning.models.gradient_reversal import grad_reverse
from lnl_lightning.models.lnl_module import LNLModule
from lnl_lightning.models.packing import pack, pack_parameter_values, unpack_parameter_values

log = logging.getLogger(__name__)


def member_negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """:func:`negative_entropy` of each member: logits ``(N, K, bins, ...)`` -> ``(K,)``."""
    log_p = F.log_softmax(logits, dim=2)
    return (log_p.exp() * log_p).sum(dim=2).transpose(0, 1).flatten(1).mean(1)


def member_bias_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`bias_cross_entropy` of each member: ``(N, K, bins, 3, h, w)`` logits -> ``(K,)``."""
    per_pixel = F.cross_entropy(
        logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (N, K, 3, h, w)
    valid = (target != IGNORE_INDEX).flatten(3).sum(3).sum(0)  # (K, 3)
    channel_sums = per_pixel.flatten(3).sum(3).sum(0)
    return (channel_sums / valid.clamp(min=1)).sum(1)


class PackedLNLModule(RunModule):
    """Trains ``members`` (ordinary :class:`LNLModule` runs) together, each exactly as alone.

    The members must share everything but what packing keeps per member: seed (initial
    weights, data order), data (sigma^2), lambda_, mu and the warm-start checkpoint. Either
    all are baselines (mu = 0: one f+g step per batch) or none is (mu > 0: the official
    second f+g step), since the optimizer steps the whole pack at once; likewise lambda_ is
    > 0 for all or for none (step 1 runs h, and moves its BatchNorm statistics, only then).

    ``cuda_graph=True`` replays the training step from a CUDA graph on a GPU
    (:meth:`_graph_step`): the same arithmetic, launched at once.

    Batches follow the packed contract: ``image (N, K*3, H, W)``, ``label (N, K)``,
    ``bias_target (N, K, 3, h, w)``, ``bias_group (N, K)``.
    """

    def __init__(self, members: Sequence[LNLModule], cuda_graph: bool = False) -> None:
        super().__init__()
        members = list(members)
        first = members[0]
        for member in members:
            if type(member) is not LNLModule:
                raise ConfigError(
                    f"packed runs hold LNL and baseline runs only (model=lnl, baseline); "
                    f"{member.method} ({type(member).__name__}) trains alone: drop "
                    f"hydra/launcher=packed or perf=fast"
                )
        if any(m.step != "official" for m in members):
            raise ConfigError("packed runs train the official step only: model.step=official")
        if len({m.mu > 0 for m in members}) > 1:
            raise ConfigError(
                "a pack holds either baselines (model.mu=0) or LNL runs (model.mu>0), not both"
            )
        if len({m.lambda_ > 0 for m in members}) > 1:
            # step 1 runs h (training mode: its BatchNorm statistics move) only when lambda > 0
            raise ConfigError("in a pack, model.lambda_ is > 0 for every member or for none")
        if len({bool(m.init_from) for m in members}) > 1:
            raise ConfigError("in a pack, either every member is warm-started or none is")
        self.automatic_optimization = False
        self.members = members  # a plain list: their networks are not trained, the pack is
        self.num_members = len(members)
        self.bias_spec = first.bias_spec
        self.test_names = first.test_names
        self.unlearn = first.mu > 0
        self.entropy_term = first.lambda_ > 0
        self.feature_extractor = pack([m.feature_extractor for m in members])
        self.label_head = pack([m.label_head for m in members])
        self.bias_head = pack([m.bias_head for m in members])
        self.register_buffer("lambdas", torch.tensor([m.lambda_ for m in members]))
        self.register_buffer("mus", torch.tensor([m.mu for m in members]))
        # each member's own evaluation metrics (its group accuracy and bias accuracy)
        self.member_metrics = nn.ModuleList(
            nn.ModuleDict({"group_acc": m.group_acc, "bias_acc": m.bias_acc}) for m in members
        )
        # per member: label loss, bias loss, correct labels, images (summed over the epoch)
        self.register_buffer("train_sums", torch.zeros(len(members), 4, dtype=torch.float64))
        self.register_buffer("first_bad", torch.full((len(members),), -1, dtype=torch.long))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._batches_seen = 0
        self.cuda_graph = cuda_graph
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_inputs: dict[str, torch.Tensor] | None = None
        self._graph_lrs: tuple[float, ...] = ()
        self._graph_warmup = 3  # eager steps before the capture
        self._largest_batch = 0  # only full batches are captured and replayed
        self._stages_evaluated: set[str] = set()
        # filled by evaluation: member -> {metric: value}, and member -> {stage: (correct, total)}
        self.member_results: list[dict[str, float]] = [{} for _ in members]
        self.member_counts: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [
            {} for _ in members
        ]
        self.results_epoch = -1  # the training epoch member_results were measured after

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_main, opt_bias = self.optimizers()
        if self.cuda_graph:
            self._graph_step(batch, opt_main, opt_bias)
        else:
            self._step(batch, opt_main, opt_bias, self.manual_backward)
        self._batches_seen += 1
        if self._batches_seen % 50 == 0:
            self._stop_if_diverged()

    def _step(
        self,
        batch: dict[str, torch.Tensor],
        opt_main: torch.optim.Optimizer,
        opt_bias: torch.optim.Optimizer,
        backward: Callable[[torch.Tensor], None],
    ) -> None:
        """The official two-step update of every member (no host sync: a CUDA graph can hold it)."""
        images, labels = batch[IMAGE], batch[LABEL]

        # Step 1: f and g learn the label and, with weight lambda, to make h uncertain.
        self.toggle_optimizer(opt_main)
        try:
            features = self.feature_extractor(images)
            label_logits = self.label_head(features).view(len(labels), self.num_members, -1)
            label_loss = F.cross_entropy(label_logits.transpose(1, 2), labels, reduction="none")
            label_loss = label_loss.mean(0)  # (K,)
            loss = label_loss
            if self.entropy_term:
                loss = loss + self.lambdas * member_negative_entropy(self.bias_head(features))
            opt_main.zero_grad()
            backward(loss.sum())  # members share no weight: each gets its own gradient
            opt_main.step()
        finally:
            self.untoggle_optimizer(opt_main)

        # Step 2: h learns the bias; through the reversal, f un-learns it (mu > 0).
        if self.unlearn:
            scale = self.mus.repeat_interleave(features.shape[1] // self.num_members)
            bias_input = grad_reverse(self.feature_extractor(images), scale.view(1, -1, 1, 1))
        else:
            bias_input = features.detach()
        bias_loss = member_bias_cross_entropy(self.bias_head(bias_input), batch[BIAS_TARGET])
        opt_main.zero_grad(set_to_none=False)
        opt_bias.zero_grad()
        backward(bias_loss.sum())
        opt_bias.step()
        if self.unlearn:
            opt_main.step()

        self._record(label_loss.detach(), bias_loss.detach(), label_logits.detach(), labels)

    # ------------------------------------------------------------- CUDA graph
    def _graph_step(self, batch: dict[str, torch.Tensor], opt_main: Any, opt_bias: Any) -> None:
        """:meth:`_step` on the raw optimizers, replayed from a CUDA graph on a GPU.

        A step of this network is a few hundred small kernels whose launches cost more than
        their work; a CUDA graph launches them all at once. The first full batches run
        eagerly on a side stream (as capturing needs), then one step is captured and each
        later full batch is copied into its inputs and replayed. The captured learning rates
        are constants: a scheduler's change triggers a new capture. A batch of another size
        (an epoch's last) runs eagerly, on the same weights and optimizer state. On a CPU
        every step runs eagerly, the same code.
        """
        raw = (opt_main.optimizer, opt_bias.optimizer)

        def run(inputs: dict[str, torch.Tensor]) -> None:
            self._step(inputs, *raw, backward=lambda loss: loss.backward())

        if self._graphs_available():
            self._replay(batch, run, raw)
        else:
            run(batch)
        # what Lightning's optimizer wrappers count (trainer.global_step)
        for optimizer in [opt_main, opt_bias] + [opt_main] * self.unlearn:
            optimizer._on_before_step()
            optimizer._on_after_step()

    def _replay(
        self,
        batch: dict[str, torch.Tensor],
        run: Callable[[dict[str, torch.Tensor]], None],
        optimizers: tuple[torch.optim.Optimizer, ...],
    ) -> None:
        lrs = tuple(group["lr"] for opt in optimizers for group in opt.param_groups)
        static, size = self._graph_inputs, len(batch[LABEL])
        self._largest_batch = max(self._largest_batch, size)
        if static is not None and len(static[LABEL]) < size:
            # a short batch was captured (e.g. the first batch of a resumed epoch): capture
            # the full size anew, after one warm-up step at that size, or it would run eagerly
            self._graph = self._graph_inputs = static = None
            self._graph_warmup = 1
        if size < self._largest_batch:
            run(batch)  # a short batch: not what is (or will be) captured
        elif static is not None and self._graph_lrs == lrs:
            for key, value in static.items():
                value.copy_(batch[key])
            self._graph.replay()
        elif self._graph_warmup > 0:
            self._on_side_stream(run, batch)
            self._graph_warmup -= 1
        else:
            self._graph = self._graph_inputs = None  # release the previous capture first
            inputs = {key: value.clone() for key, value in batch.items()}
            try:
                graph = self._capture(run, inputs)
            except RuntimeError as err:  # nothing ran while capturing: go on eagerly
                log.warning("CUDA graph capture failed, training on without it: %s", err)
                self.cuda_graph = False
                run(batch)
                return
            self._graph, self._graph_inputs, self._graph_lrs = graph, inputs, lrs
            graph.replay()
            log.info("CUDA graph captured: the training step is replayed (learning rates %s)", lrs)

    # the three device-specific parts, apart so that a CPU test can stand in for them
    def _graphs_available(self) -> bool:
        return self.device.type == "cuda"

    def _on_side_stream(self, run: Callable[..., None], batch: dict[str, torch.Tensor]) -> None:
        """An eager step on a side stream: the warm-up a capture needs."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            run(batch)
        torch.cuda.current_stream(self.device).wait_stream(stream)

    def _capture(
        self, run: Callable[..., None], inputs: dict[str, torch.Tensor]
    ) -> torch.cuda.CUDAGraph:
        """Record ``run(inputs)`` into a CUDA graph (nothing runs until it is replayed)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run(inputs)
        return graph

    def _record(
        self,
        label_loss: torch.Tensor,
        bias_loss: torch.Tensor,
        label_logits: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:
        """Epoch sums per member and the first non-finite batch, without a host sync."""
        n = len(labels)
        correct = (label_logits.argmax(2) == labels).sum(0)
        step = torch.stack([label_loss * n, bias_loss * n, correct, torch.full_like(correct, n)])
        self.train_sums += step.t().double()
        self.steps_done += 1
        bad = ~(torch.isfinite(label_loss) & torch.isfinite(bias_loss))
        self.first_bad.copy_(
            torch.where(bad & (self.first_bad < 0), self.steps_done, self.first_bad)
        )

    def _stop_if_diverged(self) -> None:
        bad = self.first_bad.tolist()
        diverged = [(k, step) for k, step in enumerate(bad) if step >= 0]
        if diverged:
            k, step = diverged[0]
            raise TrainingDiverged(
                f"training diverged: member {k} of the pack (lambda {self.members[k].lambda_}, "
                f"mu {self.members[k].mu}) had a NaN or infinite loss at training batch {step}; "
                f"stopped before saving those weights, earlier checkpoints are kept"
            )

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> PackedLNLModule:
        super()._apply(fn, recurse)
        if self.train_sums.dtype != torch.float64:  # trainer.precision=bf16-true, 16-true
            self.train_sums = self.train_sums.double()  # epoch sums of ~470 batches stay exact
        return self

    def on_train_epoch_start(self) -> None:
        self.train_sums.zero_()

    def train_metrics(self) -> list[dict[str, float]]:
        """Each member's running means over this training epoch (one host sync)."""
        sums = self.train_sums.cpu()
        metrics = []
        for k in range(self.num_members):
            label_loss, bias_loss, correct, images = sums[k].tolist()
            images = max(images, 1.0)
            metrics.append(
                {
                    "train/label_loss_epoch": label_loss / images,
                    "train/bias_loss_epoch": bias_loss / images,
                    "train/acc": correct / images,
                }
            )
        return metrics

    def on_train_epoch_end(self) -> None:
        self._stop_if_diverged()
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if scheduler is not None:
                scheduler.step()

    # ---------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        features = self.feature_extractor(batch[IMAGE])
        labels = batch[LABEL]
        label_logits = self.label_head(features).view(len(labels), self.num_members, -1)
        bias_logits = self.bias_head(features)
        for k, metrics in enumerate(self.member_metrics):
            metrics["group_acc"][stage].update(
                label_logits[:, k], labels[:, k], batch[BIAS_GROUP][:, k]
            )
            metrics["bias_acc"][stage].update(bias_logits[:, k], batch[BIAS_TARGET][:, k])

    def _start_evaluation(self) -> None:
        self.member_results = [{} for _ in self.members]

    def _finish_stage(self, stage: str) -> None:
        for k, metrics in enumerate(self.member_metrics):
            group_acc, bias_acc = metrics["group_acc"][stage], metrics["bias_acc"][stage]
            correct, total = group_acc.correct.cpu().clone(), group_acc.total.cpu().clone()
            self.member_counts[k][stage] = (correct, total)
            summary = group_summary(
                correct, total, group_acc.aligned_mask, group_acc.conflicting_mask
            )
            values = {f"{stage}/{name}": float(value) for name, value in summary.items()}
            values[f"{stage}/bias_acc"] = float(bias_acc.compute())
            self.member_results[k].update(values)
            group_acc.reset()
            bias_acc.reset()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        self.results_epoch = self.current_epoch
        mean = {
            f"members_mean/{name}": sum(r[name] for r in self.member_results) / self.num_members
            for name in self.member_results[0]
        }
        self.log_dict(mean)  # what the pack's own checkpoint callback and logs see

    # ----------------------------------------------------------------- set-up
    def configure_optimizers(self) -> Any:
        main = [*self.feature_extractor.parameters(), *self.label_head.parameters()]
        return self.members[0].make_optimizers(
            [main, list(self.bias_head.parameters())], self._load_warm_optimizer_states
        )

    def _load_warm_optimizer_states(self, optimizer: torch.optim.Optimizer) -> None:
        """Pack each member's saved f+g optimizer state (momentum buffers) into ``optimizer``."""
        buffers: dict[str, list[dict[str, torch.Tensor]]] = {
            "feature_extractor": [],
            "label_head": [],
        }
        for member in self.members:
            own = member.optimizer_factory(
                [*member.feature_extractor.parameters(), *member.label_head.parameters()]
            )
            member._load_warm_optimizer_state(own)
            for name in buffers:
                net = getattr(member, name)
                buffers[name].append(
                    {n: own.state[p]["momentum_buffer"] for n, p in net.named_parameters()}
                )
        for name, values in buffers.items():
            net = getattr(self, name)
            packed = pack_parameter_values(net, values)
            for p, value in zip(net.parameters(), packed, strict=True):
                optimizer.state[p]["momentum_buffer"] = value.to(p.device)

    @torch.no_grad()
    def unpack(self) -> list[LNLModule]:
        """Copy each member's trained weights back into its own module; return the members.

        Each member also gets ``packed_optimizer_states``: its f+g and h optimizer states
        in the layout of its own optimizers, as an ordinary run's checkpoint holds them.
        """
        optimizers = self.trainer.optimizers if self._trainer is not None else []
        for k, member in enumerate(self.members):
            member.to(dtype=self.dtype)  # e.g. float64 under trainer.precision=64-true
            for name in ("feature_extractor", "label_head", "bias_head"):
                getattr(member, name).load_state_dict(
                    {n: v.cpu() for n, v in getattr(self, name).member_state_dict(k).items()}
                )
            member.packed_optimizer_states = [
                self._member_optimizer_state(optimizer, k, member, names)
                for optimizer, names in zip(
                    optimizers, (("feature_extractor", "label_head"), ("bias_head",)), strict=False
                )
            ]
        return self.members

    def _member_optimizer_state(
        self, optimizer: torch.optim.Optimizer, k: int, member: LNLModule, names: tuple[str, ...]
    ) -> dict[str, Any]:
        params = [p for name in names for p in getattr(member, name).parameters()]
        own = member.optimizer_factory(params)
        for group, packed_group in zip(own.param_groups, optimizer.param_groups, strict=True):
            for key, value in packed_group.items():
                if key != "params":
                    group[key] = value
        for name in names:
            packed_net, net = getattr(self, name), getattr(member, name)
            packed_params = list(packed_net.parameters())
            if any("momentum_buffer" not in optimizer.state.get(p, {}) for p in packed_params):
                continue  # never stepped: no momentum yet
            values = [optimizer.state[p]["momentum_buffer"] for p in packed_params]
            net_names = [n for n, _ in net.named_parameters()]
            member_values = unpack_parameter_values(packed_net, values, k, net_names)
            for n, p in net.named_parameters():
                own.state[p]["momentum_buffer"] = member_values[n].cpu().clone()
        return own.state_dict()
