"""Lightning callbacks of the project."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lnl_lightning.data.contract import BIAS_GROUP, IMAGE, LABEL
from lnl_lightning.engine.figures import save_group_matrix, save_sample_grid
from lnl_lightning.engine.loggers import log_group_matrix
from lnl_lightning.records.folder import RunFolder

log = logging.getLogger(__name__)

STOPPED_BY: int | None = None  # signal.SIGINT once a Ctrl-C has asked a fit to stop


class RunFolders(pl.Callback):
    """The run folders a fit writes into: one for an ordinary run, one per member of a pack.

    Callbacks that write a run's records (sample grids, accuracy matrices) write one per
    folder (:func:`run_folders`), so they work the same for a run and for a pack.
    """

    def __init__(self, folders: list[RunFolder]) -> None:
        self.folders = folders


def run_folders(trainer: pl.Trainer) -> list[RunFolder]:
    """The fit's :class:`RunFolders`; without one, the trainer's own folder and loggers."""
    for callback in trainer.callbacks:
        if isinstance(callback, RunFolders):
            return callback.folders
    return [RunFolder(Path(trainer.default_root_dir), None, trainer.loggers, trainer.datamodule)]


class SampleGrid(pl.Callback):
    """Once per run, a grid of training and test images captioned "label / bias group".

    Written as ``samples_{train,test}.png`` in the run folder (each member's, from its own
    data, in a pack) and sent to W&B when it logs.
    """

    def __init__(self, num_images: int = 32) -> None:
        self.num_images = num_images

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.num_images <= 0:
            return
        for folder in run_folders(trainer):
            if folder.datamodule is not None:
                self._write(folder)

    def _write(self, folder: RunFolder) -> None:
        datamodule = folder.datamodule
        spec = datamodule.bias_spec
        test_loader = datamodule.test_dataloader()
        loaders = {
            "train": datamodule.train_dataloader(),
            "test": test_loader[0] if isinstance(test_loader, list) else test_loader,
        }
        for split, loader in loaders.items():
            batch = next(iter(loader))
            n = self.num_images
            path = save_sample_grid(
                batch[IMAGE][:n],
                batch[LABEL][:n],
                batch[BIAS_GROUP][:n],
                folder.path / f"samples_{split}.png",
                f"{split} samples",
                spec.class_names,
                spec.group_names,
                normalization=getattr(datamodule, "normalization", None),
            )
            for logger in folder.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=f"samples/{split}", images=[str(path)])


class GroupMatrixWriter(pl.Callback):
    """After the final validation and test, the label x bias accuracy matrix of each split.

    Written as ``group_acc_<split>.{csv,png}`` in each run folder (by rank 0, from counts
    already summed over processes) and sent to W&B when it logs.
    """

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stages: list[str]) -> None:
        if not trainer.is_global_zero or trainer.state.fn == "fit" or trainer.sanity_checking:
            return
        spec = pl_module.bias_spec
        for folder, counts in zip(run_folders(trainer), pl_module.member_counts, strict=True):
            for stage in stages:
                if stage not in counts:
                    continue
                correct, total = counts[stage]
                csv_path, png_path = save_group_matrix(
                    correct,
                    total,
                    folder.path,
                    f"group_acc_{stage}",
                    spec.class_names,
                    spec.group_names,
                    title=f"{stage} accuracy per (label, bias group)",
                )
                log_group_matrix(folder.loggers, stage, csv_path, png_path)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, list(pl_module.val_names))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, list(pl_module.test_names))


class TrainThroughput(pl.Callback):
    """Logs ``train/images_per_s``: images of all processes per second of training batches;
    and keeps the run's wall time across resumes (:meth:`wall_time_s`).

    Timed from the first batch of an epoch to the end of its last one, so validation is
    not counted; on a GPU the last batch's queued work is waited for, so it counts too.
    The wall time of the processes before a resume, and the last full epoch's rate, travel
    in the checkpoint.
    """

    def __init__(self) -> None:
        self.last_rate: float | None = None  # of the last full epoch
        self.started = time.perf_counter()  # this process's stretch
        self.earlier_s = 0.0  # the stretches before it (from the checkpoint resumed)

    def wall_time_s(self) -> float:
        """Seconds this run has taken, every stretch of it (resumes included)."""
        return self.earlier_s + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self.wall_time_s(), "last_rate": self.last_rate}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.earlier_s = float(state_dict.get("wall_time_s", 0.0))
        self.last_rate = state_dict.get("last_rate", self.last_rate)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.images, self.start, self.end = 0, time.perf_counter(), None

    # a run resumed mid-epoch starts without on_train_epoch_start
    on_train_start = on_train_epoch_start

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ) -> None:
        self.images += len(batch[LABEL]) * trainer.world_size
        if batch_idx + 1 == trainer.num_training_batches and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.end = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.end is not None and self.end > self.start:
            self.last_rate = self.images / (self.end - self.start)
            pl_module.log("train/images_per_s", self.last_rate)


class ChannelsLast(pl.Callback):
    """Runs the networks and the training images in the channels-last memory format."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.to(memory_format=torch.channels_last)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx
    ) -> None:
        batch[IMAGE] = batch[IMAGE].contiguous(memory_format=torch.channels_last)


class CheckpointOnInterrupt(pl.Callback):
    """On SIGTERM (preemption), Ctrl-C or, under SLURM, SIGUSR1 (the time limit is near), save
    ``last.ckpt`` at the end of the current batch and stop.

    A first Ctrl-C takes SIGTERM's route, so it never stops a step between its optimizer
    steps (an LNL step has two): the batch finishes, then the checkpoint is saved. A second
    Ctrl-C stops at once and saves nothing, leaving the last checkpoint as it was.

    The checkpoint goes where the checkpoint callback writes, so ``ckpt_path=last`` with the
    same ``hydra.run.dir`` continues the run. Under SLURM it is also saved as Lightning's
    ``hpc_ckpt_<n>.ckpt`` in the run folder, which a requeued job resumes from by itself; after
    SIGUSR1 the job requeues itself (``scontrol requeue``), as Lightning's auto-requeue does,
    but with a checkpoint taken between two steps rather than inside one.
    """

    def __init__(self) -> None:
        self.requeue = False
        self._previous_handlers: dict[int, Any] = {}
        self._stop_requested = False  # under DDP: a SIGTERM reached this process

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        global STOPPED_BY
        STOPPED_BY = None
        self._previous_handlers[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_ctrl_c)
        # before Lightning installs its handlers: it then leaves SIGUSR1 to this one
        if SLURMEnvironment.detect():
            self._previous_handlers[signal.SIGUSR1] = signal.signal(
                signal.SIGUSR1, self._on_time_limit
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Under DDP, SIGTERM without a collective inside the signal handler.

        Lightning's own handler broadcasts from inside the handler, once per signal received,
        and a rank that received one stops at the end of its batch on its own; when rank 0
        forwards the signal to processes the scheduler signalled too, the ranks' collectives
        stop matching and the run hangs, saving nothing. Here the handler only records the
        signal (rank 0 forwards it once); after each batch every rank learns whether any rank
        was signalled (one all-reduce), so all stop after the same batch and save together.
        """
        self._stop_requested = False
        if trainer.world_size < 2 or threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum: int, frame: Any) -> None:
            if not self._stop_requested and trainer.strategy.launcher is not None:
                trainer.strategy.launcher.kill(signum)  # rank 0's child processes, once
            self._stop_requested = True

        self._previous_handlers.setdefault(signal.SIGTERM, signal.getsignal(signal.SIGTERM))
        signal.signal(signal.SIGTERM, on_sigterm)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ) -> None:
        if trainer.world_size < 2:
            return
        import torch.distributed as dist

        flag = torch.tensor([int(self._stop_requested)], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():  # every rank stops after this batch (Lightning raises at its end)
            trainer._signal_connector.received_sigterm = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def _on_ctrl_c(self, signum: int, frame: Any) -> None:
        global STOPPED_BY
        if STOPPED_BY == signal.SIGINT:  # the second one: stop now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        STOPPED_BY = signal.SIGINT
        log.warning(
            "Ctrl-C: finishing this batch, saving checkpoints/last.ckpt, then stopping "
            "(Ctrl-C again stops at once, without saving)"
        )
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning stops after the current batch

    def _on_time_limit(self, signum: int, frame: Any) -> None:
        log.warning("SIGUSR1: the time limit is near; checkpointing, then requeueing the job")
        self.requeue = True
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning stops after the current batch

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return  # a second Ctrl-C lands anywhere in a step: the last checkpoint stays
        if (
            trainer.state.fn != "fit"
            or trainer.sanity_checking
            or trainer.checkpoint_callback is None
        ):
            return
        directory = Path(
            trainer.checkpoint_callback.dirpath or Path(trainer.default_root_dir) / "checkpoints"
        )
        trainer.save_checkpoint(directory / "last.ckpt")
        if not SLURMEnvironment.detect():
            return
        hpc = trainer.strategy.broadcast(hpc_checkpoint_path(Path(trainer.default_root_dir)))
        trainer.save_checkpoint(hpc)
        log.info("Saved %s; a requeued job resumes from it", hpc)
        if self.requeue and trainer.is_global_zero:
            requeue_slurm_job()


def hpc_checkpoint_path(folder: Path) -> Path:
    """The next ``hpc_ckpt_<n>.ckpt`` in ``folder``: the name Lightning resumes from on SLURM."""
    numbers = [int(p.stem.rsplit("_", 1)[1]) for p in folder.glob("hpc_ckpt_*.ckpt")]
    return folder / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


def requeue_slurm_job() -> None:
    """``scontrol requeue`` this job (or this array task)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = (
        f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        if array_job
        else os.environ["SLURM_JOB_ID"]
    )
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode == 0:
        log.info("Requeued SLURM job %s", job)
    else:
        log.error("Could not requeue SLURM job %s: %s", job, result.stderr.strip())
