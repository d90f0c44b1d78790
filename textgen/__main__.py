"""`python -m textgen` runs the command line."""

from textgen.cli import cli

if __name__ == "__main__":
    cli(prog_name="textgen")
