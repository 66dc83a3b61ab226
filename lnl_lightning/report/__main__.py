from lnl_lightning.report.cli import main

main()
