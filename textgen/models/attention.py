"""Attention of a seq2seq decoder over the encoded source (Luong et al. 2015's global and local
attention, with Bahdanau et al. 2015's additive score as one of the global scores).

`SourceAttention` runs after the decoder's recurrent layer, so training attends from all target
positions at once and decoding steps it one position at a time through the same methods:
`keys` (once per source batch) and `attend` (per step). Kinds:

- additive:        score(h_t, s_j) = v^T tanh(W1 h_t + W2 s_j)
- multiplicative:  score(h_t, s_j) = h_t^T W s_j                    (Luong "general")
- local:           Luong local-p: p_t = L sigmoid(v_p^T tanh(W_p h_t)), L = the row's source
                   length - 1; multiplicative scores, softmax over |j - p_t| <= D only, times
                   exp(-(j - p_t)^2 / (2 (D/2)^2)) and not renormalised, as in the paper.

Padded source positions (mask False) get weight exactly 0; a source with no real position
gets all-zero weights (a zero context) instead of NaNs.
"""

from __future__ import annotations

import keras
from keras import ops

ATTENTION_KINDS = ("additive", "multiplicative", "local")


@keras.saving.register_keras_serializable(package="textgen")
class PaddingMask(keras.layers.Layer):
    """ids (batch, S) -> bool (batch, S), True where the id is not `pad_id`: the source mask
    the encoder's recurrent layers and the attention read."""

    def __init__(self, pad_id: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def call(self, ids):
        return ops.not_equal(ids, self.pad_id)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="textgen")
class SourceAttention(keras.layers.Layer):
    """[query (batch, T, q), values (batch, S, v), mask (batch, S) bool] -> [context (batch, T, v),
    weights (batch, T, S)].

    Args:
        kind: additive | multiplicative | local.
        units: the width of the additive score's hidden layer and of local's position network.
        window: local attention's D, the positions either side of p_t that may get weight.
    """

    def __init__(self, kind: str = "additive", units: int = 64, window: int = 4, **kwargs):
        super().__init__(**kwargs)
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention kind must be one of {', '.join(ATTENTION_KINDS)}, got {kind!r}")
        self.kind, self.units, self.window = kind, int(units), int(window)
        # The encoder outputs arrive with the Keras mask the recurrent layers attached; the mask
        # this layer reads is its explicit third input, and its outputs carry none.
        self.supports_masking = True

    def build(self, input_shape):
        query_dim, value_dim = input_shape[0][-1], input_shape[1][-1]
        if self.kind == "additive":
            self.query_kernel = self.add_weight(shape=(query_dim, self.units), name="query_kernel")
            self.value_kernel = self.add_weight(shape=(value_dim, self.units), name="value_kernel")
            self.score_vector = self.add_weight(shape=(self.units,), name="score_vector")
        else:
            self.kernel = self.add_weight(shape=(query_dim, value_dim), name="kernel")
        if self.kind == "local":
            self.position_kernel = self.add_weight(shape=(query_dim, self.units), name="position_kernel")
            self.position_vector = self.add_weight(shape=(self.units,), name="position_vector")

    def keys(self, values):
        """What the scores need from the source, computed once per source batch: (batch, S, units)
        for additive (W2 s_j), (batch, S, q) for the others (W s_j, so a score is one dot product)."""
        if self.kind == "additive":
            return ops.matmul(values, ops.cast(self.value_kernel, values.dtype))
        return ops.matmul(values, ops.transpose(ops.cast(self.kernel, values.dtype)))

    def attend(self, query, keys, values, mask):
        """(context (batch, T, v), float32 weights (batch, T, S)) for queries (batch, T, q)."""
        if self.kind == "additive":
            hidden = ops.tanh(ops.expand_dims(ops.matmul(query, ops.cast(self.query_kernel, query.dtype)), 2)
                              + ops.expand_dims(keys, 1))
            scores = ops.sum(hidden * ops.cast(self.score_vector, hidden.dtype), axis=-1)
        else:
            scores = ops.matmul(query, ops.transpose(keys, (0, 2, 1)))
        scores = ops.cast(scores, "float32")
        allowed = ops.expand_dims(mask, 1)  # (batch, 1, S)
        if self.kind == "local":
            distance, gaussian = self._local_window(query, mask)
            allowed = ops.logical_and(allowed, distance <= self.window)
        weights = _masked_softmax(scores, allowed)
        if self.kind == "local":
            weights = weights * gaussian
        context = ops.matmul(ops.cast(weights, values.dtype), values)
        return context, weights

    def _local_window(self, query, mask):
        """|j - p_t| (batch, T, S) and the Gaussian exp(-(j - p_t)^2 / (2 (D/2)^2)) around p_t."""
        hidden = ops.tanh(ops.matmul(query, ops.cast(self.position_kernel, query.dtype)))
        position = ops.sigmoid(ops.cast(ops.sum(hidden * ops.cast(self.position_vector, hidden.dtype), -1), "float32"))
        last = ops.maximum(ops.sum(ops.cast(mask, "float32"), axis=-1) - 1.0, 0.0)  # (batch,)
        predicted = ops.expand_dims(position * ops.expand_dims(last, 1), -1)  # (batch, T, 1)
        positions = ops.cast(ops.arange(ops.shape(mask)[1]), "float32")
        offset = positions - predicted
        sigma = self.window / 2.0
        return ops.abs(offset), ops.exp(-ops.square(offset) / (2.0 * sigma * sigma))

    def call(self, inputs):
        query, values, mask = inputs
        return list(self.attend(query, self.keys(values), values, mask))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        query, values, mask = input_shape
        return [(*query[:2], values[-1]), (*query[:2], mask[-1])]

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "units": self.units, "window": self.window}


def _masked_softmax(scores, allowed):
    """softmax over the last axis of the allowed positions; 0 elsewhere and on rows with none allowed."""
    scores = ops.where(allowed, scores, ops.full_like(scores, -1e30))
    exps = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True)) * ops.cast(allowed, scores.dtype)
    total = ops.sum(exps, axis=-1, keepdims=True)
    return exps / ops.maximum(total, 1e-30)
