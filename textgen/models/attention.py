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

With `positions` P > 0 the scores also see where the query and the source token are: P
sinusoidal features of the target position t join the query and P of the source position j
join the value a key is made from (the context still averages the plain values). Content
alone cannot tell apart two occurrences of a phrase that repeats in one source, and a
decoder led back to the first one writes it again and again; the scores can now learn a
preference for j near t.
"""

from __future__ import annotations

import math

import keras
from keras import ops

ATTENTION_KINDS = ("additive", "multiplicative", "local")
SHORTEST_WAVELENGTH, LONGEST_WAVELENGTH = 4.0, 1024.0  # in tokens: a position signal's range


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
class TokenNoise(keras.layers.Layer):
    """ids (batch, T) -> ids: in training, each id of at least `low` is replaced, with probability
    `rate`, by an id drawn uniformly from [low, high); lower ids (padding, marks) are kept. Outside
    training the ids pass unchanged.

    On a decoder's teacher-forced input it shows the decoder previous tokens that are sometimes
    wrong, as its own outputs will be when it decodes: it learns to lean on the source and recover
    instead of continuing its own pattern, which otherwise ends in a loop after one mistake."""

    def __init__(self, rate: float = 0.1, low: int = 0, high: int = 1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.low, self.high, self.seed = float(rate), int(low), int(high), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, ids, training=None):
        if not training or not self.rate:
            return ids
        replace = ops.logical_and(keras.random.uniform(ops.shape(ids), seed=self.seed_generator) < self.rate,
                                  ids >= self.low)
        noise = keras.random.randint(ops.shape(ids), self.low, self.high, seed=self.seed_generator, dtype="int32")
        return ops.where(replace, noise, ids)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "low": self.low, "high": self.high, "seed": self.seed}


@keras.saving.register_keras_serializable(package="textgen")
class SourceAttention(keras.layers.Layer):
    """[query (batch, T, q), values (batch, S, v), mask (batch, S) bool] -> [context (batch, T, v),
    weights (batch, T, S)].

    Args:
        kind: additive | multiplicative | local.
        units: the width of the additive score's hidden layer and of local's position network.
        window: local attention's D, the positions either side of p_t that may get weight.
        positions: P, an even number of position features joining the query and the keys; 0 for none.
    """

    def __init__(self, kind: str = "additive", units: int = 64, window: int = 4, positions: int = 0, **kwargs):
        super().__init__(**kwargs)
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention kind must be one of {', '.join(ATTENTION_KINDS)}, got {kind!r}")
        if positions < 0 or positions % 2:
            raise ValueError(f"positions must be an even number of features, 0 or more, got {positions}")
        self.kind, self.units, self.window, self.positions = kind, int(units), int(window), int(positions)
        # The encoder outputs arrive with the Keras mask the recurrent layers attached; the mask
        # this layer reads is its explicit third input, and its outputs carry none.
        self.supports_masking = True

    def build(self, input_shape):
        query_dim, value_dim = input_shape[0][-1] + self.positions, input_shape[1][-1] + self.positions
        if self.kind == "additive":
            self.query_kernel = self.add_weight(shape=(query_dim, self.units), name="query_kernel")
            self.value_kernel = self.add_weight(shape=(value_dim, self.units), name="value_kernel")
            self.score_vector = self.add_weight(shape=(self.units,), name="score_vector")
        else:
            self.kernel = self.add_weight(shape=(query_dim, value_dim), name="kernel")
        if self.kind == "local":
            self.position_kernel = self.add_weight(shape=(input_shape[0][-1], self.units), name="position_kernel")
            self.position_vector = self.add_weight(shape=(self.units,), name="position_vector")

    def keys(self, values):
        """What the scores need from the source, computed once per source batch: (batch, S, units)
        for additive (W2 s_j), (batch, S, q) for the others (W s_j, so a score is one dot product)."""
        if self.positions:
            source = ops.arange(ops.shape(values)[1])[None] + ops.zeros_like(values[..., 0], "int32")
            values = ops.concatenate([values, ops.cast(position_signal(source, self.positions), values.dtype)], -1)
        if self.kind == "additive":
            return ops.matmul(values, ops.cast(self.value_kernel, values.dtype))
        return ops.matmul(values, ops.transpose(ops.cast(self.kernel, values.dtype)))

    def attend(self, query, keys, values, mask, first_position=None):
        """(context (batch, T, v), float32 weights (batch, T, S)) for queries (batch, T, q) at target
        positions first_position + 0..T-1 (first_position: (batch,) int32, None for 0)."""
        scoring = query
        if self.positions:
            first = ops.zeros_like(query[:, 0, 0], "int32") if first_position is None else first_position
            target = ops.expand_dims(first, 1) + ops.arange(ops.shape(query)[1], dtype="int32")[None]
            scoring = ops.concatenate([query, ops.cast(position_signal(target, self.positions), query.dtype)], -1)
        if self.kind == "additive":
            hidden = ops.tanh(ops.expand_dims(ops.matmul(scoring, ops.cast(self.query_kernel, query.dtype)), 2)
                              + ops.expand_dims(keys, 1))
            scores = ops.sum(hidden * ops.cast(self.score_vector, hidden.dtype), axis=-1)
        else:
            scores = ops.matmul(scoring, ops.transpose(keys, (0, 2, 1)))
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
        return {**super().get_config(), "kind": self.kind, "units": self.units, "window": self.window,
                "positions": self.positions}


def position_signal(positions, size: int):
    """(..., size) float32 for int positions (...): the sine and cosine of each position at size/2
    wavelengths spaced geometrically from SHORTEST_WAVELENGTH to LONGEST_WAVELENGTH tokens."""
    half = size // 2
    ratio = (LONGEST_WAVELENGTH / SHORTEST_WAVELENGTH) ** (1.0 / max(half - 1, 1))
    frequencies = [2.0 * math.pi / (SHORTEST_WAVELENGTH * ratio ** k) for k in range(half)]
    angles = ops.expand_dims(ops.cast(positions, "float32"), -1) * ops.convert_to_tensor(frequencies, "float32")
    return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)


def _masked_softmax(scores, allowed):
    """softmax over the last axis of the allowed positions; 0 elsewhere and on rows with none allowed."""
    scores = ops.where(allowed, scores, ops.full_like(scores, -1e30))
    exps = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True)) * ops.cast(allowed, scores.dtype)
    total = ops.sum(exps, axis=-1, keepdims=True)
    return exps / ops.maximum(total, 1e-30)
