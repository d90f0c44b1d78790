"""`textgen presets`: the configs that ship with textgen, for `--config NAME`."""

from __future__ import annotations

import json

import click

from textgen.cli.command import TextgenCommand
from textgen.config.presets import list_presets


@click.command(cls=TextgenCommand)
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list of objects with name, description and path instead.")
def presets(as_json):
    """List the presets that ship with textgen, one line each.

    Pass a name to --config (`textgen train --config quick`) from any folder; a file of
    the same name in the working directory is read instead. A preset lists only the keys
    that differ from the defaults; copy one (its path is in --json) to change it.
    """
    found = list_presets()
    if as_json:
        click.echo(json.dumps([{"name": p.name, "description": p.description, "path": str(p.path)} for p in found],
                              indent=2))
        return
    width = max((len(p.name) for p in found), default=0)
    for preset in found:
        click.echo(f"{preset.name:<{width}}  {preset.description}")
