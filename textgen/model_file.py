"""A textgen .keras file read as data, without Keras: what `textgen info` answers from.

A .keras file is a zip of `config.json` (the network's layers, textgen's tokenizer and model
card among them), `metadata.json` and `model.weights.h5`. Reading the JSON and the weights'
shapes takes milliseconds; importing TensorFlow to load the file takes seconds.

This reader vouches only for files it fully understands: a textgen model (its
TokenEmbedding carries the tokenizer and card) whose config names only Keras's own classes
(never a Lambda, whose code safe mode refuses) and those textgen registers. For any other
file, and for one whose JSON or weights it cannot read, it raises `NeedsKeras`, and the
caller loads the file with Keras (`textgen.saving.load_keras_model`), whose one-line error
for a broken or foreign file is then the answer. The tokenizer and model card pass the same
checks as on loading (`saving.check_model_contents`).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

from textgen.saving import FORMAT_VERSION, check_model_contents, check_model_path

# Every Keras object textgen registers (package "textgen"); tests/test_package.py checks this
# list against Keras's registry, so a new registered class cannot be missed here.
TEXTGEN_OBJECTS = frozenset(f"textgen>{name}" for name in (
    "TokenEmbedding", "LabelEmbedding", "PositionEmbedding", "TransformerBlock", "WindowFrames", "WindowUnframe",
    "AttentionPooling", "MGUCell", "PeepholeLSTMCell", "ConstantSchedule", "ExponentialSchedule", "CosineSchedule",
    "BudgetCosineSchedule", "PaddingMask", "SourceAttention", "TokenNoise"))
# Keras's markers for values that are not objects: tensors in the graph, tuples.
_VALUE_MARKERS = frozenset({"__keras_tensor__", "__tuple__"})


class NeedsKeras(Exception):
    """This file is not one the JSON reader vouches for: load it with Keras instead."""


@dataclass(frozen=True)
class StoredModel:
    config: dict  # config.json: the serialised model, as `keras.saving.serialize_keras_object` writes it
    parameters: int  # numbers in model.weights.h5: the model's count_params()


def read_model_file(path: str | Path) -> StoredModel:
    """The model in `path`, read without Keras; a ModelFileError for a file that is not a
    textgen model or is damaged, NeedsKeras for one only Keras can judge."""
    path = check_model_path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            if not isinstance(config, dict):
                raise NeedsKeras(f"{path}: config.json holds no model")
            unknown = unknown_class(config)
            if unknown:
                raise NeedsKeras(f"{path} names {unknown}")
            parameters = _parameter_count(archive)
    except NeedsKeras:
        raise
    except Exception as exc:  # zip, JSON and HDF5 errors alike: Keras's loader names the problem
        raise NeedsKeras(f"{path}: {exc}") from None
    try:
        _check(path, config)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:  # layers not laid out as Keras writes them
        raise NeedsKeras(f"{path}: unexpected layout ({exc!r})") from None
    return StoredModel(config, parameters)


def unknown_class(node) -> str | None:
    """The first class in a serialised Keras config that is neither Keras's (Lambda aside) nor textgen's."""
    if isinstance(node, list):
        return next((found for item in node if (found := unknown_class(item))), None)
    if not isinstance(node, dict):
        return None
    if "class_name" in node:
        name, module = node.get("class_name"), node.get("module")
        keras_own = isinstance(module, str) and (module == "keras" or module.startswith("keras."))
        allowed = (node.get("registered_name") in TEXTGEN_OBJECTS or name in _VALUE_MARKERS and module is None
                   or keras_own and name != "Lambda" and node.get("registered_name") in (None, name))
        if not allowed:
            return repr(name)
    return next((found for value in node.values() if (found := unknown_class(value))), None)


def layers(config: dict) -> list[dict]:
    """The serialised layers of a serialised functional model, in order."""
    return config.get("config", {}).get("layers", [])


def token_embedding(config: dict) -> dict | None:
    """The TokenEmbedding layer's own config (tokenizer, model card, sizes), or None."""
    return next((layer["config"] for layer in layers(config)
                 if layer.get("registered_name") == "textgen>TokenEmbedding"), None)


def model_card(embedding: dict) -> dict:
    """The model card as the loaded TokenEmbedding holds it (format_version filled in)."""
    return {"format_version": FORMAT_VERSION, **(embedding.get("model_card") or {})}


def _check(path: Path, config: dict) -> None:
    """The checks loading applies to the tokenizer and card, on the JSON."""
    embedding = token_embedding(config)
    if embedding is None:  # a Keras model textgen did not build, or a broken one: Keras tells which
        raise NeedsKeras(f"{path} has no TokenEmbedding")
    tokenizer, card = embedding.get("tokenizer"), embedding.get("model_card")
    if not isinstance(tokenizer or {}, dict) or not isinstance(card or {}, dict):
        raise NeedsKeras(f"{path}: the TokenEmbedding's tokenizer or model card is not a mapping")
    check_model_contents(path, tokenizer, model_card(embedding), embedding.get("input_dim"), _logits_width(config))


def _logits_width(config: dict) -> int | None:
    """The units of the model's last Dense layer (a window model's is in its nested network): its logits."""
    width = None
    for layer in layers(config):
        if layer.get("class_name") == "Dense":
            width = layer["config"].get("units")
        elif layers(layer):
            width = _logits_width(layer) or width
    return width


def _parameter_count(archive: zipfile.ZipFile) -> int:
    """The numbers the weights file holds, from its arrays' shapes (no array is read)."""
    import h5py

    total = 0

    def count(name, item):
        nonlocal total
        if isinstance(item, h5py.Dataset):
            total += math.prod(item.shape)

    with archive.open("model.weights.h5") as stored, h5py.File(stored, "r") as weights:
        for group in ("layers", "vars"):  # the model's own; an optimizer's slots are not its parameters
            if group in weights:
                weights[group].visititems(count)
    return total
