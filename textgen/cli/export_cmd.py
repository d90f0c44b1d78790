"""`textgen export`."""

from __future__ import annotations

import json
import os

import click

from textgen.cli.command import LibraryCommand
from textgen.cli.params import model_option
from textgen.cli.quiet import note
from textgen.export import FORMATS

SUFFIX = {"saved_model": "", "tflite": ".zip"}
TRY_SAVED_MODEL = ("try it: saved_model_cli run --dir {path} --tag_set serve --signature_def serving_default "
                   "--input_exprs 'seed=[\"{seed}\"];{labels}length=200;temperature=0.8;top_k=0;top_p=1.0;"
                   "random_seed=1'")

TRY_SEQ2SEQ = ("try it: saved_model_cli run --dir {path} --tag_set serve --signature_def serving_default "
               "--input_exprs 'source=[\"SOURCE TEXT\"];max_length=0;temperature=0.0;random_seed=1'")

TRY_TFLITE = ("try it: unzip -p {path} generate.py > generate.py && "
              "python generate.py {path} --seed \"ROMEO:\" --temperature 0.8  (pip install numpy ai-edge-litert)")


def _new_output(ctx, param, value: str) -> str:
    """Refused while the command line is parsed, before TensorFlow loads: textgen never replaces a file."""
    if os.path.lexists(value):
        raise click.BadParameter(f"{value!r} already exists and textgen never replaces it; give a new path")
    parent = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(parent):
        raise click.BadParameter(f"the folder {parent!r} does not exist; create it first or give another path")
    return value


def _label_input(labels: dict | None) -> str:
    """saved_model_cli's label_weights for the first label of the first group, or "" for a model without labels."""
    if not labels:
        return ""
    first = labels["groups"][0]
    row = list(labels["any"])
    if len(first["labels"]) > 1:
        row[:len(first["labels"])] = [0.0, 1.0] + [0.0] * (len(first["labels"]) - 2)
    return f"label_weights=[{row}];"


@click.command(cls=LibraryCommand)
@model_option()
@click.option("--format", "export_format", type=click.Choice(FORMATS), default="saved_model", show_default=True,
              help="saved_model: a TensorFlow SavedModel (TensorFlow Serving, tf.saved_model.load) that takes and "
                   "returns strings; tflite: a LiteRT step model for phones and small devices, in a zip with the "
                   "vocabulary, the model card and a loop that runs it without TensorFlow.")
@click.option("--output", required=True, callback=_new_output,
              help="Where to write: a new folder for saved_model, a new .zip file for tflite. Never replaced.")
@click.option("--xla/--no-xla", default=True, show_default=True,
              help="saved_model: compile the generation loop with XLA (about twice as fast for a single sample; "
                   "TensorFlow Serving then needs --xla_cpu_compilation_enabled=true).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as one JSON document.")
@click.pass_context
def export(ctx, model_path, export_format, output, xla, as_json):
    """Export a model to run without textgen: TensorFlow Serving, or LiteRT on phones.

    See docs/deploy.md for serving the result and for the loop that runs a LiteRT export.
    """
    from textgen.errors import UsageError
    from textgen.saving import load_keras_model

    if export_format == "tflite" and ctx.get_parameter_source("xla") == click.core.ParameterSource.COMMANDLINE:
        raise UsageError("--xla/--no-xla applies to --format saved_model; drop it for tflite")
    if export_format == "tflite" and not output.endswith(".zip"):
        raise UsageError(f"a tflite export is one zip file; give --output a name ending in .zip (not {output!r})")
    if model_path is None:
        from textgen.pretrained import default_model_path

        model_path = default_model_path()
    model = load_keras_model(model_path)
    note(f"exporting {model_path} as {export_format} (tracing the generation loop takes a few seconds)")
    if export_format == "saved_model":
        from textgen.export.saved_model import export_saved_model

        facts = export_saved_model(model, output, xla=xla)
    else:
        from textgen.export.tflite import export_tflite

        facts = export_tflite(model, output)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    click.echo(f"wrote {output} ({facts['bytes'] / 1e6:.1f} MB, {export_format})")
    if export_format == "saved_model":
        if facts.get("kind") == "seq2seq":
            note("a seq2seq model: serving_default translates source strings; greedy at temperature 0, "
                 "max_length 0 is the model's own limit", err=False)
        if not facts["strings_in_graph"]:
            note(f"the tokenizer cannot run in the graph ({facts['unsupported']}); serving_default takes and "
                 "returns token ids: docs/deploy.md says what the app must do", err=False)
        else:
            try_it = TRY_SEQ2SEQ if facts.get("kind") == "seq2seq" else TRY_SAVED_MODEL
            note(try_it.format(path=output, seed="ROMEO:", labels=_label_input(facts["labels"])), err=False)
    else:
        note(TRY_TFLITE.format(path=output), err=False)
    if facts.get("labels"):
        note("a conditioned model: give each sample's label weights, one per label of every group "
             "(assets.extra/textgen.json or step.json lists them); docs/deploy.md#conditioned-models", err=False)
    note("serving and running it: docs/deploy.md", err=False)
