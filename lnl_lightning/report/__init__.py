"""Compare runs: ``python -m lnl_lightning.report <multirun or runs folder> [--out DIR]``.

Collects every ``metrics.json`` below the folder, groups the runs by configuration (all
but the seed) and writes ``report.md`` (mean ± std over seeds, runs counted, unfinished and
failed jobs listed) and PNG plots:

- ``acc_vs_lambda.png``: unbiased test accuracy against lambda, one line per mu, the
  baseline as a reference line;
- ``acc_vs_color_var.png``: test accuracy against sigma^2 per method (the paper's Fig. 4
  layout) with the published numbers as reference series (Colored MNIST runs only);
- ``bias_acc_vs_lambda.png``: bias predictability (``test/bias_acc``) against lambda;
- ``curves.png``: test accuracy and ``test/bias_acc`` after every epoch (runs with
  ``data.test_each_epoch``), mean over seeds per configuration; a run warm-started from
  another (``model.init_from``) continues that run's epoch count.

A run is identified by its method, weights, the method's own settings (``model.*`` keys
beyond the shared recipe, e.g. BlindEye's ``confusion_weight``), data settings, how it
started (``scratch`` or ``warm`` from another run's checkpoint) and its number of epochs;
runs that agree on these but differ in any other setting that changes a result (every key of
the resolved config but paths, logging and speed options, as ``lnl_lightning/records/identity.py``
says, e.g. the learning rate, ``data.seed``, ``trainer.limit_train_batches``) are kept apart
too, the differing settings shown in the ``settings`` column. Evaluations (``lnl_lightning.eval``
folders) are not runs and are left out.
``--methods`` keeps only the runs of the methods named. Methods are named and drawn as their
config's ``model.display`` says.

The package: ``records`` (runs and configurations), ``published`` (the papers' numbers),
``methods`` (labels and styles), ``tables`` (markdown), ``plots``, ``curves`` (per-epoch
metrics), ``paired`` (per-seed differences from the baseline), ``cli`` (:func:`write_report`).
"""

from __future__ import annotations

from lnl_lightning.report.cli import main, write_report
from lnl_lightning.report.curves import curve_series, epoch_curve
from lnl_lightning.report.records import Row, Run, collect, summarize

__all__ = [
    "Row",
    "Run",
    "collect",
    "curve_series",
    "epoch_curve",
    "main",
    "summarize",
    "write_report",
]
