"""Atomic writes for everything a run directory holds.

Each file is written beside its destination under a temporary name, flushed to disk and
renamed over the destination, so a crash or Ctrl-C leaves either the old file or the new
one, never a half-written mix. Keras is imported only by the functions that save models,
so writing text and plots (`textgen plot`) does not wait for TensorFlow.

Models and checkpoint weights are serialised into memory first and written with plain
Python I/O: h5py writing straight to a file that hits a full disk prints tracebacks from
its destructors and can crash the process, while a failed `write` raises one OSError. Any
failure becomes a TextgenError naming the destination (never the temporary name), and the
temporary file is removed, so the previous file stays as it was.
"""

from __future__ import annotations

import errno
import io
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import keras


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_file(tmp: str, path: Path) -> None:
    """Give the temporary file normal permissions and move it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def write_file_atomic(path: str | Path, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """`write(tmp)` fills a temporary file beside `path`; it is flushed to disk and renamed to `path`.

    `suffix` ends the temporary name: matplotlib goes by the suffix of the file it writes.
    An OSError becomes a TextgenError naming `path`.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        write(tmp)
        with open(tmp, "r+b") as handle:  # a handle open for writing: Windows refuses fsync on a read-only one
            os.fsync(handle.fileno())
        publish_file(tmp, path)
    except OSError as exc:
        if tmp is not None:
            remove_file(tmp)
        raise write_failed(path, exc) from None
    except BaseException:
        if tmp is not None:
            remove_file(tmp)
        raise


def write_bytes_atomic(path: str | Path, data: bytes | memoryview, suffix: str = ".tmp") -> None:
    """Write `data` to `path` atomically with plain file I/O."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as out:
            out.write(data)

    write_file_atomic(path, write, suffix)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_failed(path: Path, exc: OSError):
    """The one-line error for a file textgen could not write: the destination, why, and the fix."""
    from textgen.errors import TextgenError

    why = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fix = "free some space"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {path.parent} writable"
    else:
        fix = "check the disk"
    # Inside a run that has a checkpoint (the file is in the run directory or in its checkpoint/
    # or cache/ folder), the work done so far is kept: resuming continues from it.
    resumable = any((folder / "checkpoint" / "state.json").is_file() for folder in (path.parent, path.parent.parent))
    then = "then continue with `textgen train --resume`" if resumable else "then run again"
    return TextgenError(f"{path} cannot be written ({why}); {fix}, {then}")


class _NamedBuffer(io.BytesIO):
    """An in-memory file whose name Keras checks for the suffix of the format it writes."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    def __str__(self) -> str:
        return self._name


def in_memory(save: Callable[[io.BytesIO], None], name: str) -> memoryview:
    """The bytes `save(file)` writes (a view, not a copy); `name`'s suffix tells Keras the
    format (.keras, .weights.h5)."""
    buffer = _NamedBuffer(name)
    save(buffer)
    return buffer.getbuffer()


def save_model_atomic(model: keras.Model, path: str | Path, model_card: dict | None = None) -> None:
    """Save an inference copy of `model` (no optimizer state) to `path` atomically.

    The copy is what generation needs: weights, architecture, tokenizer and model card. The
    optimizer's slots would triple the file and are kept in the training checkpoint instead.
    The copy is float32 with Keras's own layer classes, however the model was trained
    (see `inference_config`).
    """
    from textgen.models.layers import find_token_embedding

    path = Path(path)
    if model_card is not None:
        find_token_embedding(model).model_card = dict(model_card)
    # clone_model would copy the optimizer. Callers stay outside any distribution strategy's
    # scope (fit runs callbacks outside it), so a copy made by the chief alone waits for no one.
    inference = model.__class__.from_config(inference_config(model.get_config()))
    inference.set_weights(model.get_weights())
    write_bytes_atomic(path, in_memory(inference.save, "model.keras"), suffix=".tmp.keras")


def inference_config(config):
    """A model config that loads and runs in float32 with only Keras's and textgen's saved classes.

    Training may use a mixed-precision policy and fused kernel twins of LSTM and GRU
    (textgen.models.fused_rnn); the saved model is the same network in float32 with the plain
    layers, so generation never depends on how it was trained. The weights are float32
    under every policy, so they carry over unchanged.
    """
    from textgen.models.fused_rnn import KERAS_CLASSES

    if isinstance(config, (list, tuple)):
        return type(config)(inference_config(item) for item in config)
    if not isinstance(config, dict):
        return config
    config = {key: inference_config(value) for key, value in config.items()}
    if config.get("class_name") == "DTypePolicy" and str(config.get("config", {}).get("name", "")).startswith("mixed_"):
        config["config"] = {**config["config"], "name": "float32"}
    if config.get("class_name") == "__keras_tensor__" and config["config"].get("dtype") in ("float16", "bfloat16"):
        config["config"] = {**config["config"], "dtype": "float32"}
    if config.get("class_name") in KERAS_CLASSES and "config" in config:
        config.update(class_name=KERAS_CLASSES[config["class_name"]], module="keras.layers", registered_name=None)
    return config


def probe_writable(directory: str | Path) -> None:
    """Make and remove a file in `directory`; an OSError says why files cannot be made there."""
    fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
    os.close(fd)
    os.remove(probe)


def temporary_name_pattern(name: str, suffix: str = ".tmp") -> re.Pattern:
    """The names `write_file_atomic` (and `tempfile.mkstemp` with textgen's prefix) gives the
    temporary files of `name`: `.NAME.` + mkstemp's eight random characters + `suffix`."""
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")


def remove_temporaries(directory: str | Path, names: dict[str, str]) -> list[Path]:
    """Remove the temporary files a killed process left for the files `names` maps to
    their temporary suffix; nothing else in `directory` is touched. Returns those removed."""
    patterns = [temporary_name_pattern(name, suffix) for name, suffix in names.items()]
    removed = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if any(p.fullmatch(entry.name) for p in patterns) and entry.is_file(follow_symlinks=False):
            remove_file(entry.path)
            removed.append(Path(entry.path))
    return removed


def remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def update_model_card(path: str | Path, model_card: dict) -> None:
    """Replace the model card inside a saved model file, keeping its weights (atomically)."""
    import keras

    model = keras.models.load_model(path, compile=False, safe_mode=True)
    save_model_atomic(model, path, model_card)
