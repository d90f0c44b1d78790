"""The attention picture of a seq2seq model: which source tokens each target token looked at.

Drawn with matplotlib (textgen[plot]) into a new PNG file, never over an existing one.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from textgen.errors import TextgenError, UsageError
from textgen.files import create_file
from textgen.training.plot import matplotlib_available


def draw_attention(source_tokens: list[str], target_tokens: list[str], weights: np.ndarray, path: str | Path,
                   title: str = "") -> Path:
    """Write the (target x source) `weights` as a heat map to the new file `path`: one row per
    target token, one column per source token, darker where the decoder attended more."""
    path = Path(path)
    if not matplotlib_available():
        raise TextgenError("drawing needs matplotlib; install it with pip install 'textgen[plot]'")
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib.figure import Figure  # a Figure of its own: no pyplot global state

    rows, columns = len(target_tokens), len(source_tokens)
    # A cell per token pair, about a quarter of an inch, inside limits that keep the file readable.
    figure = Figure(figsize=(min(max(columns * 0.28 + 1.5, 4), 40), min(max(rows * 0.28 + 1.5, 3), 40)), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(weights[:rows, :columns], cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(columns), [_shown(t) for t in source_tokens], rotation=90)
    axes.set_yticks(range(rows), [_shown(t) for t in target_tokens])
    axes.set_xlabel("source")
    axes.set_ylabel("output")
    if title:
        axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.03)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    create_file(path, buffer.getvalue(), lambda p: UsageError(f"{p} exists; give --output a new file name"))
    return path


def _shown(token: str) -> str:
    """A token as a tick label: spaces and line ends made visible."""
    return {" ": "␣", "\n": "↵", "\t": "⇥"}.get(token, token)
