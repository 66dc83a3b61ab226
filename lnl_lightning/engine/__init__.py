"""The engine: one LightningModule training K >= 1 runs, its evaluation, callbacks and loggers."""
