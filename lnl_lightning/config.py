"""Config helpers: the OmegaConf resolvers the configs use, and instantiation with clear errors."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lnl_lightning.errors import ConfigError, DataError

CONFIG_MODULE = "lnl_lightning.conf"


def method_name(lambda_: float, mu: float) -> str:
    """'baseline' when both unlearning weights are 0 (plain training), else 'lnl'."""
    return "baseline" if float(lambda_) == 0.0 and float(mu) == 0.0 else "lnl"


def register_resolvers() -> None:
    """Register the resolvers used in conf/ (safe to call more than once)."""
    if not OmegaConf.has_resolver("lnl_method"):
        OmegaConf.register_new_resolver("lnl_method", method_name)


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets the project's own errors through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ConfigError, DataError)):
            raise cause from None
        raise


register_resolvers()
