"""`textgen train`."""

from __future__ import annotations

import sys

import click

from textgen.config import load_config


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config file; keys left out take their defaults (see README).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key by dotted path, value parsed as YAML; repeatable. "
                   "Example: --set training.epochs=1 --set model.units=64")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Run directory to write (overrides output.dir).")
@click.option("--overwrite", is_flag=True, help="Replace a model already in the run directory.")
def train(config_path, overrides, output, overwrite):
    """Train a model and save it as RUN_DIR/model.keras.

    Prints the resolved config, then a progress bar per epoch with the training and
    validation loss in nats and bits per character (perplexity for word models). The best
    model by validation loss is saved after every epoch that improves it.
    """
    from textgen.train import train as run_training

    if output:
        overrides = (*overrides, f"output.dir={output}")
    config = load_config(config_path, overrides)
    click.echo("resolved config:")
    click.echo("  " + config.to_yaml().rstrip().replace("\n", "\n  "))
    result = run_training(config, overwrite=overwrite, echo=click.echo,
                          verbose=1 if sys.stdout.isatty() else 2)
    click.echo(f"saved {result.model_path} (best epoch {result.best_epoch}); try:\n"
               f"  textgen generate --model {result.model_path} --seed \"...\"")
