"""What reaches the terminal besides a command's result and its errors.

`--quiet` (`-q`) keeps everything else away: progress, notes, advice and warnings. Commands
ask `quiet()`, or print through `note` and `notes`, and show progress on `progress_stream()`,
so this module alone decides what quiet means.

TensorFlow writes oneDNN and CUDA notices to file descriptor 2 while it is imported, through
absl logging that ignores TF_CPP_MIN_LOG_LEVEL, and its and Keras's Python loggers and
warnings add more. They are noise to a user of the command, so `textgen` hides them unless
`--verbose` is given. This is the command's business only: the library leaves the importing
process as it found it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Callable, TextIO

import click

import textgen

QUIETED = "TEXTGEN_QUIETED_TF"  # set with our level, so a child process knows it was not the user's choice


def quiet() -> bool:
    """Whether the running command was given --quiet (before or after its name)."""
    ctx = click.get_current_context(silent=True)
    flags = ctx.find_object(dict) if ctx is not None else None
    return bool(flags and flags.get("quiet"))


def note(message: str, err: bool = True) -> None:
    """A warning or piece of advice for the person at the terminal (stderr unless `err` is False);
    dropped under --quiet."""
    if not quiet():
        click.echo(message, err=err)


def notes(err: bool = False) -> Callable[[str], None]:
    """Where a command's running commentary goes (training's config, epochs, samples): click.echo,
    or a function that drops it under --quiet."""
    if quiet():
        return lambda message="": None
    return lambda message="": click.echo(message, err=err)


def progress_stream(*, logs: bool = True) -> TextIO | None:
    """Where progress lines go: stderr, or None (nowhere) under --quiet. With `logs` False only a
    terminal gets them, so a stderr kept in a file holds only what went wrong."""
    if quiet() or not (logs or sys.stderr.isatty()):
        return None
    return sys.stderr


def library() -> None:
    """Load TensorFlow for the running command, quietly unless it was given --verbose (for the
    commands that check their inputs first: textgen.cli.command.LibraryCommand)."""
    ctx = click.get_current_context(silent=True)
    flags = ctx.find_object(dict) if ctx is not None else None
    load_library(bool(flags and flags.get("verbose")))


def load_library(verbose: bool) -> None:
    """Import TensorFlow and textgen's Keras objects, quietly unless `verbose`."""
    if "tensorflow" not in sys.modules:
        if verbose:
            os.environ.pop(QUIETED, None)
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # TensorFlow's own default: show its start-up lines
        elif "TF_CPP_MIN_LOG_LEVEL" not in os.environ or QUIETED in os.environ:  # not the user's choice
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
            os.environ[QUIETED] = "1"
            _with_stderr_closed(_import_and_probe)
    textgen.load_keras_objects()  # imported above when quieted; a no-op then
    _quiet_loggers(verbose)


def _import_and_probe() -> None:
    import tensorflow

    tensorflow.config.list_physical_devices()  # device probing logs (cuInit) happen here too
    textgen.load_keras_objects()  # Keras's own import lines too


def _with_stderr_closed(function) -> None:
    """Run `function` with descriptor 2 pointed at /dev/null; Python errors still surface as
    exceptions once it is restored."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        function()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _quiet_loggers(verbose: bool) -> None:
    """Keep TensorFlow's and Keras's Python-side chatter out of the user's way."""
    level = logging.INFO if verbose else logging.ERROR
    for name in ("tensorflow", "absl", "keras"):
        logging.getLogger(name).setLevel(level)
    if not verbose:
        warnings.filterwarnings("ignore", module=r"(keras|tensorflow|absl)(\.|$)")
        warnings.filterwarnings("ignore", category=UserWarning)
