"""Parameter types the sub-commands share."""

from __future__ import annotations

import os

import click


class ModelFile(click.Path):
    """A saved model: a .keras file, or a run directory, which stands for its model.keras.

    A path that does not exist is a usage error (exit 2), as every missing input file is.
    """

    name = "model"

    def __init__(self):
        super().__init__(dir_okay=False, exists=True)

    def convert(self, value, param, ctx):
        if isinstance(value, (str, os.PathLike)) and os.path.isdir(value):
            inside = os.path.join(value, "model.keras")
            if not os.path.isfile(inside):
                self.fail(f"{value!r} is a directory without a model.keras; give a model file or a run directory "
                          "that holds one", param, ctx)
            value = inside
        return super().convert(value, param, ctx)
