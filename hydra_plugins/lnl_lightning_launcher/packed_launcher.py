"""``hydra/launcher=packed``: a sweep's Colored MNIST jobs trained in packs, each an ordinary run.

Every job is composed as the basic launcher composes it (its own overrides, run folder and
``.hydra/``); then the jobs that differ only in what a pack keeps per member (seed, sigma^2,
lambda, mu, warm-start checkpoint: :data:`lnl_lightning.records.identity.MEMBER_KEYS`) are
trained together, up to ``max_members`` at a time (:func:`lnl_lightning.train.train_runs`).
Each job's return value is its ``optimized_metric``, as with the basic launcher.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def _resolved(cfg: DictConfig) -> DictConfig:
    """The job's config with every interpolation resolved while its Hydra context is set; its
    ``.hydra/`` written into its (new) folder, as the basic launcher's jobs have it."""
    from hydra.core.hydra_config import HydraConfig

    from lnl_lightning.records.folder import CommandRecord, write_command

    command = CommandRecord.capture(cfg)
    if command is not None:
        write_command(Path(HydraConfig.get().runtime.output_dir), command)
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


class PackedLauncher(Launcher):
    def __init__(self, max_members: int = 64) -> None:
        if max_members < 1:
            raise ValueError(f"hydra.launcher.max_members must be >= 1, got {max_members}")
        self.max_members = max_members
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from lnl_lightning.records.identity import pack_key, packable

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        jobs: list[tuple[JobReturn, DictConfig]] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            ret = run_job(
                hydra_context=self.hydra_context,
                task_function=_resolved,
                config=sweep_config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
                configure_logging=False,
            )
            jobs.append((ret, ret.return_value))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)

        groups: dict[str, list[int]] = {}
        alone = [i for i, (_, cfg) in enumerate(jobs) if not packable(cfg)]
        for i, (_, cfg) in enumerate(jobs):
            if i not in alone:
                groups.setdefault(pack_key(cfg), []).append(i)
        packs = [
            members[start : start + self.max_members]
            for members in groups.values()
            for start in range(0, len(members), self.max_members)
        ]
        log.info("Training %d job(s) in %d pack(s), %d alone", len(jobs), len(packs), len(alone))
        for i in alone:  # methods other than LNL and the baseline: ordinary runs
            self._train_alone(*jobs[i])
        named = []
        for members in packs:
            first = jobs[members[0]][0].hydra_cfg.hydra.job.num
            last = jobs[members[-1]][0].hydra_cfg.hydra.job.num
            named.append((sweep_dir / "packs" / f"jobs_{first}-{last}", [jobs[i] for i in members]))
        self._train_packs(named)
        return [ret for ret, _ in jobs]

    def _train_packs(self, packs: list[tuple[Path, list[tuple[JobReturn, DictConfig]]]]) -> None:
        """Each pack in turn; after an error that leaves the GPU unusable, none of the rest."""
        for n, (pack_dir, jobs) in enumerate(packs):
            error = self._train(pack_dir, jobs)
            if error is not None and device_unusable(error):
                rest = [job for _, later in packs[n + 1 :] for job in later]
                log.error(
                    "Pack %s left the GPU unusable (%s): %d later job(s) not run; rerun the "
                    "sweep to train them",
                    pack_dir,
                    error,
                    len(rest),
                )
                reason = (
                    f"not run: pack {pack_dir} failed with an error that leaves the GPU "
                    f"unusable in this process ({type(error).__name__}: {error}); rerun the sweep"
                )
                for ret, cfg in rest:
                    _record_failure(cfg, reason, "")
                    ret.status = JobStatus.COMPLETED
                    ret.return_value = math.nan
                return

    def _train_alone(self, ret: JobReturn, cfg: DictConfig) -> None:
        from lnl_lightning.errors import ConfigError, DataError, TrainingDiverged
        from lnl_lightning.records.folder import clear_error, write_error
        from lnl_lightning.train import run

        clear_error(cfg.paths.output_dir)  # a new try
        try:
            metrics = run(OmegaConf.merge(cfg, {"perf": {"packed": False}}))
        except Exception as err:  # the sweep goes on, as with single jobs
            expected = isinstance(err, (ConfigError, DataError, TrainingDiverged))
            log.error("Job %s failed: %s", cfg.paths.output_dir, err, exc_info=not expected)
            write_error(cfg.paths.output_dir, err)
            metrics = {}
        ret.status = JobStatus.COMPLETED
        ret.return_value = metrics.get(cfg.optimized_metric, math.nan)

    def _train(self, pack_dir: Path, jobs: list[tuple[JobReturn, DictConfig]]) -> Exception | None:
        """Train one pack; return the error it failed with (recorded in each job's folder)."""
        from lnl_lightning import train
        from lnl_lightning.errors import ConfigError, DataError, TrainingDiverged
        from lnl_lightning.records.folder import clear_error

        cfgs = [cfg for _, cfg in jobs]
        for cfg in cfgs:
            clear_error(cfg.paths.output_dir)  # a new try
        error = None
        try:
            results = train.train_runs(cfgs, pack_dir)
        except Exception as err:  # the sweep goes on with the next pack, as with single jobs
            expected = isinstance(err, (ConfigError, DataError, TrainingDiverged))
            log.error("Pack %s failed: %s", pack_dir, err, exc_info=not expected)
            for cfg in cfgs:
                _record_failure(cfg, f"{type(err).__name__}: {err}", traceback.format_exc())
            results, error = [{} for _ in cfgs], err
        for (ret, cfg), metrics in zip(jobs, results, strict=True):
            ret.status = JobStatus.COMPLETED
            ret.return_value = metrics.get(cfg.optimized_metric, math.nan)
        return error


def device_unusable(err: BaseException) -> bool:
    """A CUDA error that poisons the process's context (a device-side assert, an illegal
    address): every later kernel launch fails too. Out of memory is not one of them."""
    text = str(err)
    return type(err).__name__ == "AcceleratorError" or (
        "CUDA error" in text and "out of memory" not in text
    )


def _record_failure(cfg: DictConfig, error: str, trace: str) -> None:
    from lnl_lightning.records.folder import write_error

    write_error(cfg.paths.output_dir, error, trace)
