"""A pack's members as ordinary runs: each member's logs and checkpoints in its own folder.

An ordinary run logs through Lightning and its checkpoint callbacks save the module; a pack
trains one K-wide module, so this callback does both for each member: after every epoch
(and its validation) the member's metrics go to its own loggers, its own weights to its
``checkpoints/last.ckpt`` and, when its monitored validation metric improved, to its best
checkpoint (named as an ordinary run names it), in the layout ``model.init_from`` and
``lnl_lightning.eval`` read. A pack cut short (a time limit, a kill) still leaves each member
its last finished epoch. The pack itself resumes from its own Lightning checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from lnl_lightning.engine.callbacks import RunFolders, TrainThroughput
from lnl_lightning.engine.packed import unpack_runs
from lnl_lightning.records.folder import (
    LAST_CHECKPOINT,
    RunFolder,
    checkpoint_dir,
    save_weights_checkpoint,
)


class PackMembers(RunFolders):
    """Each member's per-epoch metrics, final metrics and checkpoints (see the module).

    Args:
        folders: the members' run folders, in member order.
        pack_dir: the pack's folder (recorded in each member checkpoint).
        monitor, mode, filename: the members' best checkpoint, as ``callbacks.model_checkpoint``
            of their config selects it (``monitor=None``: no best checkpoint).
    """

    def __init__(
        self,
        folders: list[RunFolder],
        pack_dir: Path,
        monitor: str | None = None,
        mode: str = "max",
        filename: str = "best_epoch{epoch:03d}",
    ) -> None:
        super().__init__(folders)
        self.pack_dir, self.monitor, self.mode, self.filename = pack_dir, monitor, mode, filename
        self.best: list[tuple[float, str] | None] = [None] * len(folders)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = [None if b is None else (b[0], b[1]) for b in state_dict["best"]]

    def best_checkpoint(self, k: int) -> str | None:
        return None if self.best[k] is None else self.best[k][1]

    def write(self, k: int, metrics: dict[str, float], step: int) -> None:
        for logger in self.folders[k].loggers:
            logger.log_metrics(metrics, step=step)
            if not isinstance(logger, WandbLogger):
                logger.save()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        # after this epoch's validation, as in an ordinary run's logs: one row per epoch
        validated = pl_module.results_epoch == trainer.current_epoch
        rate = next(
            (c.last_rate for c in trainer.callbacks if isinstance(c, TrainThroughput)), None
        )
        for k, train_metrics in enumerate(pl_module.train_metrics()):
            metrics = {**train_metrics, **(pl_module.member_results[k] if validated else {})}
            if rate is not None:
                metrics["train/images_per_s"] = rate
            self.write(k, {**metrics, "epoch": trainer.current_epoch}, trainer.global_step)
        pl_module._stop_if_diverged()  # never a member's NaN weights over its last checkpoint
        for k, (member, folder) in enumerate(
            zip(unpack_runs(pl_module), self.folders, strict=True)
        ):
            save = self._saver(member, trainer)
            save(checkpoint_dir(folder.path) / LAST_CHECKPOINT)
            if validated and self._improved(k, pl_module.member_results[k]):
                name = self.filename.format(epoch=trainer.current_epoch) + ".ckpt"
                path = save(checkpoint_dir(folder.path) / name)
                if self.best[k] is not None and Path(self.best[k][1]) != path:
                    Path(self.best[k][1]).unlink(missing_ok=True)
                self.best[k] = (pl_module.member_results[k][self.monitor], str(path))

    def _saver(self, member: Any, trainer: pl.Trainer) -> Any:
        def save(path: Path) -> Path:
            return save_weights_checkpoint(
                path,
                member,
                member.packed_optimizer_states,
                epoch=trainer.current_epoch,
                global_step=trainer.global_step,
                packed_from=str(self.pack_dir),
            )

        return save

    def _improved(self, k: int, results: dict[str, float]) -> bool:
        if self.monitor is None or self.monitor not in results:
            return False
        value = results[self.monitor]
        if self.best[k] is None:
            return True
        return value > self.best[k][0] if self.mode == "max" else value < self.best[k][0]

    def _log_final(self, trainer: pl.Trainer, pl_module: Any) -> None:
        for k, results in enumerate(pl_module.member_results):
            self.write(k, {**results, "epoch": trainer.current_epoch}, trainer.global_step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.state.fn == "validate":  # the final one; fit's are logged per epoch
            self._log_final(trainer, pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._log_final(trainer, pl_module)
