"""`textgen generate --interactive`: pick every next token yourself.

Only the terminal side lives here: it prints with click.echo, asks with click.prompt and
drives a `textgen.generation.generate.StepSession`, which does the model work and never reads input.
"""

from __future__ import annotations

import sys

import click

from textgen.cli.quiet import note
from textgen.errors import UsageError

HELP = ("Enter a number to pick that candidate (Enter alone picks 1), +TEXT to type your own text, "
        "b or b N to step back, q to stop.")
SHOWN_CHARS = 300  # characters of the text so far shown above the candidates


def run_interactive(generator, seed: str, *, candidates: int = 10, temperature: float = 1.0,
                    max_tokens: int = 500, strict: bool = False, labels=()) -> str:
    """Let the user build a continuation of `seed` token by token; returns the text after the seed."""
    session = generator.session(seed, strict, labels)
    _keep_undecodable_input()
    note(HELP, err=False)  # how to answer; the prompt itself is the command's work
    while True:
        if len(session.ids) >= max_tokens:
            click.echo(f"(reached --length {max_tokens})")
            break
        shown = seed + session.text
        click.echo("\n" + ("..." + shown[-SHOWN_CHARS:] if len(shown) > SHOWN_CHARS else shown))
        options = session.candidates(candidates, temperature)
        for number, (_, token, probability) in enumerate(options, 1):
            click.echo(f"  {number:>2}  {token!r:12} {probability:7.2%}")
        try:
            answer = click.prompt("choice", default="1", show_default=False)
        except click.Abort as exc:  # end of input (Ctrl-D) stops, like q; Ctrl-C stops the command
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise exc.__context__ from None
            click.echo()
            break
        if not _is_utf8(answer):
            click.echo("that line is not UTF-8; type it again in UTF-8")
            continue
        if not _apply(session, answer, options):
            break
    click.echo("\n" + seed + session.text)
    return session.text


def _keep_undecodable_input() -> None:
    """Read stdin so that a line that is not UTF-8 arrives with its bad bytes as lone surrogates
    (and gets an answer) instead of raising UnicodeDecodeError out of the prompt."""
    reconfigure = getattr(sys.stdin, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="surrogateescape")
        except (ValueError, OSError):
            pass  # a stream that cannot change: a bad line still ends the session with one line


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _apply(session, answer: str, options) -> bool:
    """Carry out one answer; False means stop."""
    command = answer.strip()
    if command == "q":
        return False
    if answer.startswith("+"):
        try:
            session.append_text(answer[1:])
        except UsageError as exc:
            click.echo(f"cannot type that: {exc}")
    elif command == "b" or (command.startswith("b ") and command[2:].strip().isdigit()):
        steps = int(command[2:]) if command != "b" else 1
        if steps == 0:
            click.echo("b N steps back N tokens: give N of 1 or more")
        elif session.back(steps) == 0:
            click.echo("nothing to step back over: only the seed is left")
    elif command.isdigit() and 1 <= int(command) <= len(options):
        session.choose(options[int(command) - 1][0])
    else:
        click.echo(f"not understood: {answer!r}. {HELP}")
    return True
