"""Hydra launchers of lnl_lightning (``hydra/launcher=packed``)."""
