"""Hydra configs of lnl_lightning, shipped in the package as ``lnl_lightning.conf``."""

# The typed schemas the yaml files name in their defaults (trainer/schema, ...).
from lnl_lightning.config import register_configs

register_configs()
