"""Recurrent cell kinds: one module per kind, and the registry that names them.

A kind (`textgen.models.cells.kind.CellKind`) is everything textgen knows about one
recurrent cell, in one place: the name `model.cell` gives it, the Keras cell class saved
models hold, how the layer is built (and its fused training twin, where one exists), its
state sizes, what keeps Keras's cuDNN kernel open for it, and its gate arithmetic, which the
generation steppers and the fused training kernels run. Generation, training and saving ask
the registry; they never name a cell.

The registry maps each name to the module that defines the kind and imports that module on
first use, so reading the names (`textgen.config` validates `model.cell` against them)
does not import Keras. Adding a cell is a module beside these and one `register` line.
"""

from __future__ import annotations

import importlib

_MODULES: dict[str, str] = {}  # model.cell name -> module defining KIND


def register(name: str, module: str) -> None:
    """Make the kind that `module` defines as KIND selectable as `model.cell: name`."""
    _MODULES[name] = module


register("lstm", "textgen.models.cells.lstm")
register("gru", "textgen.models.cells.gru")
register("simple_rnn", "textgen.models.cells.simple_rnn")
register("peephole_lstm", "textgen.models.cells.peephole_lstm")
register("mgu", "textgen.models.cells.mgu")


def names() -> tuple[str, ...]:
    """Every registered name, in registration order."""
    return tuple(_MODULES)


def get(name: str):
    """The kind registered as `name` (a KeyError for an unknown name)."""
    kind = importlib.import_module(_MODULES[name]).KIND
    if kind.name != name:
        raise ValueError(f"{_MODULES[name]} defines the kind {kind.name!r}, registered as {name!r}")
    return kind


def kinds() -> list:
    """Every registered kind; importing them registers their Keras classes for loading."""
    return [get(name) for name in _MODULES]


def for_cell(cell):
    """The kind whose Keras cell class `cell` is exactly, or None (a cell textgen does not know)."""
    return next((kind for kind in kinds() if type(cell) is kind.cell_class), None)


def stand_ins() -> dict[str, str]:
    """{training twin class name: the Keras class name a saved model holds instead}."""
    return {kind.fused_class.__name__: kind.layer_class.__name__ for kind in kinds() if kind.fused_class}
