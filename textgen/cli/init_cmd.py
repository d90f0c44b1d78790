"""`textgen init`: a commented starter config for the user's own text."""

from __future__ import annotations

import os
import shlex

import click

from textgen.cli.command import TextgenCommand
from textgen.cli.quiet import note
from textgen.config.starter import PLACEHOLDER, write_starter_config


@click.command(cls=TextgenCommand)
@click.argument("directory", type=click.Path(file_okay=False), default=".", required=False)
@click.option("--corpus", metavar="PATH",
              help="Your text: a file, a folder of them or a glob, relative to the working directory (written "
                   f"relative to DIRECTORY).  [default: a placeholder, {PLACEHOLDER}, to replace]")
def init(directory, corpus):
    """Write DIRECTORY/textgen.yaml, a commented starter config, and print the next command.

    The config trains a small character model (the quick preset's settings) on your text
    in minutes on a CPU; its comments say which keys to change first. DIRECTORY (default:
    the working directory) is created if needed; an existing textgen.yaml is never
    replaced.
    """
    path = write_starter_config(directory, corpus)
    shown = os.path.normpath(path)
    click.echo(f"wrote {shown}")
    train = f"textgen train --config {shlex.quote(shown)}"
    if corpus is None:
        note(f"next: put your text's path in corpus.paths (now {PLACEHOLDER}), then run:\n  {train}", err=False)
    else:
        note(f"next:\n  {train}", err=False)
