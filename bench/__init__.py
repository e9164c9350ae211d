"""Performance scenarios for replaybench (``python -m bench``); see bench/README.md."""
