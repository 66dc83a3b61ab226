"""``python -m lnl_lightning [overrides]``: compose the Hydra config and train."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from lnl_lightning.config import CONFIG_MODULE, register_resolvers
from lnl_lightning.errors import ConfigError, DataError

log = logging.getLogger("lnl_lightning")


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lnl_lightning.train import run  # heavy imports after Hydra has parsed the command line

    try:
        metrics = run(cfg)
    except (ConfigError, DataError) as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return metrics.get("val/acc")


register_resolvers()

if __name__ == "__main__":
    main()
