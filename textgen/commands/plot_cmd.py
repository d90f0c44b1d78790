"""`textgen plot`."""

from __future__ import annotations

import click


@click.command()
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(exists=True))
def plot(run_dir):
    """Draw RUN_DIR/history.csv as RUN_DIR/loss.png: training and validation loss per epoch.

    Needs matplotlib (pip install 'textgen[plot]'); `textgen train` draws the same plot at
    the end of every run when it is installed. TensorBoard logs are in RUN_DIR/logs.
    """
    from textgen.plot import plot_history

    click.echo(f"wrote {plot_history(run_dir)}")
