"""A training step replayed from a CUDA graph: the same arithmetic, its kernels launched at once.

A step of the Colored MNIST network is a few hundred small kernels whose launches cost more
than their work; a CUDA graph launches them all at once. The engine (:mod:`.module`)
mixes this in and calls :meth:`GraphedStep._graph_step` when ``perf.cuda_graph`` is on. The
step it replays must be graph-safe: no host sync, every tensor it writes written in place
(the engine's bookkeeping and a method's ``update`` that declares ``graph_safe``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lnl_lightning.data.contract import LABEL

log = logging.getLogger(__name__)

Run = Callable[[dict[str, torch.Tensor]], Any]


class GraphedStep:
    """The capture-and-replay bookkeeping of a LightningModule's training step.

    The first full batches run eagerly on a side stream (as capturing needs), then one step
    is captured and each later full batch is copied into its inputs and replayed. The
    captured learning rates are constants: a scheduler's change triggers a new capture. A
    batch of another size (an epoch's last) runs eagerly, on the same weights and optimizer
    state. On a CPU every step runs eagerly, the same code.
    """

    cuda_graph: bool
    device: torch.device

    def _init_graph(self, cuda_graph: bool) -> None:
        self.cuda_graph = cuda_graph
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_inputs: dict[str, torch.Tensor] | None = None
        self._graph_output: Any = None
        self._graph_lrs: tuple[float, ...] = ()
        self._graph_warmup = 3  # eager steps before the capture
        self._largest_batch = 0  # only full batches are captured and replayed
        self._python_steps: list[int] = []  # optimizer steps taken while Python ran the step
        self._steps_per_batch: list[int] = []
        self._counted: list[torch.optim.Optimizer] = []

    def _graph_step(
        self,
        batch: dict[str, torch.Tensor],
        optimizers: Sequence[Any],
        step: Callable[[dict[str, torch.Tensor], Sequence[torch.optim.Optimizer]], Any],
    ) -> Any:
        """``step(batch, raw optimizers)``, replayed from a CUDA graph on a GPU.

        ``optimizers`` are Lightning's wrappers: they count the optimizer steps a replay takes
        (``trainer.global_step``), as many as Python saw the step take when it last ran.
        """
        raw = tuple(opt.optimizer for opt in optimizers)

        def run(inputs: dict[str, torch.Tensor]) -> Any:
            return step(inputs, raw)

        self._count_steps_of(raw)
        self._python_steps[:] = [0] * len(raw)
        output = self._replay(batch, run, raw) if self._graphs_available() else run(batch)
        if any(self._python_steps):
            self._steps_per_batch = list(self._python_steps)
        for optimizer, steps in zip(optimizers, self._steps_per_batch, strict=True):
            for _ in range(steps):
                optimizer._on_before_step()
                optimizer._on_after_step()
        return output

    def _count_steps_of(self, raw: tuple[torch.optim.Optimizer, ...]) -> None:
        if list(raw) == self._counted:
            return
        self._counted, self._python_steps = list(raw), [0] * len(raw)
        for index, optimizer in enumerate(raw):

            def counted(*_: Any, index: int = index) -> None:
                self._python_steps[index] += 1

            optimizer.register_step_post_hook(counted)

    def _replay(
        self,
        batch: dict[str, torch.Tensor],
        run: Run,
        optimizers: tuple[torch.optim.Optimizer, ...],
    ) -> Any:
        lrs = tuple(group["lr"] for opt in optimizers for group in opt.param_groups)
        static, size = self._graph_inputs, len(batch[LABEL])
        self._largest_batch = max(self._largest_batch, size)
        if static is not None and len(static[LABEL]) < size:
            # a short batch was captured (e.g. the first batch of a resumed epoch): capture
            # the full size anew, after one warm-up step at that size, or it would run eagerly
            self._graph = self._graph_inputs = static = None
            self._graph_warmup = 1
        if size < self._largest_batch:
            return run(batch)  # a short batch: not what is (or will be) captured
        if static is not None and self._graph_lrs == lrs:
            for key, value in static.items():
                value.copy_(batch[key])
            self._graph.replay()
            return self._graph_output  # the captured outputs, rewritten by the replay
        if self._graph_warmup > 0:
            self._graph_warmup -= 1
            return self._on_side_stream(run, batch)
        self._graph = self._graph_inputs = self._graph_output = None  # release the old capture
        inputs = {key: value.clone() for key, value in batch.items()}
        try:
            graph, output = self._capture(run, inputs)
        except RuntimeError as err:  # nothing ran while capturing: go on eagerly
            log.warning("CUDA graph capture failed, training on without it: %s", err)
            self.cuda_graph = False
            return run(batch)
        self._graph, self._graph_inputs, self._graph_lrs = graph, inputs, lrs
        self._graph_output = output
        graph.replay()
        log.info("CUDA graph captured: the training step is replayed (learning rates %s)", lrs)
        return output

    # the three device-specific parts, apart so that a CPU test can stand in for them
    def _graphs_available(self) -> bool:
        return self.device.type == "cuda"

    def _on_side_stream(self, run: Run, batch: dict[str, torch.Tensor]) -> Any:
        """An eager step on a side stream: the warm-up a capture needs."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            output = run(batch)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return output

    def _capture(self, run: Run, inputs: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        """Record ``run(inputs)`` into a CUDA graph (nothing runs until it is replayed);
        return the graph and the step's outputs (tensors a replay rewrites)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = run(inputs)
        return graph, output
