"""The starter config `textgen init` writes: the keys a user changes first, each with a comment.

The values are the quick preset's (a model that trains in minutes on a CPU), pointed at the
user's own text, so the first run shows whether the text and settings work before a longer
one. The file is created, never replaced: it is written beside its destination and linked
into place only if nothing has that name, so an existing config survives and a half-written
one never appears.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from textgen.errors import TextgenError, UsageError
from textgen.files import create_file

STARTER_NAME = "textgen.yaml"
PLACEHOLDER = "my-text.txt"  # a corpus path that names no file, so training says to fix corpus.paths

_TEMPLATE = """\
# A textgen config: train with `textgen train --config {config}`.
# Keys left out take their defaults (docs/training.md lists every key); `textgen presets`
# lists ready-made configs, and `--set section.key=value` changes one key for one run.
corpus:
  # your text: files, folders or globs, relative to this file's folder
  paths: [{corpus}]{corpus_note}
  validation_fraction: 0.1  # the tail of the text held out to measure progress, 0 to 0.5
tokenizer:
  level: char  # char: letter by letter (any language); word: words and punctuation marks
model:
  cell: gru  # the recurrent cell: lstm | gru | ... (docs/architectures.md)
  embedding_dim: 64  # size of each character's vector
  units: 256  # memory of the network: larger learns more and trains slower
  layers: 1  # stacked recurrent layers
  dropout: 0.0  # 0.1-0.3 when the validation loss rises while the training loss still falls
training:
  seq_length: 64  # characters (or words) of context per training window
  batch_size: 64  # windows per step
  epochs: 4  # passes over the text
  learning_rate: 0.003
  ema_momentum: 0.995  # validate and save an average of the weights (0 = the weights as trained)
  max_minutes: null  # stop after this many minutes, keeping the best model; null = no limit
  sample_every: 1  # print a few samples after every this many epochs (0 = never)
output:
  dir: runs/{run}  # the run directory, relative to the working directory
"""


def starter_config(corpus: str | None, config_name: str = STARTER_NAME) -> str:
    """The starter config's text. `corpus` is written as given (relative to the config's
    folder); None writes PLACEHOLDER with a note to replace it."""
    note = "" if corpus is not None else "  # <- replace with your text's path"
    return _TEMPLATE.format(config=config_name, corpus=json.dumps(corpus or PLACEHOLDER), corpus_note=note,
                            run=_run_name(corpus))


def _run_name(corpus: str | None) -> str:
    """A run directory name from the corpus file's name: `plays` for texts/plays.txt."""
    stem = Path(corpus).stem if corpus and corpus != "-" else ""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")
    return name or "my-model"


def corpus_for(config_folder: str | Path, corpus: str) -> str:
    """`corpus` (as typed, relative to the working directory) as the config in `config_folder`
    names it: relative to that folder, or absolute when the user gave it so. A path that does
    not exist is a UsageError, unless it is a glob or `-` (stdin), which name no one file."""
    if corpus == "-" or any(c in corpus for c in "*?["):
        return corpus
    expanded = os.path.expanduser(corpus)
    if not os.path.exists(expanded):
        raise UsageError(f"corpus {corpus} does not exist; give your text file, a folder of them or a glob")
    if os.path.isabs(expanded):
        return expanded
    try:
        relative = os.path.relpath(os.path.abspath(expanded), os.path.abspath(config_folder))
    except ValueError:  # another drive (Windows): no relative path reaches it
        return os.path.abspath(expanded)
    return Path(relative).as_posix()


def write_starter_config(folder: str | Path, corpus: str | None = None) -> Path:
    """Write `folder`/textgen.yaml (creating `folder`), naming `corpus` (a path relative to the
    working directory, or None for a placeholder). A UsageError if the file exists."""
    folder = Path(folder)
    target = folder / STARTER_NAME
    named = corpus_for(folder, corpus) if corpus is not None else None
    if os.path.lexists(target):
        raise _exists(target)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TextgenError(f"cannot create {folder}: {exc.strerror or exc}; choose another folder") from None
    create_file(target, starter_config(named).encode("utf-8"), _exists)
    return target


def _exists(path: Path) -> UsageError:
    return UsageError(f"{path} already exists and textgen init never replaces a file; edit it, "
                      "or give another folder")
