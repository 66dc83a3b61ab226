"""``python -m lnl_lightning.study reproduce|compare``: see :mod:`lnl_lightning.study.protocols`."""

from lnl_lightning.study.protocols import main

main()
