"""One module per scenario; each has ``run(context) -> list[Row]``."""
