"""replaybench's command-line client (docs/agents.md)."""
