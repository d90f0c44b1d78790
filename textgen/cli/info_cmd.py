"""`textgen info`."""

from __future__ import annotations

import json

import click
import yaml

from textgen.cli.command import TextgenCommand
from textgen.cli.params import ModelFile
from textgen.labels import LabelSpace


@click.command(cls=TextgenCommand)  # TensorFlow only if the file needs Keras (_facts)
@click.argument("model_argument", metavar="[MODEL]", required=False, type=ModelFile())
@click.option("--model", "model_option", type=ModelFile(),
              help="A model.keras file written by `textgen train`, or its run directory (the same as MODEL).  "
                   "[default: the pretrained Shakespeare character model shipped with textgen]")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as one JSON document.")
@click.pass_context
def info(ctx, model_argument, model_option, as_json):
    """Describe a saved model: architecture, vocabulary, training config and losses.

    MODEL (or --model) is a model.keras file written by `textgen train`, or its run directory;
    without one, the pretrained model shipped with textgen is described. The facts are read
    from the file's JSON, without loading TensorFlow.
    """
    if model_argument is not None and model_option is not None:
        raise click.UsageError("give the model once: as MODEL or as --model, not both")
    model_path = model_argument if model_argument is not None else model_option
    if model_path is None:
        from textgen.pretrained import default_model_path

        model_path = default_model_path()
    facts = _facts(model_path, ctx.obj["verbose"])
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        if key == "labels":  # the groups, one line each, as `generate --label` names them
            click.echo("labels:\n  " + LabelSpace.from_card(value).describe().replace("\n", "\n  "))
        elif isinstance(value, dict):
            click.echo(f"{key}:")
            click.echo("  " + yaml.safe_dump(value, sort_keys=False).rstrip().replace("\n", "\n  "))
        elif isinstance(value, list):
            click.echo(f"{key}: {', '.join(str(v) for v in value)}")
        elif isinstance(value, bool):
            click.echo(f"{key}: {'true' if value else 'false'}")  # as the config below writes it
        else:
            click.echo(f"{key}: {value}")
    if ctx.obj.get("quiet"):  # the facts alone: the line below is advice
        return
    shown = repr(str(model_path))
    click.echo(f"in Python: import textgen; generator = textgen.load({shown})  "
               f"(Keras: import keras, textgen; model = keras.models.load_model({shown}))")


def _facts(model_path, verbose: bool) -> dict:
    """The model's facts from its JSON; a file only Keras can judge is loaded (and refused) by Keras."""
    from textgen.model_file import NeedsKeras
    from textgen.models.info import file_facts, model_facts

    try:
        return file_facts(model_path)
    except NeedsKeras:
        from textgen.cli.quiet import load_library
        from textgen.saving import load_keras_model

        load_library(verbose)
        return model_facts(load_keras_model(model_path))
