"""The pretrained model shipped with textgen, so generation works before any training.

textgen/pretrained/shakespeare-char.keras is a character LSTM trained on Tiny Shakespeare by
`python scripts/train_pretrained.py` (the shakespeare-char preset). It is package data:
`pip install textgen` installs it beside this module.
"""

from __future__ import annotations

from pathlib import Path

from textgen.errors import ModelFileError

DEFAULT_MODEL = "shakespeare-char.keras"


def default_model_path() -> Path:
    """The pretrained default model's file; a ModelFileError if this install lacks it."""
    path = Path(__file__).resolve().parent / DEFAULT_MODEL
    if not path.is_file():
        raise ModelFileError(f"the pretrained model {path} is not installed; train one with "
                             "`textgen train --config shakespeare-char` and pass --model, "
                             "or build it with `python scripts/train_pretrained.py`")
    return path
