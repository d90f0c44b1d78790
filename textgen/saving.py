"""Saving and loading model files: the atomic save of a `.keras` file, and the one loader of
`.keras` model files that training, generation and the CLI share.

Every write goes through textgen.files (all or nothing). Keras is imported only by the
functions that save or load models, so importing this module does not wait for TensorFlow.

Models and checkpoint weights are serialised into memory first and written with plain
Python I/O: h5py writing straight to a file that hits a full disk prints tracebacks from
its destructors and can crash the process, while a failed `write` raises one OSError. Any
failure becomes a TextgenError naming the destination (never the temporary name), and the
temporary file is removed, so the previous file stays as it was.

A model file is data, never code: it is loaded in Keras's safe mode, and everything textgen
reads from it (tokenizer, model card) is checked once at load time, so a damaged or foreign
file is one line naming it instead of a traceback later.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from textgen.errors import ModelFileError
from textgen.files import write_bytes_atomic

if TYPE_CHECKING:
    import keras

# The layout of what textgen stores in a .keras file; bumped when it changes incompatibly.
FORMAT_VERSION = 1


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

    Training may use a mixed-precision policy and fused kernel twins of Keras's recurrent
    layers (textgen.models.fused_rnn); the saved model is the same network in float32 with
    the plain layers, so generation never depends on how it was trained. The weights are
    float32 under every policy, so they carry over unchanged.
    """
    from textgen.models.cells import stand_ins

    if isinstance(config, (list, tuple)):
        return type(config)(inference_config(item) for item in config)
    if not isinstance(config, dict):
        return config
    config = {key: inference_config(value) for key, value in config.items()}
    if config.get("class_name") == "DTypePolicy" and str(config.get("config", {}).get("name", "")).startswith("mixed_"):
        config["config"] = {**config["config"], "name": "float32"}
    if config.get("class_name") == "__keras_tensor__" and config["config"].get("dtype") in ("float16", "bfloat16"):
        config["config"] = {**config["config"], "dtype": "float32"}
    keras_classes = stand_ins()
    if config.get("class_name") in keras_classes and "config" in config:
        config.update(class_name=keras_classes[config["class_name"]], module="keras.layers", registered_name=None)
    return config


def update_model_card(path: str | Path, model_card: dict) -> None:
    """Replace the model card inside a saved model file, keeping its weights (atomically)."""
    import keras

    model = keras.models.load_model(path, compile=False, safe_mode=True)
    save_model_atomic(model, path, model_card)


# --------------------------------------------------------------------------- loading model files


def load_keras_model(path: str | Path) -> keras.Model:
    """Load a textgen .keras file safely, with a one-line error for every way it can be wrong."""
    import keras

    import textgen

    path = check_model_path(path)
    textgen.load_keras_objects()  # the classes the file names must be registered before Keras reads it
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for broken or foreign files
        raise ModelFileError(f"model file {path} cannot be loaded: {_load_failure(exc)}") from None
    check_textgen_model(model, path)
    return model


def check_model_path(path: str | Path) -> Path:
    """`path` as a Path if it names a .keras zip archive; a ModelFileError saying what it is instead."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist; train one with `textgen train`")
    if path.is_dir():
        raise ModelFileError(f"model path {path} is a directory; give the model.keras file inside it")
    if path.suffix != ".keras":
        raise ModelFileError(f"model file {path} is not a .keras file; give the model.keras of a run")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"model file {path} is not a valid .keras archive (truncated or not a model); "
                             "retrain or copy it again")
    return path


def check_textgen_model(model: keras.Model, path: str | Path) -> None:
    """Check everything textgen reads from a loaded model's tokenizer and model card."""
    from textgen.models.layers import find_token_embedding

    embedding = find_token_embedding(model)  # None: a model textgen did not build, which the check names
    parts = (embedding.tokenizer, embedding.model_card, embedding.input_dim) if embedding else (None, None, None)
    check_model_contents(path, *parts, model.outputs[0].shape[-1] if model.outputs else None)


def check_model_contents(path: str | Path, tokenizer: dict | None, card: dict | None, input_dim: int | None,
                         outputs: int | None) -> None:
    """Check a model's tokenizer and card (its TokenEmbedding's), its vocabulary's size against
    the network's `input_dim` and `outputs` (None: unknown); `textgen info` checks the file's
    JSON this way without loading it.

    A .keras file is a zip anyone can edit: the tokenizer and card are JSON inside it, and
    the code that uses them (generation, `info`, `evaluate`, fine-tuning) trusts their shape.
    Checking them here, once, turns a damaged file into one line at load time instead of a
    traceback half-way through the output.
    """
    from textgen.data.tokenizer import tokenizer_from_config

    if not tokenizer:
        raise ModelFileError(f"model file {path} is a Keras model but not a textgen model "
                             "(it carries no tokenizer); train it with `textgen train`")
    damaged = f"model file {path} is damaged:"
    fix = "retrain or copy the file again"
    version = card.get("format_version", 1)
    if not _whole(version) or version < 1:
        raise ModelFileError(f"{damaged} its model card's format_version is {version!r}, not a whole number "
                             f"of 1 or more; {fix}")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"model file {path} uses textgen format {version}, newer than this textgen "
                             f"understands ({FORMAT_VERSION}); upgrade with `pip install -U textgen`")
    problem = _card_problem(card)
    if problem:
        raise ModelFileError(f"{damaged} its model card's {problem}; {fix}")
    try:
        tokenizer = tokenizer_from_config(tokenizer)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{damaged} its tokenizer cannot be used ({_first_line(exc)}); {fix}") from None
    size = tokenizer.vocab_size
    if (card.get("architecture") or {}).get("type") == "seq2seq":
        # The source tokenizer's ids sit above the reserved marks (textgen.data.pairs); the logits
        # are the target vocabulary's, which the target embedding carries.
        from textgen.data.pairs import RESERVED

        size, outputs = size + RESERVED, None
    if size != input_dim or outputs not in (None, size):
        raise ModelFileError(f"{damaged} its vocabulary has {size} tokens but the network reads "
                             f"{input_dim} and predicts {outputs}; {fix}")


_NUMBER = (int, float)
# What the model card may hold, key by key: the types textgen's readers accept (None: absent).
_CARD = {"textgen_version": (str,), "coverage": _NUMBER, "precision": (str,), "history": (dict,),
         "config": (dict,), "init_from": (dict,)}
_HISTORY = {"final_loss": _NUMBER, "final_val_loss": _NUMBER, "best_loss": _NUMBER, "seconds": _NUMBER,
            "epochs": (int,), "best_epoch": (int,), "best_step": (int,), "steps": (int,), "stopped": (str,)}


def _card_problem(card: dict) -> str | None:
    """What is wrong with the model card's values that textgen reads, or None."""
    checks = [("", card, _CARD), ("history.", card.get("history") or {}, _HISTORY)]
    config = card.get("config") or {}
    for section, value in config.items():
        if not isinstance(value, dict):
            return f"config.{section} is {value!r}, not a mapping"
    training = config.get("training") or {}
    checks.append(("config.training.", training, {"seq_length": (int,), "ema_momentum": _NUMBER}))
    checks.append(("init_from.", card.get("init_from") or {}, {"path": (str,)}))
    for prefix, values, types in checks:
        for key, allowed in types.items():
            value = values.get(key)
            if value is not None and (not isinstance(value, allowed) or isinstance(value, bool)):
                kind = "a number" if allowed is _NUMBER else {int: "a whole number", str: "a string",
                                                              dict: "a mapping"}[allowed[0]]
                return f"{prefix}{key} is {value!r}, not {kind}"
    seq_length = training.get("seq_length")
    if seq_length is not None and seq_length < 1:
        return f"config.training.seq_length is {seq_length}, not 1 or more"
    if card.get("architecture") is not None:
        from textgen.models.architecture import architecture_problem

        problem = architecture_problem(card["architecture"])
        if problem:
            return problem
    if card.get("labels") is not None:
        from textgen.labels import labels_problem

        return labels_problem(card["labels"])
    return None


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _load_failure(exc: BaseException) -> str:
    """Why Keras refused a file, in one line: the innermost error names the layer or class.

    safe_mode refuses Lambda layers (their Python code would run on load); classes that are
    neither Keras's nor textgen's registered ones are refused too, and textgen imports no
    other code to find them.
    """
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    text = str(exc)
    if "Lambda" in text and "safe_mode" in text:
        return ("it holds a Lambda layer, whose Python code textgen never runs (Keras safe mode); "
                "use a model trained by textgen")
    unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if unknown:
        return (f"it needs {unknown.group(1)}, which is neither a Keras nor a textgen object; "
                "textgen loads no other code, so use a model trained by textgen")
    return _first_line(exc)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
