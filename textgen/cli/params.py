"""Parameter types the sub-commands share."""

from __future__ import annotations

import os
import stat

import click


class ModelFile(click.Path):
    """A saved model: a .keras file, or a run directory, which stands for its model.keras.

    A path that does not exist, or names a FIFO or device rather than a file, is a usage
    error (exit 2), like every other missing input file: the command must change.
    """

    name = "model"

    def __init__(self):
        super().__init__(dir_okay=False)

    def convert(self, value, param, ctx):
        if isinstance(value, (str, os.PathLike)) and os.path.isdir(value):
            inside = os.path.join(value, "model.keras")
            if not os.path.isfile(inside):
                self.fail(f"{value!r} is a directory without a model.keras; give a model file or a run directory "
                          "that holds one", param, ctx)
            value = inside
        if isinstance(value, (str, os.PathLike)):
            try:
                mode = os.stat(value).st_mode
            except FileNotFoundError:
                self.fail(f"model file {os.fsdecode(value)!r} does not exist; check the path, or train one with "
                          "`textgen train`", param, ctx)
            except OSError as exc:
                self.fail(f"model file {os.fsdecode(value)!r} cannot be read ({exc.strerror}); check the path",
                          param, ctx)
            else:
                if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
                    self.fail(f"{os.fsdecode(value)!r} is not a regular file (a pipe or a device); give a "
                              ".keras model file", param, ctx)
        return super().convert(value, param, ctx)


class TextEncoding(click.ParamType):
    """A text encoding Python knows (utf-8, latin-1, utf_16_le), as `corpus.encoding` takes."""

    name = "encoding"

    def convert(self, value, param, ctx):
        from textgen.config import is_text_encoding

        if not is_text_encoding(value):
            self.fail(f"must name a text encoding Python knows, such as utf-8 or latin-1, got {value!r}", param, ctx)
        return value


class ConfigSource(click.Path):
    """A --config value: a YAML file, `-` for stdin, or the name of a preset that ships with
    textgen (`quick`). `textgen.config.presets.config_source` decides which, here while the
    command line is parsed, so a name that is neither is answered before TensorFlow loads;
    the shell completes both."""

    name = "config"

    def __init__(self):
        super().__init__(allow_dash=True)

    def convert(self, value, param, ctx):
        from textgen.config.presets import config_source
        from textgen.errors import ConfigError

        value = super().convert(value, param, ctx)
        try:
            config_source(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        return value

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        from textgen.config.presets import preset_names

        names = [CompletionItem(n) for n in preset_names() if n.startswith(incomplete)]
        return [*names, *super().shell_complete(ctx, param, incomplete)]


def model_option():
    """`--model`, as every command that reads one model takes it (a file or a run directory;
    None means the pretrained model, which each command resolves when it needs the file)."""
    return click.option("--model", "model_path", type=ModelFile(), default=None,
                        help="A model.keras file written by `textgen train`, or its run directory.  [default: the "
                             "pretrained Shakespeare character model shipped with textgen]")
