"""`textgen evaluate`."""

from __future__ import annotations

import json

import click

from textgen.cli.command import LibraryCommand
from textgen.cli.params import TextEncoding, model_option
from textgen.cli.quiet import progress_stream
from textgen.config import INT_LIMITS


@click.command(cls=LibraryCommand)
@model_option()
@click.option("--text", "text_path", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="The held-out text file to score (text the model did not train on); - reads stdin.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON document.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Windows scored per step.")
@click.option("--seq-length", type=click.IntRange(1, INT_LIMITS["training.seq_length"]), default=None,
              help="Tokens of context per window.  [default: the model's training.seq_length]")
@click.option("--encoding", type=TextEncoding(), default="utf-8", show_default=True,
              help="The text file's encoding.")
@click.option("--skip-unknown", is_flag=True,
              help="Leave out characters (or words) the model's vocabulary lacks instead of failing on them "
                   "(word models otherwise score them as <unk>).")
def evaluate(model_path, text_path, as_json, batch_size, seq_length, encoding, skip_unknown):
    """Measure a model on held-out text: loss, perplexity and bits per character.

    Without --model, the pretrained model shipped with textgen is measured.

    The text is read in blocks and scored in batches, so a file of any size fits in
    memory; on a terminal a line on stderr shows the characters scored and the time left.
    Scoring is validation's: windows of seq_length tokens, each predicted from a fresh
    state, but every token is scored (validation during training leaves out its last
    partial batch).
    """
    from textgen.data.progress import ReadProgress
    from textgen.evaluation.evaluate import check_text_path, evaluate_file
    from textgen.generation.generate import load_keras_model

    check_text_path(text_path)  # before the model loads: a wrong path is answered at once
    if model_path is None:
        from textgen.pretrained import default_model_path

        model_path = default_model_path()
    model = load_keras_model(model_path)
    shown = progress_stream(logs=False)  # progress only where someone watches; logs stay clean
    with ReadProgress(f"scoring {text_path}:", None, shown, unit="characters") as progress:
        result = evaluate_file(model, text_path, encoding=encoding, seq_length=seq_length, batch_size=batch_size,
                               skip_unknown=skip_unknown, progress=progress)
    if as_json:
        click.echo(json.dumps({"model": str(model_path), **result.to_dict()}, indent=2))
        return
    unknown = ""
    if result.unknown_tokens:
        unknown = f", {result.unknown_tokens:,} unknown {'left out' if skip_unknown else 'scored as <unk>'}"
    click.echo(f"model: {model_path} ({result.level} level)")
    click.echo(f"text: {text_path} ({result.characters:,} characters, {result.tokens:,} tokens scored with "
               f"{result.seq_length} tokens of context{unknown})")
    click.echo(f"loss: {result.loss:.4f} nats per token")
    click.echo(f"perplexity: {result.perplexity:.3f}")
    click.echo(f"bits per character: {result.bits_per_char:.4f}")
