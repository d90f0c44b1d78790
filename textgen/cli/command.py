"""The kind of click command every `textgen` sub-command that needs TensorFlow is."""

from __future__ import annotations

import click

from textgen.cli.quiet import load_library


class LibraryCommand(click.Command):
    """A command that loads TensorFlow and textgen's Keras objects once its arguments parse.

    So `--help`, `--version` and usage errors never wait for that import, and a Ctrl-C during
    it ends the command quietly rather than with a traceback. It also takes the group's
    `--verbose` and `--debug` after the command name (`textgen generate ... --verbose`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.extend([
            click.Option(["--verbose"], is_flag=True,
                         help="Same as `textgen --verbose`: show TensorFlow's own log lines and warnings."),
            click.Option(["--debug"], is_flag=True,
                         help="Same as `textgen --debug`: show full tracebacks instead of one-line errors."),
        ])

    def invoke(self, ctx: click.Context):
        verbose, debug = ctx.params.pop("verbose", False), ctx.params.pop("debug", False)
        obj = ctx.ensure_object(dict)  # the group's, or a new one for a lone command
        obj["verbose"], obj["debug"] = obj.get("verbose") or verbose, obj.get("debug") or debug
        load_library(obj["verbose"])
        return super().invoke(ctx)
