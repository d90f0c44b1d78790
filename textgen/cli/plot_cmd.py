"""`textgen plot`."""

from __future__ import annotations

import os

import click

from textgen.cli.command import TextgenCommand


def _existing(ctx, param, run_dir: str) -> str:
    if not os.path.exists(run_dir):  # a missing input is a usage error, as for every command
        raise click.BadParameter(f"{run_dir} does not exist; give the run directory of a `textgen train` run")
    return run_dir


@click.command(cls=TextgenCommand)
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(), callback=_existing)
def plot(run_dir):
    """Draw RUN_DIR/history.csv as RUN_DIR/loss.png: training and validation loss per epoch.

    Needs matplotlib (pip install 'textgen[plot]'); `textgen train` draws the same plot at
    the end of every run when it is installed. TensorBoard logs are in RUN_DIR/logs.
    """
    from textgen.training.plot import plot_history

    click.echo(f"wrote {plot_history(run_dir)}")
