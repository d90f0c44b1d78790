"""A small causal transformer decoder, with a key/value cache for generation.

Each block is pre-norm: x + attention(norm(x)), then x + mlp(norm(x)). Attention is masked
so position t sees positions <= t only. `TransformerBlock.step` runs one new position against
a cache of earlier keys and values, which is what makes generation cost one position per
token instead of re-running the window; `TransformerStepper` is the transformer's generation
step built on it.

Positions come in one of two ways (`model.positions`):

- learned: `PositionEmbedding` adds a vector per position 0 .. context-1 to the tokens'. Past
  the context every position would shift, so generation re-feeds the last context tokens.
- rotary: each block turns its queries and keys by angles proportional to their position
  (`rotate`), so a score depends only on how far apart two positions are, and each position
  attends to the last `window` positions (itself included). A key, once turned, stays right
  as the text grows: generation keeps the last `window` keys and values in a ring and costs
  one position per token however long the text.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from textgen.errors import ModelFileError
from textgen.models.layers import find_label_embedding, find_token_embedding, label_rows, output_layer

ROTARY_BASE = 10000.0  # the slowest of a head's rotations turns once in about 2 pi x this many positions


@keras.saving.register_keras_serializable(package="textgen")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per position (0 .. max_length-1) to token vectors."""

    def __init__(self, max_length, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.max_length = max_length
        self.output_dim = output_dim

    def build(self, input_shape):
        self.positions = self.add_weight(shape=(self.max_length, self.output_dim), name="positions",
                                         initializer=keras.initializers.RandomNormal(stddev=0.02))
        super().build(input_shape)

    def call(self, x):
        length = ops.shape(x)[1]
        return x + ops.cast(self.positions[:length], x.dtype)[None]

    def at(self, x, position):
        """x: (batch, dim) vectors all at `position` (a scalar tensor)."""
        return x + ops.cast(ops.take(self.positions, position, axis=0), x.dtype)[None]

    def get_config(self):
        config = super().get_config()
        config.update(max_length=self.max_length, output_dim=self.output_dim)
        return config


@keras.saving.register_keras_serializable(package="textgen")
class TransformerBlock(keras.layers.Layer):
    """Masked multi-head self-attention and an MLP, each with a residual and layer norm.

    Args:
        num_heads: attention heads; the model width must divide by it.
        mlp_dim: hidden size of the MLP (commonly 4x the width).
        dropout: dropout on the attention and MLP outputs while training.
        kernel_regularizer: penalty on every kernel of the block (textgen's `training.l2`).
        window: rotary positions (`rotate`), and each position attends to this many, itself
            and the ones before it; None: positions come from outside (a PositionEmbedding) and
            attention reaches back to the start.
    """

    def __init__(self, num_heads, mlp_dim, dropout=0.0, kernel_regularizer=None, window=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.window = window
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm1")
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm2")
        self.drop = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        width = input_shape[-1]
        if width % self.num_heads:
            raise ValueError(f"model width {width} does not divide into {self.num_heads} heads")
        self.width = width
        self.head_dim = width // self.num_heads
        if self.window is not None and self.head_dim % 2:
            raise ValueError(f"rotary positions turn pairs of features; the head width {self.head_dim} is odd")
        penalty = self.kernel_regularizer
        self.qkv = keras.layers.Dense(3 * width, name="qkv", kernel_regularizer=penalty)
        self.proj = keras.layers.Dense(width, name="proj", kernel_regularizer=penalty,
                                       kernel_initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.mlp_in = keras.layers.Dense(self.mlp_dim, activation="gelu", name="mlp_in", kernel_regularizer=penalty)
        self.mlp_out = keras.layers.Dense(width, name="mlp_out", kernel_regularizer=penalty,
                                          kernel_initializer=keras.initializers.RandomNormal(stddev=0.02))
        for layer, dim in ((self.norm1, width), (self.qkv, width), (self.proj, width), (self.norm2, width),
                           (self.mlp_in, width), (self.mlp_out, self.mlp_dim)):
            layer.build((None, dim))
        super().build(input_shape)

    def _heads(self, x):
        """(batch, time, width) -> (batch, heads, time, head_dim)."""
        b, t = ops.shape(x)[0], ops.shape(x)[1]
        return ops.transpose(ops.reshape(x, (b, t, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def call(self, x, training=False):
        b, t = ops.shape(x)[0], ops.shape(x)[1]
        q, k, v = ops.split(self.qkv(self.norm1(x)), 3, axis=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if self.window is not None:
            positions = ops.arange(t)
            q, k = rotate(q, positions), rotate(k, positions)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / ops.cast(self.head_dim ** 0.5, q.dtype)
        causal = ops.tril(ops.ones((t, t), dtype="bool"))
        if self.window is not None:  # and no further back than the window
            causal = causal & ~ops.tril(ops.ones((t, t), dtype="bool"), -self.window)
        scores = ops.where(causal[None, None], scores, ops.cast(-1e9 if scores.dtype == "float32" else -3e4, scores.dtype))
        weights = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        attended = ops.matmul(ops.cast(weights, v.dtype), v)
        attended = ops.reshape(ops.transpose(attended, (0, 2, 1, 3)), (b, t, self.width))
        # Under a mixed policy the sublayers may return another float type than the residual stream.
        x = x + ops.cast(self.drop(self.proj(attended), training=training), x.dtype)
        return x + ops.cast(self.drop(self.mlp_out(self.mlp_in(self.norm2(x))), training=training), x.dtype)

    def step(self, x, cache_k, cache_v, position):
        """One new position. x: (batch, width); caches: (batch, heads, slots, head_dim).

        Returns the block's output for that position and the caches with its key and value
        written at slot `position`, or with rotary positions (slots = window) at slot
        `position % window`, a ring over the last window positions.
        """
        b = ops.shape(x)[0]
        q, k, v = ops.split(self.qkv(self.norm1(x)), 3, axis=-1)
        shape = (b, self.num_heads, 1, self.head_dim)
        q, k, v = ops.reshape(q, shape), ops.reshape(k, shape), ops.reshape(v, shape)
        length = ops.shape(cache_k)[2]
        if self.window is not None:
            q, k = rotate(q, position[None]), rotate(k, position[None])
        written = position if self.window is None else position % length
        # Written in place: blended in with a mask over the whole cache, the new key (its
        # rotation and all) is recomputed by XLA for every entry, several times the step's work.
        start = [0, 0, written, 0]
        cache_k = ops.slice_update(cache_k, start, ops.cast(k, cache_k.dtype))
        cache_v = ops.slice_update(cache_v, start, ops.cast(v, cache_v.dtype))
        scores = ops.matmul(q, ops.transpose(ops.cast(cache_k, q.dtype), (0, 1, 3, 2)))[:, :, 0, :]
        scores = ops.cast(scores, "float32") / (self.head_dim ** 0.5)
        visible = (ops.arange(length) <= position)[None, None, :]  # a ring's slots are all written past its length
        weights = ops.softmax(ops.where(visible, scores, -1e9), axis=-1)
        attended = ops.matmul(ops.cast(weights[:, :, None, :], v.dtype), ops.cast(cache_v, v.dtype))
        attended = ops.reshape(attended, (b, self.width))
        x = x + ops.cast(self.proj(attended), x.dtype)
        return x + ops.cast(self.mlp_out(self.mlp_in(self.norm2(x))), x.dtype), cache_k, cache_v

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
                      kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer), window=self.window)
        return config


def rotate(x, positions):
    """Rotary positions: x (..., time, head_dim) with each pair of features (i, i + head_dim/2)
    turned by positions x ROTARY_BASE^(-2i/head_dim) radians, in float32 (x's dtype out). A dot
    product of two turned vectors then depends on their positions only through the difference."""
    half = ops.shape(x)[-1] // 2
    rates = ops.power(ROTARY_BASE, -ops.cast(ops.arange(half), "float32") / ops.cast(half, "float32"))
    angles = ops.cast(positions, "float32")[:, None] * rates[None, :]  # (time, half)
    cos, sin = ops.cos(angles), ops.sin(angles)
    first, second = ops.split(ops.cast(x, "float32"), 2, axis=-1)
    turned = ops.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return ops.cast(turned, x.dtype)


class TransformerStepper:
    """A causal transformer's generation step: one position per token, with cached keys and values.

    `initial_states(batch, labels=None)` and `step(token_ids, states) -> (float32 logits, states)`
    are what every generation loop calls. States: [[history (batch, context) int32, position
    (batch,) int32], keys, values], with one (batch, heads, context, head_dim) cache per block
    in keys and values; a conditioned model's end in [[label vectors (batch, width)]], added
    to every token's embedding before its position's, as the model adds them. While
    position < context the new token is written at `position` and only that position is
    computed. Once the context is full, a model with learned positions would see them all
    shift, so every further token re-feeds the last `context` tokens through the whole model
    (and the caches are no longer read); `cached=False` re-feeds at every step, the reference
    the cache must equal. A model with rotary positions has no history to re-feed (its states
    are [[position (batch, 1) int32], keys, values]): its caches are rings, and every token
    costs one position.
    `position_limit` is the position from which all rows step alike (the context; None for
    rotary positions, where the position keeps counting).
    """

    batch_axis = 0

    def __init__(self, model: keras.Model, cached: bool = True):
        self.cached = cached
        self.embedding = find_token_embedding(model)
        self.labels = find_label_embedding(model)
        positions = [layer for layer in model.layers if isinstance(layer, PositionEmbedding)]
        self.blocks = [layer for layer in model.layers if isinstance(layer, TransformerBlock)]
        norms = [layer for layer in model.layers if isinstance(layer, keras.layers.LayerNormalization)]
        self.rotary = bool(self.blocks) and self.blocks[0].window is not None
        if not ((positions or self.rotary) and self.blocks and norms):
            raise ModelFileError(f"model {model.name} is described as a transformer but has no position embedding, "
                                 "blocks and final norm to step through")
        if self.rotary and not cached:
            raise ValueError("a transformer with rotary positions always steps with its cache: its reference is "
                             "the whole model over the whole text")
        self.positions, self.norm, self.head = (positions or [None])[0], norms[-1], output_layer(model)
        self.context = self.blocks[0].window if self.rotary else self.positions.max_length
        self.position_limit = None if self.rotary else self.context

    def initial_states(self, batch_size: int, labels=None):
        def cache(block):
            return tf.zeros([batch_size, block.num_heads, self.context, block.head_dim])
        position = tf.zeros([batch_size], tf.int32)
        # Loops read the batch from states[0][0], a matrix: a rotary model's position is a column.
        first = [position[:, None]] if self.rotary else [tf.zeros([batch_size, self.context], tf.int32), position]
        states = [first, [cache(block) for block in self.blocks], [cache(block) for block in self.blocks]]
        vectors = label_rows(self.labels, batch_size, labels)
        return states if vectors is None else states + [[vectors]]

    def step(self, token_ids, states):
        labels = states[3:]  # [[label vectors]] of a conditioned model, else []
        token_ids = tf.cast(token_ids, tf.int32)
        if self.rotary:
            [position], keys, values = states[:3]
            logits, keys, values = self._advance(self._embed(token_ids, labels), position[0, 0], keys, values)
            return logits, [[position + 1], keys, values] + labels
        (history, position), keys, values = states[:3]
        p = position[0]  # every row is at the same position
        if not self.cached:
            logits, states = self._refeed(token_ids, history, position, keys, values, labels)
        else:
            logits, states = tf.cond(p < self.context,
                                     lambda: self._cached(token_ids, history, position, keys, values, labels),
                                     lambda: self._refeed(token_ids, history, position, keys, values, labels))
        return logits, states + labels

    def _logits(self, x):
        return tf.cast(self.head(self.norm(x)), tf.float32)

    def _embed(self, token_ids, labels):
        """Token vectors plus the rows' label vectors (a conditioned model), before the positions'."""
        x = self.embedding(token_ids)
        if not labels:
            return x
        vectors = tf.cast(labels[0][0], x.dtype)
        return x + (vectors if x.shape.rank == 2 else vectors[:, None, :])

    def _cached(self, token_ids, history, position, keys, values, labels):
        p = position[0]
        history = tf.tensor_scatter_nd_update(
            tf.transpose(history), [[p]], token_ids[None])  # write column p
        history = tf.transpose(history)
        logits, keys, values = self._advance(self.positions.at(self._embed(token_ids, labels), p), p, keys, values)
        return logits, [[history, position + 1], keys, values]

    def _advance(self, x, p, keys, values):
        """The logits of token vectors x at position p, and the caches with their keys and values."""
        new_keys, new_values = [], []
        for block, k, v in zip(self.blocks, keys, values):
            x, k, v = block.step(x, k, v, p)
            new_keys.append(tf.cast(k, tf.float32))
            new_values.append(tf.cast(v, tf.float32))
        return self._logits(x), new_keys, new_values

    def _refeed(self, token_ids, history, position, keys, values, labels):
        """The whole model over the history, the logits of the newest token's position.

        Before the context is full the history is filled up to `position` and the rest is
        padding; attention is causal, so the padding after the newest token changes nothing.
        """
        p = position[0]
        full = p >= self.context
        shifted = tf.concat([history[:, 1:], token_ids[:, None]], axis=1)
        written = tf.transpose(tf.tensor_scatter_nd_update(
            tf.transpose(history), [[tf.minimum(p, self.context - 1)]], token_ids[None]))
        history = tf.where(full, shifted, written)
        x = self.positions(self._embed(history, labels))
        for block in self.blocks:
            x = block(x)
        last = tf.minimum(p, self.context - 1)
        logits = self._logits(tf.gather(x, last, axis=1))
        return logits, [[history, tf.minimum(position + 1, self.context)], keys, values]
