"""Atomic writes for everything a run directory holds.

Each file is written beside its destination under a temporary name, flushed to disk and
renamed over the destination, so a crash or Ctrl-C leaves either the old file or the new
one, never a half-written mix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras

from textgen.layers import find_token_embedding


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_file(tmp: str, path: Path) -> None:
    """Give the temporary file normal permissions and move it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        publish_file(tmp, path)
    except BaseException:
        remove_file(tmp)
        raise


def save_model_atomic(model: keras.Model, path: str | Path, model_card: dict | None = None) -> None:
    """Save an inference copy of `model` (no optimizer state) to `path` atomically.

    The copy is what generation needs: weights, architecture, tokenizer and model card. The
    optimizer's slots would triple the file and are kept in the training checkpoint instead.
    """
    path = Path(path)
    if model_card is not None:
        find_token_embedding(model).model_card = dict(model_card)
    inference = model.__class__.from_config(model.get_config())  # clone_model would copy the optimizer
    inference.set_weights(model.get_weights())
    # Keras insists on the .keras suffix, so the temporary name keeps it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.keras", dir=path.parent)
    os.close(fd)
    try:
        inference.save(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        publish_file(tmp, path)
    except BaseException:
        remove_file(tmp)
        raise


def check_writable(directory: str | Path) -> Path:
    """Create `directory` if needed and prove a file can be written there."""
    from textgen.errors import TextgenError

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise TextgenError(f"output directory {directory} cannot be written ({exc.strerror}); "
                           "choose another with --output") from None
    return directory


def remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def update_model_card(path: str | Path, model_card: dict) -> None:
    """Replace the model card inside a saved model file, keeping its weights (atomically)."""
    model = keras.models.load_model(path, compile=False, safe_mode=True)
    save_model_atomic(model, path, model_card)
