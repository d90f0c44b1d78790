"""Where `textgen generate --output` writes the samples, checked before any time is spent generating."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

import click

from textgen.errors import TextgenError, UsageError


@dataclass
class OutputTarget:
    """Where --output writes: a regular file replaced atomically (`path`), a descriptor this process
    holds (`fd`: /dev/stdout, /dev/fd/N, or a file that is already our stdout), or a path opened
    for appending (`path` with `append`: a device, a pipe, a tty, another process's descriptor)."""

    name: str
    path: Path | None = None
    fd: int | None = None
    append: bool = False


# /dev/stdout, /dev/fd/3, /proc/self/fd/3 and the like: names of a descriptor, not of a file
_DESCRIPTOR = re.compile(r"/dev/(?:std(?P<std>in|out|err)|fd/(?P<fd>\d+))|/proc/(?P<pid>self|thread-self|\d+)/fd/"
                         r"(?P<pfd>\d+)")


def _descriptor_alias(path: str) -> tuple[int, bool] | None:
    """(descriptor, ours) when `path`, or a link on the way from it, names a descriptor; else None."""
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        match = _DESCRIPTOR.fullmatch(current)
        if match:
            if match["std"]:
                return {"in": 0, "out": 1, "err": 2}[match["std"]], True
            ours = match["pid"] in (None, "self", "thread-self") or int(match["pid"]) == os.getpid()
            return int(match["fd"] or match["pfd"]), ours
        if not os.path.islink(current):
            return None
        current = os.path.normpath(os.path.join(os.path.dirname(current), os.readlink(current)))
    return None


def output_target(output_path, model_path) -> OutputTarget | None:
    """Where --output goes, checked before any time is spent generating.

    Only a regular file named by its own path is replaced atomically (written beside itself and
    renamed), so its directory must take a new file. A name of an open descriptor is written
    through that descriptor, so a file the shell opened with >> keeps what it held; a device,
    pipe or tty is opened for appending. Renaming over any of these would replace the file
    behind the descriptor, or turn a device into a file. The model being read is refused.
    """
    from textgen.files import probe_writable

    if output_path is None:
        return None
    if output_path == "-":
        return OutputTarget("-", fd=1)
    alias = _descriptor_alias(output_path)
    _refuse_the_model(output_path, model_path)
    if alias is not None:
        fd, ours = alias
        if not ours:
            return OutputTarget(output_path, path=Path(output_path), append=True)
        try:
            os.fstat(fd)
        except OSError:
            raise UsageError(f"--output {output_path} names descriptor {fd}, which is not open; give a file "
                             "or an open descriptor") from None
        return OutputTarget(output_path, fd=fd)
    given = Path(output_path)
    if given.exists() and not given.is_file():
        return OutputTarget(output_path, path=given, append=True)  # not a directory (click refuses those)
    for fd in (1, 2):  # `--output log.txt >> log.txt`: that file is already ours to write through
        try:
            if given.exists() and os.path.samestat(os.stat(given), os.fstat(fd)):
                return OutputTarget(output_path, fd=fd)
        except OSError:
            pass
    target = given.resolve()
    if not target.parent.is_dir():
        raise TextgenError(f"the directory of --output {output_path} does not exist; create it or choose another")
    try:  # the file is written beside its destination and renamed, so prove a file can be made there
        probe_writable(target.parent)
    except OSError as exc:
        raise TextgenError(f"the directory of --output {output_path} cannot be written ({exc.strerror}); "
                           "choose another") from None
    return OutputTarget(output_path, path=target)


def _refuse_the_model(output_path, model_path) -> None:
    try:
        same = os.path.samefile(output_path, model_path)
    except OSError:
        same = False
    if same or Path(output_path).resolve() == Path(model_path).resolve():
        raise UsageError(f"--output {output_path} is the model being read; write the samples to another file")


def write_output(target: OutputTarget, texts: list[str], separator: str = "\n\n") -> None:
    """`texts` joined by `separator` (samples: a blank line; a seq2seq model's outputs: a line end)."""
    from textgen.files import remove_temporaries, write_text_atomic

    text = separator.join(texts) + "\n"
    if target.path is not None and not target.append:
        write_text_atomic(target.path, text)
        remove_temporaries(target.path.parent, {target.path.name: ".tmp"})  # ones a killed generate left
        return
    try:
        if target.fd in (1, 2):
            click.echo(text, nl=False, err=target.fd == 2)
        elif target.fd is not None:
            with open(target.fd, "w", encoding="utf-8", closefd=False) as stream:
                stream.write(text)
        else:  # opened without waiting: a pipe nobody reads would block the open forever
            try:
                fd = os.open(target.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NONBLOCK", 0))
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                raise TextgenError(f"--output {target.name} is a pipe that no process reads; start its reader "
                                   "first or write to a file") from None
            os.set_blocking(fd, True)
            with open(fd, "w", encoding="utf-8") as stream:
                stream.write(text)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise TextgenError(f"--output {target.name} cannot be written ({exc.strerror or exc}); "
                           "choose another file") from None
