"""`textgen train`."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from textgen.cli.command import LibraryCommand
from textgen.cli.params import ConfigSource, ModelFile
from textgen.cli.quiet import library, notes, progress_stream, quiet
from textgen.config import Config, load_config
from textgen.errors import TextgenError

_DEFAULTS = Config()
_DEFAULT_RUN = (f"a {_DEFAULTS.model.units}-unit {_DEFAULTS.model.cell.upper()} on the bundled "
                f"{', '.join(Path(p).name for p in _DEFAULTS.corpus.paths)} for {_DEFAULTS.training.epochs} epochs")


def saved_run_config(run_dir: Path) -> dict | None:
    """The config a run's checkpoint saved (its config.yaml aside), or None when it has none
    (then --resume reports that the run holds no state to resume)."""
    from textgen.training.checkpoint import read_state

    try:
        saved = read_state(run_dir).get("config")
    except TextgenError:
        return None
    return saved if isinstance(saved, dict) else None


@click.command(cls=LibraryCommand, checks_first=True)
@click.option("--config", "config_path", type=ConfigSource(), default=None, metavar="PRESET|FILE",
              help="A preset's name (quick, shakespeare-fast: textgen presets lists them), a YAML config file, or "
                   "- to read one from stdin; a file of that name in the working directory wins over a preset. "
                   "Keys left out take their defaults (docs/training.md). Without one, the default model "
                   f"trains: {_DEFAULT_RUN}. With --resume and no --config, the run's own config.yaml is used "
                   "(or, if it is gone, the config its checkpoint saved).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key by dotted path, value parsed as YAML; repeatable. "
                   "Example: --set training.epochs=1 --set model.units=64")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Run directory to write (overrides output.dir).  [default: the config's output.dir]")
@click.option("--overwrite", is_flag=True, help="Replace a model or unfinished run already in the run directory.")
@click.option("--resume", is_flag=True,
              help="Continue the run in the run directory from its last saved state (after Ctrl-C, a crash "
                   "or training.max_minutes): same tokenizer, data split, weights, optimizer and step.")
@click.option("--init-from", type=ModelFile(), default=None, metavar="MODEL",
              help="Fine-tune this saved .keras model (or the model of this run directory) on the configured "
                   "corpus, reusing its tokenizer and architecture (sets training.init_from).")
def train(config_path, overrides, output, overwrite, resume, init_from):
    """Train a model and save it as RUN_DIR/model.keras.

    The corpus is first encoded into RUN_DIR/cache (see textgen prepare), or the cache is
    reused. Prints the resolved config, the devices, precision and recurrent kernels chosen
    for this machine (docs/scale.md), then a progress bar per epoch with the training and
    validation loss in nats and bits per character (perplexity for word models), and a few
    samples every training.sample_every epochs. The best model by validation loss is saved
    after every epoch that improves it; the training state is saved every
    training.checkpoint_every steps. Ctrl-C stops after the current step and saves, so the
    run can continue with --resume. With --quiet only the saved model's path is printed.
    """
    if resume and init_from:
        raise click.UsageError("--init-from starts a new run from a saved model and --resume continues an "
                               "unfinished run; pass only one")
    if resume and overwrite:  # before the config is printed, like the clash above
        raise click.UsageError("--resume continues a run and --overwrite replaces it; pass only one")
    given = list(overrides)
    if output:
        overrides = (*overrides, f"output.dir={json.dumps(output)}")
    if init_from:
        overrides = (*overrides, f"training.init_from={json.dumps(init_from)}")
    base = None
    if resume and config_path is None:
        run_dir = Path(load_config(None, overrides).output.dir)
        own = run_dir / "config.yaml"
        if own.exists():
            config_path = str(own)
        else:
            library()
            base = saved_run_config(run_dir)
    config = load_config(config_path, overrides, base=base, check_corpus=True)
    library()  # after the config and corpus checks, which need no TensorFlow and so answer at once
    from textgen.training.train import TrainingInterrupted
    from textgen.training.train import train as run_training

    echo = notes()
    echo("resolved config:")
    echo("  " + config.to_yaml().rstrip().replace("\n", "\n  "))
    restart = ["textgen", "train", *(["--config", config_path] if config_path else []),
               *(a for o in given for a in ("--set", o)), *(["--output", output] if output else [])]
    again = [*restart, "--resume"]
    try:
        result = run_training(config, overwrite=overwrite, resume=resume, echo=echo, progress=progress_stream(),
                              verbose=0 if quiet() else 1 if sys.stdout.isatty() else 2)
    except TrainingInterrupted as exc:
        if not exc.resumable:
            restart += ["--init-from", init_from] if init_from else []
            raise click.ClickException(f"{exc.what}; start again with: {shlex.join(restart)}") from None
        raise click.ClickException(f"{exc.what}; continue with: {shlex.join(again)}") from None
    _report(result, again, echo)


def _report(result, again: list[str], echo) -> None:
    """The run's outcome: under --quiet the saved model's path alone, for a script to use."""
    if not result.chief:
        echo(f"this worker finished its part; the chief writes {result.model_path.name} and the run's files")
        return
    if quiet():
        click.echo(result.model_path)
        return
    if result.stopped == "time_limit":
        echo(f"continue with: {shlex.join(again)}")
    which = (f"the weights at step {result.best_step}" if result.best_step is not None
             else f"best epoch {result.best_epoch}" if result.best_epoch else "no epoch finished: unvalidated weights")
    click.echo(f"saved {result.model_path} ({which}); try:\n"
               f"  textgen generate --model {result.model_path} --seed \"...\"")
