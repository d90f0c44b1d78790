"""`textgen attention`."""

from __future__ import annotations

import os

import click

from textgen.cli.command import LibraryCommand
from textgen.cli.params import ModelFile


@click.command(cls=LibraryCommand)
@click.option("--model", "model_path", type=ModelFile(), required=True,
              help="A seq2seq model.keras file written by `textgen train`, or its run directory.")
@click.option("--seed", required=True, help="The source text to decode (greedily) and draw the attention of.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False), default="attention.png", show_default=True,
              help="The PNG file to write; a new file (an existing one is never replaced).")
def attention(model_path, seed, output_path):
    """Draw a seq2seq model's attention for one source as a PNG: a row per output token, a
    column per source token, darker where the decoder looked while writing that token.

    Needs matplotlib (pip install 'textgen[plot]') and a model trained with
    model.attention_type additive, multiplicative or local.
    """
    from textgen.evaluation.attention_map import draw_attention
    from textgen.generation.seq2seq import Translator

    if os.path.lexists(output_path):  # before the model loads: the answer comes at once
        raise click.UsageError(f"{output_path} exists; give --output a new file name")
    translator = Translator.load(model_path)
    source_tokens, target_tokens, weights = translator.attention_weights(seed)
    output = translator.translate([seed])[0]  # the greedy output the weights belong to, as text
    path = draw_attention(source_tokens, target_tokens, weights, output_path, title=f"{seed!r} -> {output!r}")
    click.echo(output)
    click.echo(f"wrote {path}")
