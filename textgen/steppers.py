"""Generation steps for the architectures `RecurrentStepper` does not cover.

A stepper has the interface the compiled loops in textgen.generate use:
`initial_states(batch)` and `step(token_ids, states) -> (float32 logits (batch, vocab),
states)`, where states is a fixed structure of tensors with the batch first (so beam search
can reorder rows) and `states[0][0]` is a (batch, ...) tensor. `make_stepper` picks one by
the model's kind:

- sequence-mode recurrent models: `RecurrentStepper` (raw-op LSTM/GRU/SimpleRNN steps), or
  `CellStepper` for cells it does not know (PeepholeLSTMCell), which calls each Keras cell
  once per token with its states carried forward;
- window models: `WindowStepper` keeps the last `window` tokens and re-feeds them through the
  window network for every new token (that is what window mode costs);
- transformers: `TransformerStepper` runs one position per token against cached keys and
  values (`TransformerBlock.step`) until the context is full, and from then on re-feeds
  the last `context_length` tokens, since every position embedding would shift.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from textgen.layers import find_token_embedding
from textgen.model import model_kind, recurrent_layers
from textgen.transformer import TransformerBlock


def make_stepper(model: keras.Model, dtype=tf.float32):
    """The stepper for `model`; `dtype` applies to RecurrentStepper only."""
    from textgen.generate import _CELL_STEPS, RecurrentStepper  # generate imports this module

    kind = model_kind(model)
    if kind == "transformer":
        return TransformerStepper(model)
    if kind == "window":
        return WindowStepper(model)
    if all(type(layer.cell) in _CELL_STEPS for layer in recurrent_layers(model)):
        return RecurrentStepper(model, dtype)
    return CellStepper(model)


class _KerasStepper:
    """Shared by the steppers below: float32, batch-major, Keras layers called directly."""

    batch_axis = 0

    def __init__(self, model: keras.Model):
        self.model = model
        self.embedding = find_token_embedding(model)
        names = {layer.name for layer in model.layers}
        self.head = model.get_layer("logits") if "logits" in names else None  # a window model's is nested

    def logits(self, x):
        return tf.cast(self.head(x), tf.float32)


class CellStepper(_KerasStepper):
    """Sequence-mode recurrent layers of any Keras cell, one `cell(x, states)` call per layer and token."""

    def __init__(self, model: keras.Model):
        super().__init__(model)
        self.cells = [layer.cell for layer in recurrent_layers(model)]

    def initial_states(self, batch_size: int):
        return [[tf.zeros([batch_size, size]) for size in _state_sizes(cell)] for cell in self.cells]

    def step(self, token_ids, states):
        x = self.embedding(token_ids)
        new_states = []
        for cell, state in zip(self.cells, states):
            x, state = cell(x, list(state))
            new_states.append([tf.cast(s, tf.float32) for s in state])
        return self.logits(x), new_states


def _state_sizes(cell) -> list[int]:
    sizes = cell.state_size
    return list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]


class WindowStepper(_KerasStepper):
    """Window mode: the last `window` tokens, re-fed through the window network per token.

    States: [[history (batch, window) int32, filled (batch,) int32]]: the tokens so far,
    newest last, and how many of them are real; earlier slots are zero vectors, as in
    training (`WindowFrames`).
    """

    def __init__(self, model: keras.Model):
        super().__init__(model)
        self.network = model.get_layer("window_network")
        self.window = model.get_layer("window_frames").window

    def initial_states(self, batch_size: int):
        return [[tf.zeros([batch_size, self.window], tf.int32), tf.zeros([batch_size], tf.int32)]]

    def step(self, token_ids, states):
        history, filled = states[0]
        history = tf.concat([history[:, 1:], tf.cast(token_ids, tf.int32)[:, None]], axis=1)
        filled = tf.minimum(filled + 1, self.window)
        real = tf.range(self.window)[None, :] >= (self.window - filled)[:, None]  # (batch, window)
        x = self.embedding(history)
        x = x * tf.cast(real, x.dtype)[..., None]
        return tf.cast(self.network(x), tf.float32), [[history, filled]]


class TransformerStepper(_KerasStepper):
    """A causal transformer, one position per token with cached keys and values.

    States: [[history (batch, context) int32, position (batch,) int32], keys, values], with
    one (batch, heads, context, head_dim) cache per block in keys and values. While
    position < context the new token is written at `position` and only that position is
    computed. Once the context is full the positions would all shift, so every further
    token re-feeds the last `context` tokens through the whole model (and the caches are no
    longer read). `cached=False` re-feeds at every step: the reference the cache must equal.
    """

    def __init__(self, model: keras.Model, cached: bool = True):
        super().__init__(model)
        self.cached = cached
        self.positions = model.get_layer("position_embedding")
        self.context = self.positions.max_length
        self.blocks = [layer for layer in model.layers if isinstance(layer, TransformerBlock)]
        self.norm = model.get_layer("final_norm")

    def initial_states(self, batch_size: int):
        def cache(block):
            return tf.zeros([batch_size, block.num_heads, self.context, block.head_dim])
        return [[tf.zeros([batch_size, self.context], tf.int32), tf.zeros([batch_size], tf.int32)],
                [cache(block) for block in self.blocks], [cache(block) for block in self.blocks]]

    def step(self, token_ids, states):
        (history, position), keys, values = states
        token_ids = tf.cast(token_ids, tf.int32)
        p = position[0]  # every row is at the same position
        if not self.cached:
            return self._refeed(token_ids, history, position, keys, values)
        return tf.cond(p < self.context,
                       lambda: self._cached(token_ids, history, position, keys, values),
                       lambda: self._refeed(token_ids, history, position, keys, values))

    def _cached(self, token_ids, history, position, keys, values):
        p = position[0]
        history = tf.tensor_scatter_nd_update(
            tf.transpose(history), [[p]], token_ids[None])  # write column p
        history = tf.transpose(history)
        x = self.positions.at(self.embedding(token_ids), p)
        new_keys, new_values = [], []
        for block, k, v in zip(self.blocks, keys, values):
            x, k, v = block.step(x, k, v, p)
            new_keys.append(tf.cast(k, tf.float32))
            new_values.append(tf.cast(v, tf.float32))
        return self.logits(self.norm(x)), [[history, position + 1], new_keys, new_values]

    def _refeed(self, token_ids, history, position, keys, values):
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
        x = self.positions(self.embedding(history))
        for block in self.blocks:
            x = block(x)
        last = tf.minimum(p, self.context - 1)
        logits = self.logits(self.norm(tf.gather(x, last, axis=1)))
        return logits, [[history, tf.minimum(position + 1, self.context)], keys, values]
