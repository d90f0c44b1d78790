"""`textgen prepare`."""

from __future__ import annotations

import json

import click

from textgen.cli.command import LibraryCommand
from textgen.cli.params import ConfigSource
from textgen.cli.quiet import library, progress_stream
from textgen.config import load_config


@click.command(cls=LibraryCommand, checks_first=True)
@click.option("--config", "config_path", type=ConfigSource(), default=None, metavar="PRESET|FILE",
              help="A preset's name (textgen presets lists them), a YAML config file or - for stdin, as for "
                   "textgen train; keys left out take their defaults.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key by dotted path, value parsed as YAML; repeatable.")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Run directory whose cache/ to write (overrides output.dir).  [default: the config's "
                   "output.dir]")
def prepare(config_path, overrides, output):
    """Encode the corpus into RUN_DIR/cache for training.

    Reads the corpus files in blocks, fits the vocabulary in one pass and writes the token
    ids in a second, showing bytes read and MB/s on stderr; the corpus is never held in
    memory. Training memory-maps the ids. The cache is kept while the corpus files (paths,
    sizes, modification times) and tokenizer settings stay the same, so `textgen train`
    with the same config and output reuses it instead of encoding again (train also
    prepares by itself when there is no current cache).
    """
    if output:
        overrides = (*overrides, f"output.dir={json.dumps(output)}")
    config = load_config(config_path, overrides, check_corpus=True)
    library()  # after the config and corpus checks, as textgen train
    from textgen.data.prepare import describe_cache
    from textgen.training.train import prepare as prepare_run

    prepared = prepare_run(config, progress=progress_stream())
    click.echo(describe_cache(prepared))
    noun = "characters" if prepared.tokenizer.level == "char" else "tokens"
    click.echo(f"vocabulary: {prepared.tokenizer.vocab_size:,} {noun}; {len(prepared.ids):,} tokens in all")
    if prepared.label_space is not None:
        click.echo(f"labels: {prepared.label_space.describe().replace(chr(10), '; ')}")
