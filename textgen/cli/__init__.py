"""The `textgen` command: `main` in textgen.cli.main, one module per sub-command beside it."""

from textgen.cli.main import main

__all__ = ["main"]
