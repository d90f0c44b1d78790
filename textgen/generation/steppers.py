"""Generation steps: one token through a textgen model, with its states carried forward.

A stepper has the interface the compiled loops in textgen.generation.generate use:
`initial_states(batch)` and `step(token_ids, states) -> (float32 logits (batch, vocab),
states)`, where states is a fixed structure of tensors with the batch first (so beam search
can reorder rows) and `states[0][0]` is a (batch, ...) tensor. `make_stepper` picks one by
the model's kind:

- sequence-mode recurrent models: `RecurrentStepper` (raw-op LSTM, GRU, SimpleRNN and
  peephole LSTM steps on a snapshot of the weights; `PackedColumnStepper` is its
  batch-in-columns variant for large bfloat16 batches of the Keras cells, chosen by
  textgen.generation.generate), or `CellStepper` for a cell it does not know, which calls each Keras
  cell once per token with its states carried forward (slower: every call goes through
  the layer);
- window models: `WindowStepper` keeps the last `window` tokens and re-feeds them through the
  window network for every new token (that is what window mode costs);
- transformers: `TransformerStepper` runs one position per token against cached keys and
  values (`TransformerBlock.step`) until the context is full, and from then on re-feeds
  the last `context_length` tokens, since every position embedding would shift.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from textgen.models.cells import PeepholeLSTMCell
from textgen.errors import ModelFileError
from textgen.models.layers import TokenEmbedding, find_token_embedding
from textgen.models.builder import model_kind, recurrent_layers
from textgen.models.transformer import TransformerBlock

TABLE_MAX_BYTES = 64 * 2**20  # largest first-layer lookup table; bigger vocabularies multiply instead


def make_stepper(model: keras.Model, dtype=tf.float32):
    """The stepper for `model`; `dtype` applies to RecurrentStepper only."""
    kind = model_kind(model)
    if kind == "transformer":
        return TransformerStepper(model)
    if kind == "window":
        return WindowStepper(model)
    if all(type(layer.cell) in _CELL_STEPS for layer in recurrent_layers(model)):
        return RecurrentStepper(model, dtype)
    return CellStepper(model)


def _product(x, weights):
    """x (float32) @ weights, in the weights' dtype; the result is float32."""
    if weights.dtype == tf.float32:
        return tf.matmul(x, weights)
    return tf.cast(tf.matmul(tf.cast(x, weights.dtype), weights), tf.float32)


class _CellStep:
    """One Keras recurrent cell as raw ops on copies of its weights (inference: no dropout).

    `project` is the input half (x @ kernel + input bias), `__call__` the recurrent half.
    The first layer's `project` is replaced by a table lookup in `RecurrentStepper`.
    """

    gates = 1

    def __init__(self, cell, dtype):
        self.units = cell.units
        self.activation = getattr(cell, "activation", keras.activations.tanh)
        self.recurrent_activation = getattr(cell, "recurrent_activation", keras.activations.sigmoid)
        self.kernel = np.asarray(cell.kernel.numpy(), np.float32)  # also read for the first layer's table
        bias = cell.bias.numpy() if cell.bias is not None else np.zeros(self.gates * self.units)
        self.input_bias, recurrent_bias = self._split_bias(np.asarray(bias, np.float32))
        self.recurrent_bias = tf.constant(recurrent_bias) if recurrent_bias is not None else None
        self.kernel_t, self.input_bias_t = tf.cast(self.kernel, dtype), tf.constant(self.input_bias)
        self.recurrent_matrix = np.asarray(cell.recurrent_kernel.numpy(), np.float32)
        self.recurrent = tf.cast(self.recurrent_matrix, dtype)

    def _split_bias(self, bias):
        return bias, None

    def project(self, x):
        return _product(x, self.kernel_t) + self.input_bias_t

    def state_sizes(self) -> list[int]:
        return [self.units]


class _SimpleRNNStep(_CellStep):
    def __call__(self, xz, states):
        h = self.activation(xz + _product(states[0], self.recurrent))
        return h, [h]


class _LSTMStep(_CellStep):
    gates = 4

    def state_sizes(self):
        return [self.units, self.units]

    def __call__(self, xz, states):
        h, c = states
        i, f, g, o = tf.split(xz + _product(h, self.recurrent), 4, axis=-1)
        act, gate = self.activation, self.recurrent_activation
        c = gate(f) * c + gate(i) * act(g)
        h = gate(o) * act(c)
        return h, [h, c]


class _PeepholeLSTMStep(_LSTMStep):
    """textgen's PeepholeLSTMCell: the input and forget gates also see C_{t-1}, the output gate C_t."""

    def __init__(self, cell, dtype):
        super().__init__(cell, dtype)
        peephole = np.asarray(cell.peephole_kernel.numpy(), np.float32)  # columns: i, f | o
        self.peephole_if = tf.cast(peephole[:, :2 * self.units], dtype)
        self.peephole_o = tf.cast(peephole[:, 2 * self.units:], dtype)

    def __call__(self, xz, states):
        h, c = states
        i, f, g, o = tf.split(xz + _product(h, self.recurrent), 4, axis=-1)
        peep_i, peep_f = tf.split(_product(c, self.peephole_if), 2, axis=-1)
        c = tf.sigmoid(f + peep_f) * c + tf.sigmoid(i + peep_i) * tf.tanh(g)
        h = tf.sigmoid(o + _product(c, self.peephole_o)) * tf.tanh(c)
        return h, [h, c]


class _GRUStep(_CellStep):
    gates = 3

    def __init__(self, cell, dtype):
        self.reset_after = cell.reset_after
        super().__init__(cell, dtype)
        if not self.reset_after:  # the reset gate multiplies h before the candidate's product
            self.recurrent_zr = self.recurrent[:, :2 * self.units]
            self.recurrent_h = self.recurrent[:, 2 * self.units:]

    def _split_bias(self, bias):
        if not self.reset_after:
            return bias, None
        if bias.ndim == 2:  # one row for the input product, one for the recurrent product
            return bias[0], bias[1]
        return bias, np.zeros_like(bias)  # use_bias=False

    def __call__(self, xz, states):
        h = states[0]
        x_z, x_r, x_h = tf.split(xz, 3, axis=-1)
        gate = self.recurrent_activation
        if self.reset_after:
            in_z, in_r, in_h = tf.split(_product(h, self.recurrent) + self.recurrent_bias, 3, axis=-1)
            z, r = gate(x_z + in_z), gate(x_r + in_r)
            candidate = self.activation(x_h + r * in_h)
        else:
            in_z, in_r = tf.split(_product(h, self.recurrent_zr), 2, axis=-1)
            z, r = gate(x_z + in_z), gate(x_r + in_r)
            candidate = self.activation(x_h + _product(r * h, self.recurrent_h))
        h = z * h + (1 - z) * candidate
        return h, [h]


_CELL_STEPS = {keras.layers.LSTMCell: _LSTMStep, keras.layers.GRUCell: _GRUStep,
               keras.layers.SimpleRNNCell: _SimpleRNNStep, PeepholeLSTMCell: _PeepholeLSTMStep}
_PASS_THROUGH = (keras.layers.InputLayer, keras.layers.Dropout)


class RecurrentStepper:
    """One token step through a textgen model, with explicit recurrent states (batch, units).

    Works on a snapshot of the model's weights taken at construction. The first recurrent
    layer's input projection, embedding @ kernel + bias, is precomputed as a table with one
    row per token (when it fits in TABLE_MAX_BYTES), so a step is: a row lookup, one
    product of the hidden state with the recurrent kernel per layer, the gate arithmetic
    and the output layer. `dtype` is the dtype of the recurrent and deeper input products
    (float32 or bfloat16); everything else is float32.
    """

    batch_axis = 0

    def __init__(self, model: keras.Model, dtype=tf.float32):
        embedding, rnns = _check_architecture(model)
        self.dtype = dtype
        self.layers = [_CELL_STEPS[type(layer.cell)](layer.cell, dtype) for layer in rnns]
        first = self.layers[0]
        table_bytes = embedding.input_dim * first.gates * first.units * 4
        matrix = np.asarray(embedding.embeddings.numpy(), np.float32)
        if table_bytes <= TABLE_MAX_BYTES:
            self.table = tf.constant(matrix @ first.kernel + first.input_bias)
            self.embeddings = None
        else:
            self.table, self.embeddings = None, tf.constant(matrix)
        head = model.get_layer("logits")
        self.head_kernel = tf.constant(np.asarray(head.kernel.numpy(), np.float32))
        self.head_bias = tf.constant(np.asarray(head.bias.numpy(), np.float32)) if head.use_bias else None

    def initial_states(self, batch_size: int):
        return [[tf.zeros([batch_size, size]) for size in layer.state_sizes()] for layer in self.layers]

    def step(self, token_ids, states):
        """token_ids: (batch,) int32 -> logits (batch, vocab) float32, new states."""
        if self.table is not None:
            xz = tf.gather(self.table, token_ids)
        else:
            xz = self.layers[0].project(tf.gather(self.embeddings, token_ids))
        new_states = []
        for i, (layer, state) in enumerate(zip(self.layers, states)):
            x, state = layer(xz if i == 0 else layer.project(x), state)
            new_states.append(state)
        logits = tf.matmul(x, self.head_kernel)
        return (logits + self.head_bias if self.head_bias is not None else logits), new_states


class PackedColumnStepper:
    """The stepper of large sampled batches: batch in columns, one packed product per layer.

    States are (units, batch). Each layer stacks its input x (for the first layer the
    one-hot tokens, whose weights are the lookup table), its state h and a row of ones,
    and multiplies that once by a packed matrix [input weights | recurrent weights | bias]
    held on the left. In bfloat16 on oneDNN's AMX kernels this measured 23% faster per step
    at batch 64 than a row lookup plus a separate product (the kernel then repacks only
    the small right operand on every call). LSTM, SimpleRNN and GRU with `reset_after`
    (textgen's default) are supported: `supports(model)`.
    """

    batch_axis = 1

    def __init__(self, model: keras.Model, dtype=tf.bfloat16, one_hot: bool | None = None):
        embedding, rnns = _check_architecture(model)
        self.dtype = dtype
        matrix = np.asarray(embedding.embeddings.numpy(), np.float32)
        self.vocab_size, width = matrix.shape
        # By default one-hot tokens when that product is no bigger than the embedding's.
        self.one_hot = self.vocab_size <= width if one_hot is None else one_hot
        self.embeddings = None if self.one_hot else tf.constant(matrix)
        self.layers = []
        for i, layer in enumerate(rnns):
            cell = layer.cell
            kernel = np.asarray(cell.kernel.numpy(), np.float32)
            if i == 0 and self.one_hot:
                kernel = matrix @ kernel  # the table: row v is token v's contribution to every gate
            self.layers.append((_packed_weights(cell, kernel, dtype), cell))
        head = model.get_layer("logits")
        self.head_kernel = tf.constant(np.asarray(head.kernel.numpy(), np.float32))
        self.head_bias = tf.constant(np.asarray(head.bias.numpy(), np.float32)) if head.use_bias else None

    @staticmethod
    def supports(model: keras.Model) -> bool:
        cells = [layer.cell for layer in recurrent_layers(model)]
        return bool(cells) and all(type(c) in (keras.layers.LSTMCell, keras.layers.SimpleRNNCell) or
                                   (type(c) is keras.layers.GRUCell and c.reset_after) for c in cells)

    def initial_states(self, batch_size: int):
        return [[tf.zeros([cell.units, batch_size])] * (2 if isinstance(cell, keras.layers.LSTMCell) else 1)
                for _, cell in self.layers]

    def step(self, token_ids, states):
        """token_ids: (batch,) int32 -> logits (batch, vocab) float32, new states."""
        if self.one_hot:
            x = tf.one_hot(token_ids, self.vocab_size, axis=0, dtype=self.dtype)
        else:
            x = tf.cast(tf.transpose(tf.gather(self.embeddings, token_ids)), self.dtype)
        ones = tf.ones_like(x[:1])
        new_states = []
        for (packed, cell), state in zip(self.layers, states):
            stacked = tf.concat([x, tf.cast(state[0], self.dtype), ones], axis=0)
            z = tf.cast(tf.matmul(packed, stacked), tf.float32)
            h, state = _column_gates(cell, z, state)
            new_states.append(state)
            x = tf.cast(h, self.dtype)
        logits = tf.matmul(h, self.head_kernel, transpose_a=True)
        return (logits + self.head_bias if self.head_bias is not None else logits), new_states


def _packed_weights(cell, kernel: np.ndarray, dtype):
    """[input weights | recurrent weights | bias], transposed: rows are the pre-activations.

    For a GRU the rows are the update and reset gates (input and recurrent parts summed),
    then the candidate's recurrent part and its input part, kept apart because the reset
    gate multiplies only the recurrent part.
    """
    units = cell.units
    recurrent = np.asarray(cell.recurrent_kernel.numpy(), np.float32)
    bias = np.asarray(cell.bias.numpy(), np.float32) if cell.bias is not None else None
    if isinstance(cell, keras.layers.GRUCell):
        bias = bias if bias is not None else np.zeros((2, 3 * units), np.float32)
        both, candidate = slice(0, 2 * units), slice(2 * units, 3 * units)
        zero_in, zero_rec = np.zeros((kernel.shape[0], units), np.float32), np.zeros((units, units), np.float32)
        columns = [np.concatenate([kernel[:, both], zero_in, kernel[:, candidate]], axis=1),  # x
                   np.concatenate([recurrent[:, both], recurrent[:, candidate], zero_rec], axis=1),  # h
                   np.concatenate([bias[0, both] + bias[1, both], bias[1, candidate], bias[0, candidate]])[None]]
        packed = np.concatenate(columns, axis=0)  # rows: z, r | recurrent candidate | input candidate
    else:
        bias = bias if bias is not None else np.zeros(kernel.shape[1], np.float32)
        packed = np.concatenate([kernel, recurrent, bias[None]], axis=0)
    return tf.cast(tf.constant(packed.T.copy()), dtype)


def _column_gates(cell, z, state):
    """A cell's gate arithmetic on (pre-activations, units x batch)."""
    act, gate = cell.activation, getattr(cell, "recurrent_activation", None)
    if isinstance(cell, keras.layers.LSTMCell):
        i, f, g, o = tf.split(z, 4, axis=0)
        c = gate(f) * state[1] + gate(i) * act(g)
        h = gate(o) * act(c)
        return h, [h, c]
    if isinstance(cell, keras.layers.GRUCell):
        units = cell.units
        update, reset = tf.split(gate(z[:2 * units]), 2, axis=0)
        candidate = act(z[3 * units:] + reset * z[2 * units:3 * units])
        h = update * state[0] + (1 - update) * candidate
        return h, [h]
    h = act(z)
    return h, [h]


def _check_architecture(model):
    """The embedding and recurrent layers, or a one-line error naming what cannot be stepped."""
    embedding = find_token_embedding(model)
    rnns = recurrent_layers(model)
    if not rnns:
        raise ModelFileError(f"model {model.name} has no recurrent layers to step through")
    for layer in model.layers:
        if isinstance(layer, (TokenEmbedding, keras.layers.RNN, *_PASS_THROUGH)) or layer.name == "logits":
            continue
        raise ModelFileError(f"model {model.name} has a {type(layer).__name__} layer ({layer.name}) "
                             "that generation cannot step through; build it with textgen's build_model")
    for layer in rnns:
        if type(layer.cell) not in _CELL_STEPS or layer.go_backwards:
            raise ModelFileError(f"layer {layer.name} ({type(layer.cell).__name__}"
                                 f"{', backwards' if layer.go_backwards else ''}) cannot be stepped; "
                                 "generation supports forward LSTM, GRU, SimpleRNN and peephole LSTM layers")
    head = model.get_layer("logits")
    if head.activation not in (None, keras.activations.linear):
        raise ModelFileError(f"the logits layer of model {model.name} has an activation; it must output logits")
    return embedding, rnns


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
