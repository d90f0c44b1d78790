"""The kind of click command every `textgen` sub-command that needs TensorFlow is."""

from __future__ import annotations

import click

from textgen.cli.quiet import load_library


class LibraryCommand(click.Command):
    """A command that loads TensorFlow and textgen's Keras objects once its arguments parse.

    So `--help`, `--version` and usage errors never wait for that import, and a Ctrl-C during
    it ends the command quietly rather than with a traceback. It also takes the group's
    `--verbose` and `--debug` after the command name (`textgen generate ... --verbose`).
    With `loads_library=False` the command imports TensorFlow itself, and only if it turns
    out to need it (`textgen info` reads most model files without it).
    """

    def __init__(self, *args, loads_library: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.loads_library = loads_library
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
        if self.loads_library:
            load_library(obj["verbose"])
        return super().invoke(ctx)
