"""`textgen info`."""

from __future__ import annotations

import json

import click
import yaml

from textgen.cli.command import LibraryCommand
from textgen.cli.params import ModelFile


@click.command(cls=LibraryCommand)
@click.argument("model_path", metavar="MODEL", type=ModelFile())
@click.option("--json", "as_json", is_flag=True, help="Print the facts as one JSON document.")
def info(model_path, as_json):
    """Describe a saved model: architecture, vocabulary, training config and losses.

    MODEL is a model.keras file written by `textgen train`, or its run directory.
    """
    from textgen.generation.generate import load_keras_model
    from textgen.models.info import model_facts

    facts = model_facts(load_keras_model(model_path))
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            click.echo("  " + yaml.safe_dump(value, sort_keys=False).rstrip().replace("\n", "\n  "))
        elif isinstance(value, list):
            click.echo(f"{key}: {', '.join(str(v) for v in value)}")
        elif isinstance(value, bool):
            click.echo(f"{key}: {'true' if value else 'false'}")  # as the config below writes it
        else:
            click.echo(f"{key}: {value}")
