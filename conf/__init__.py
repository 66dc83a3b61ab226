"""Hydra configs of lnl_lightning, shipped in the package as ``lnl_lightning.conf``."""
