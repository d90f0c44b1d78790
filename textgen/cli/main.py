"""The `textgen` command line: parse, validate, call the library, report.

Library errors (`textgen.errors`) become one-line click errors here and nowhere else:
usage errors exit with 2, runtime errors with 1; an operating-system error the library did
not foresee (a full disk) is a runtime error too. `--debug` shows the traceback instead.
A command given `--json` also prints its error on stdout as one JSON object, so a script
that reads stdout gets an answer it can parse either way (docs/cli.md).

The process ends as Unix tools do when it is stopped: after Ctrl-C, SIGTERM or SIGHUP it
cleans up (training saves its state first) and then dies by that signal, so a shell sees
130, 143 or 129 and a script running textgen stops with it; a reader that closes the pipe
early (`| head`) ends it by SIGPIPE (141), without a message. A closed stdout or stderr
(`>&-`) is written nowhere.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import click

from textgen import __version__
from textgen.cli import (attention_cmd, evaluate_cmd, export_cmd, generate_cmd, info_cmd, init_cmd, plot_cmd,
                         prepare_cmd, presets_cmd, serve_cmd, train_cmd)
from textgen.errors import TextgenError, UsageError


# Windows has no SIGPIPE; there the number only sets the exit status (141, as a POSIX shell reports it).
READER_LEFT = getattr(signal, "SIGPIPE", 13)
# Windows has no SIGHUP.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Ended(BaseException):
    """The command was stopped by `signum` (or its reader left, SIGPIPE): no message, no exit code
    of its own. A BaseException, so click passes it through to `main`, which ends the process."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class JsonError(click.ClickException):
    """`error` as a command given --json answers it: the JSON object `{"error", "exit_code"}` on
    stdout, for the script reading it, then the usual message on stderr, with the same exit code."""

    def __init__(self, error: click.ClickException):
        super().__init__(error.format_message())
        self.error, self.exit_code = error, error.exit_code

    def show(self, file=None) -> None:
        try:
            click.echo(json.dumps({"error": self.message, "exit_code": self.exit_code}, ensure_ascii=False))
        except OSError:
            pass  # stdout closed or its reader gone: the message below still reaches stderr
        self.error.show(file)


class TextgenGroup(click.Group):
    """A group that turns library errors into one-line messages with documented exit codes,
    in JSON as well for a command given --json."""

    def invoke(self, ctx):
        try:
            return self._invoke_answering_errors(ctx)
        except click.ClickException as exc:
            if (ctx.obj or {}).get("json"):  # noted by the command as it parsed (textgen.cli.command)
                raise JsonError(exc) from None
            raise

    def _invoke_answering_errors(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.UsageError(str(exc)) from None
        except TextgenError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            raise Ended(READER_LEFT) from None  # the reader left: a normal end, not an error
        except KeyboardInterrupt:
            raise Ended(signal.SIGINT) from None  # main() dies by the signal that really arrived
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
@click.option("-q", "--quiet", is_flag=True,
              help="Show only the result and errors: no progress, notes or advice (docs/cli.md).")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own log lines and warnings.")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx, quiet, verbose, debug):
    """Train character- and word-level text generators and sample from them.

    \b
    Quick start (from any folder):
      textgen train --config quick
      textgen generate --model runs/quick/model.keras --seed "ROMEO:"

    \b
    Your own text:
      textgen init --corpus my_text.txt
      textgen train --config textgen.yaml
    """
    ctx.ensure_object(dict)
    ctx.obj.update(quiet=quiet, verbose=verbose, debug=debug)


def main() -> None:
    """Console entry point: run the command, then end as the signals it received say."""
    _attach_closed_streams()
    stops = StopSignals()
    try:
        cli.main(prog_name="textgen")  # click's standalone mode ends with SystemExit
        code = 0
    except SystemExit as exc:
        code = exc.code
    except Ended as end:
        code = end.signum
        _die_by(stops.first() or end.signum)
    signum = stops.first()
    if signum:  # training stopped on it and reported what it kept; the status still says why it ended
        _die_by(signum)
    sys.exit(code)


def _attach_closed_streams() -> None:
    """Give a closed stdin, stdout or stderr (`>&-`) /dev/null, so nothing is written nowhere by
    accident: without it the first file textgen opens would take descriptor 1 or 2 and receive
    what was meant for the terminal, and `sys.stdout` would be None."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, encoding="utf-8", errors="replace", closefd=False))


class StopSignals:
    """Ctrl-C, SIGTERM and SIGHUP raise KeyboardInterrupt, so whatever runs cleans up on its way out,
    and the interpreter notes every signal that arrives on a pipe (`signal.set_wakeup_fd`): that
    also covers signals that training's own handlers (`textgen.training.callbacks.stop_on_signals`) take.
    A signal ignored when textgen starts (`nohup`, a background job) stays ignored."""

    def __init__(self):
        self.seen: list[int] = []
        self._pipe = None
        if sys.platform == "win32":
            return
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        try:
            signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: leave signals as they are
            os.close(read), os.close(write)
            return
        self._pipe = read
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, _interrupt)

    def first(self) -> int | None:
        """The first stop signal received so far, or None."""
        if self._pipe is not None:
            try:
                self.seen.extend(os.read(self._pipe, 512))
            except BlockingIOError:
                pass
        return next((s for s in self.seen if s in STOP_SIGNALS), None)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _die_by(signum: int) -> None:
    """End the process as killed by `signum`, after writing out what is buffered."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass  # a reader that left, or a stream already closed: nothing more can reach it
    if sys.platform == "win32":  # no killing oneself by a signal there: the status is the shell convention
        os._exit(128 + signum)
    signal.signal(signum, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):  # POSIX only
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # not reached unless the signal is somehow held back



for _command in (prepare_cmd.prepare, train_cmd.train, generate_cmd.generate, evaluate_cmd.evaluate,
                 export_cmd.export, info_cmd.info, plot_cmd.plot, presets_cmd.presets, init_cmd.init,
                 serve_cmd.serve, attention_cmd.attention):
    cli.add_command(_command)
