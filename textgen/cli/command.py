"""The kinds of click command every `textgen` sub-command is."""

from __future__ import annotations

import click

from textgen.cli.quiet import load_library

JSON_FLAG = "--json"  # a command with this option answers errors in JSON too (textgen.cli.main.JsonError)


class TextgenCommand(click.Command):
    """A command that takes the group's `--quiet`, `--verbose` and `--debug` after its name too
    (`textgen plot RUN --quiet`), and notes for the group whether `--json` was asked for, even
    when the arguments fail to parse, so that error can be answered in JSON as well.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.extend([
            click.Option(["-q", "--quiet"], is_flag=True,
                         help="Same as `textgen --quiet`: show only the result and errors (no progress, notes "
                              "or advice)."),
            click.Option(["--verbose"], is_flag=True,
                         help="Same as `textgen --verbose`: show TensorFlow's own log lines and warnings."),
            click.Option(["--debug"], is_flag=True,
                         help="Same as `textgen --debug`: show full tracebacks instead of one-line errors."),
        ])

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        json_option = next((p for p in self.params if JSON_FLAG in getattr(p, "opts", ())), None)
        if json_option is not None:
            ctx.ensure_object(dict)["json"] = _asks_for(json_option, self, ctx, args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        flags = ctx.ensure_object(dict)  # the group's, or a new one for a lone command
        for name in ("quiet", "verbose", "debug"):
            given_here = ctx.params.pop(name, False)  # always taken out: the command's own code never sees it
            flags[name] = bool(flags.get(name) or given_here)
        if flags["quiet"] and flags["verbose"]:
            raise click.UsageError("--quiet shows only the result and errors and --verbose adds TensorFlow's log "
                                   "lines; pass only one", ctx)
        self.start(flags)
        return super().invoke(ctx)

    def start(self, flags: dict) -> None:
        """What runs once the arguments have parsed, before the command's own code."""


class LibraryCommand(TextgenCommand):
    """A command that loads TensorFlow and textgen's Keras objects once its arguments parse.

    So `--help`, `--version` and usage errors never wait for that import, and a Ctrl-C during
    it ends the command quietly rather than with a traceback. A command made with
    `checks_first=True` loads them itself (`textgen.cli.quiet.library()`) once the checks that
    need no TensorFlow have passed: a wrong config path or clashing flags are then answered in
    a fraction of a second instead of after the import's several.
    """

    def __init__(self, *args, checks_first: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.checks_first = checks_first

    def start(self, flags: dict) -> None:
        if not self.checks_first:
            load_library(flags["verbose"])


def _asks_for(option: click.Parameter, command: click.Command, ctx: click.Context, args: list[str]) -> bool:
    """Whether `args` turn the flag `option` on. Read by click's own parser, so a value that looks
    like the flag (`--seed --json`) is not taken for it; when the arguments do not parse at all,
    the flag anywhere before `--` counts."""
    try:
        opts, _, _ = command.make_parser(ctx).parse_args(args=list(args))
    except click.UsageError:
        words = args[:args.index("--")] if "--" in args else args
        return JSON_FLAG in words
    return bool(opts.get(option.name))
