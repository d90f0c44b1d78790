"""The `textgen` command line: parse, validate, call the library, report.

Library errors (`textgen.errors`) become one-line click errors here and nowhere else:
usage errors exit with 2, runtime errors with 1; an operating-system error the library did
not foresee (a full disk) is a runtime error too. `--debug` shows the traceback instead.
A command stopped by a signal exits with 128 + its number (130 for Ctrl-C, 143 for SIGTERM,
129 for SIGHUP), and one whose reader closed the pipe early ends quietly with 141, as
programs that SIGPIPE ends do.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import warnings

import click

from textgen import __version__, load_keras_objects
from textgen.errors import TextgenError, UsageError


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C (temporary files are removed on the way)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _PipeClosed(Exception):
    """Standard output's reader went away; not an OSError, so click leaves it to `main`."""


class TextgenGroup(click.Group):
    """A group that turns library errors into one-line messages with documented exit codes."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        _open_closed_streams()
        try:
            with _signals_unwind():
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = code if isinstance(code, int) else 0
            sys.stdout.flush()
        except click.exceptions.Abort as exc:  # Ctrl-C, or end of input at a prompt
            _show(lambda: click.echo("Aborted!", err=True))
            code = 128 + signal.SIGINT if _by_ctrl_c(exc) else 1
        except Terminated as exc:
            _show(lambda: click.echo("Aborted!", err=True))
            code = 128 + exc.signum
        except click.ClickException as exc:
            _show(exc.show)
            code = exc.exit_code
        except (_PipeClosed, BrokenPipeError):
            code = 128 + 13  # SIGPIPE's number on every Unix
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            code = 128 + 13
        if code == 128 + 13:
            _silence(sys.stdout)
        sys.exit(code)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise _PipeClosed() from None
        except UsageError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.UsageError(str(exc)) from None
        except TextgenError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            # The library names the files it expects trouble with; this catches what it cannot
            # foresee (a disk that fills up, a file removed under it) so it is still one line.
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(_describe_os_error(exc)) from None
        except Exception as exc:
            if (ctx.obj and ctx.obj.get("debug")) or not _out_of_memory(exc):
                raise
            raise click.ClickException(
                "out of memory; use a smaller network (model.units, model.layers), fewer windows per step "
                "(training.batch_size) or, when generating, fewer --num-samples") from None


def _by_ctrl_c(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, KeyboardInterrupt)


@contextlib.contextmanager
def _signals_unwind():
    """SIGTERM and SIGHUP unwind the command as Ctrl-C does, instead of killing it where it
    stands; training installs its own handlers, which save the state first."""
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is None:  # Windows has no SIGHUP
            continue

        def handler(signum, frame):
            raise Terminated(signum)

        try:
            previous[number] = signal.signal(number, handler)
        except ValueError:  # not the main thread: leave signals alone
            break
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def _open_closed_streams() -> None:
    """Give closed standard streams (`textgen train >&-`) /dev/null, so nothing else takes
    their descriptor numbers and printing goes nowhere instead of failing."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # takes the lowest free number: this one
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, mode, encoding="utf-8"))


def _show(report) -> None:
    try:
        report()
    except OSError:  # stderr closed or its reader gone: the exit code still tells
        pass


def _silence(stream) -> None:
    """Point a stream whose reader went away at /dev/null, so the interpreter's last flush
    does not print 'Exception ignored ... BrokenPipeError'."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _out_of_memory(exc: Exception) -> bool:
    """A MemoryError, or TensorFlow's ResourceExhaustedError (named so the CLI need not import it)."""
    return isinstance(exc, MemoryError) or any(
        cls.__name__ == "ResourceExhaustedError" and cls.__module__.startswith("tensorflow")
        for cls in type(exc).__mro__)


def _describe_os_error(exc: OSError) -> str:
    """`No space left on device: runs/x/model.keras`, from any OSError."""
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{what}: {exc.filename}" if exc.filename else what


@click.group(cls=TextgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="textgen")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own log lines and warnings.")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx, verbose, debug):
    """Train character- and word-level text generators and sample from them.

    \b
    Quick start:
      textgen train --config configs/quick.yaml
      textgen generate --model runs/quick/model.keras --seed "ROMEO:"
    """
    ctx.ensure_object(dict)
    ctx.obj.update(verbose=verbose, debug=debug)


def _quiet_libraries(verbose: bool) -> None:
    """Keep TensorFlow's and Keras's Python-side chatter out of the user's way."""
    import logging

    level = logging.INFO if verbose else logging.ERROR
    for name in ("tensorflow", "absl", "keras"):
        logging.getLogger(name).setLevel(level)
    if not verbose:
        warnings.filterwarnings("ignore", module=r"(keras|tensorflow|absl)(\.|$)")
        warnings.filterwarnings("ignore", category=UserWarning)


def main() -> None:
    """Console entry point."""
    cli(prog_name="textgen")


def _after_parsing(callback):
    """`callback` with TensorFlow and textgen's Keras objects loaded first.

    The `textgen` process defers that import (see the package docstring) until a command has
    parsed its arguments, so `--help`, `--version` and usage errors never wait for it, and a
    Ctrl-C during it reaches click, which prints `Aborted!` rather than a traceback.
    """
    @functools.wraps(callback)
    def run(*args, verbose=False, debug=False, **kwargs):
        obj = click.get_current_context().ensure_object(dict)  # the group's, or a new one for a lone command
        obj["verbose"], obj["debug"] = obj.get("verbose") or verbose, obj.get("debug") or debug
        _quiet_libraries(obj["verbose"])
        load_keras_objects(verbose=obj["verbose"])
        return callback(*args, **kwargs)

    return run


def _global_flags() -> list[click.Option]:
    """The group's flags, also taken after the command (`textgen generate ... --verbose`)."""
    return [click.Option(["--verbose"], is_flag=True,
                         help="Same as `textgen --verbose`: show TensorFlow's own log lines and warnings."),
            click.Option(["--debug"], is_flag=True,
                         help="Same as `textgen --debug`: show full tracebacks instead of one-line errors.")]


from textgen.commands import evaluate_cmd, generate_cmd, info_cmd, plot_cmd, prepare_cmd, train_cmd  # noqa: E402

for _command in (prepare_cmd.prepare, train_cmd.train, generate_cmd.generate, evaluate_cmd.evaluate,
                 info_cmd.info):
    _command.callback = _after_parsing(_command.callback)
    _command.params.extend(_global_flags())
    cli.add_command(_command)
cli.add_command(plot_cmd.plot)  # reads history.csv and draws it: no TensorFlow needed
