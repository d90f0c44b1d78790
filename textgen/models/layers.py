"""textgen's custom Keras objects. Each follows the layer contract: registered for
serialization, every constructor argument stored under the same name, **kwargs passed to
super(), and get_config chained, so a saved .keras file loads with plain
``keras.models.load_model`` after ``textgen.load_keras_objects()`` (or ``import keras, textgen``).
"""

from __future__ import annotations

import json

import keras

from textgen.errors import ModelFileError
from textgen.saving import FORMAT_VERSION  # noqa: F401  (also imported from here by callers)


class _JSONAttribute:
    """A dict attribute of a layer kept as a JSON string: Keras wraps dicts assigned to layer
    attributes in tracking containers, and JSON is what the .keras config holds anyway. Each
    read returns a fresh copy, so changing it changes nothing until it is assigned back."""

    def __set_name__(self, owner, name):
        self.slot = f"_{name}_json"

    def __get__(self, layer, owner=None):
        return self if layer is None else json.loads(getattr(layer, self.slot))

    def __set__(self, layer, value: dict) -> None:
        setattr(layer, self.slot, json.dumps(value))


@keras.saving.register_keras_serializable(package="textgen")
class TokenEmbedding(keras.layers.Embedding):
    """An Embedding that also carries the tokenizer and the model card.

    The vocabulary is what turns the embedding's rows into text, so it lives here: the
    .keras file then holds everything generation needs.

    Args:
        tokenizer: the tokenizer's `get_config()` (level, vocabulary, options).
        model_card: JSON-able facts about the model: format version, the network's
            architecture (textgen.models.architecture), the training config, the training
            history summary. Updated before each save.
    """

    def __init__(self, input_dim, output_dim, tokenizer=None, model_card=None, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        self.tokenizer = tokenizer or {}
        self.model_card = {"format_version": FORMAT_VERSION, **(model_card or {})}

    tokenizer = _JSONAttribute()
    model_card = _JSONAttribute()

    def get_config(self):
        config = super().get_config()
        config.update(tokenizer=self.tokenizer, model_card=self.model_card)
        return config


def find_token_embedding(model) -> TokenEmbedding | None:
    """The model's TokenEmbedding layer, or None for a model textgen did not build."""
    for layer in model.layers:
        if isinstance(layer, TokenEmbedding):
            return layer
    return None


def output_layer(model) -> keras.layers.Dense:
    """The layer that makes the model's logits: its last, a Dense (an error for any other model)."""
    head = model.layers[-1] if model.layers else None
    if not isinstance(head, keras.layers.Dense):
        raise ModelFileError(f"model {model.name} does not end in a Dense layer making logits; "
                             "build it with textgen's build_model")
    if head.activation not in (None, keras.activations.linear):
        raise ModelFileError(f"the logits layer of model {model.name} has an activation; it must output logits")
    return head


@keras.saving.register_keras_serializable(package="textgen")
class LabelEmbedding(keras.layers.Layer):
    """A learned vector per label of every group; a position's vector is the sum over its groups.

    Input: label ids (batch, time, groups), each an index into its group's labels
    (textgen.labels; 0 is `any`). Output: (batch, time, output_dim), which the model joins to
    every token's embedding, so the labels condition every step of every architecture.

    Args:
        groups: the model card's `labels` entry, `[{"name": ..., "labels": ["any", ...]}, ...]`.
        output_dim: the token embedding's width.
        merge: how the model joins the vectors to the embedding, which generation's steppers
            follow: "add" (an Add layer) or "concat" (a Concatenate layer, the label last).
    """

    def __init__(self, groups, output_dim, merge="add", **kwargs):
        super().__init__(**kwargs)
        if merge not in ("add", "concat"):
            raise ValueError(f"merge must be add or concat, got {merge!r}")
        self.groups = [{"name": g["name"], "labels": list(g["labels"])} for g in groups]
        self.output_dim = output_dim
        self.merge = merge
        sizes = [len(g["labels"]) for g in self.groups]
        self._offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.embeddings = self.add_weight(shape=(sum(sizes), output_dim), initializer="uniform", name="embeddings")

    def call(self, label_ids):
        ids = keras.ops.cast(label_ids, "int32") + keras.ops.convert_to_tensor(self._offsets, "int32")
        vectors = keras.ops.take(keras.ops.cast(self.embeddings, self.compute_dtype), ids, axis=0)
        return keras.ops.sum(vectors, axis=-2)

    def mix(self, weights):
        """(rows, output_dim) float32 vectors of label weight rows (rows, all labels), as textgen.labels makes them."""
        return keras.ops.matmul(keras.ops.convert_to_tensor(weights, "float32"),
                                keras.ops.cast(self.embeddings, "float32"))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups, output_dim=self.output_dim, merge=self.merge)
        return config


def concatenated_label_width(layer: LabelEmbedding | None) -> int:
    """How many of the first layer's input columns a concatenated label takes (0: none, or added)."""
    return layer.output_dim if layer is not None and layer.merge == "concat" else 0


def find_label_embedding(model) -> LabelEmbedding | None:
    """The model's LabelEmbedding layer, or None for a model without labels."""
    for layer in model.layers:
        if isinstance(layer, LabelEmbedding):
            return layer
    return None


def label_rows(layer: LabelEmbedding | None, batch_size: int, vectors=None):
    """The label vectors generation's steppers start `batch_size` rows from: (batch_size, output_dim) float32.

    `vectors` are `LabelEmbedding.mix` rows, one for every row or one shared by all; without
    them every row gets the `any` label of every group, the vector a conditioned model was
    trained with on unlabelled text. None for a model without labels (layer None), which
    takes no vectors.
    """
    if layer is None:
        if vectors is not None:  # Generator.label_vectors refuses labels for such a model with a UsageError
            raise ValueError("label vectors were given for a model without labels")
        return None
    if vectors is None:
        any_ids = keras.ops.zeros((1, 1, len(layer.groups)), "int32")
        vectors = keras.ops.cast(layer(any_ids)[0], "float32")
    vectors = keras.ops.convert_to_tensor(vectors, "float32")
    return keras.ops.broadcast_to(vectors, (batch_size, layer.output_dim))
