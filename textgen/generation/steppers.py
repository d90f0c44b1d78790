"""Generation steps: one token through a textgen model, with its states carried forward.

Every network kind owns one step with the same interface, and the compiled loops in
textgen.generation only call it: `initial_states(batch, labels=None)` and `step(token_ids,
states) -> (float32 logits (batch, vocab), states)`, where states is a fixed structure of
tensors with the batch on `batch_axis` (0 for all but the column stepper) and `states[0][0]`
is one of them. `make_stepper` picks the step by the kind the model card names:

- transformers: `TransformerStepper` (textgen.models.transformer), cached keys and values;
- window models: `WindowStepper` (textgen.models.window), the window re-fed per token;
- sequence-mode recurrent models: `RecurrentStepper`, which runs each cell kind's gate
  arithmetic (textgen.models.cells) on a snapshot of the weights with the batch in rows, or
  `PackedColumnStepper`, the same gates with the batch in columns and one packed bfloat16
  product per layer (for large sampled batches); a cell no kind's gates compute (options
  other than the kind's, a cell textgen does not know) runs through `CellStepper`, which
  calls the Keras cell once per token (slower: every call goes through the layer).

The two raw-op steppers offer `tile_states(states, copies)`: the row stepper's states of some
rows, repeated `copies` times in their own layout, so a seed shared by every row runs once.

A conditioned model (one with a LabelEmbedding, textgen.labels) joins each row's label vector
to the token embedding as the Keras model does: added, or concatenated after it (the layer's
`merge`). `initial_states(batch, labels)` takes the rows' vectors (`LabelEmbedding.mix`,
(batch, embedding_dim) float32, or one row for all; None: every group's `any`) and keeps them
as the last entry of the states, one tensor with the batch on `batch_axis`, so every loop,
gather and concatenation of rows carries them as it carries the rest. A stepper that
multiplies the embedding by a kernel keeps the vector already multiplied, once per row
instead of once per token: by that kernel when added, by the kernel's label rows when
concatenated. A model without labels has exactly the states it always had.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from textgen.errors import ModelFileError
from textgen.models import cells
from textgen.models.cells.kind import split_blocks
from textgen.models.architecture import model_kind
from textgen.models.builder import recurrent_layers
from textgen.models.layers import (LabelEmbedding, TokenEmbedding, concatenated_label_width, find_label_embedding,
                                   find_token_embedding, label_rows, output_layer)
from textgen.models.transformer import TransformerStepper
from textgen.models.window import WindowStepper

__all__ = ["CellStepper", "PackedColumnStepper", "RecurrentStepper", "TransformerStepper", "WindowStepper",
           "make_stepper"]

TABLE_MAX_BYTES = 64 * 2**20  # largest first-layer lookup table; bigger vocabularies multiply instead
_PASS_THROUGH = (keras.layers.InputLayer, keras.layers.Dropout)
# A conditioned model's labels and the layer joining them to the embedding.
_LABEL_LAYERS = (LabelEmbedding, keras.layers.Add, keras.layers.Concatenate)


def make_stepper(model: keras.Model, dtype=tf.float32, columns: bool = False):
    """The step of `model`'s kind. `dtype` is the recurrent products' (the raw-op steppers');
    `columns` asks for the packed column layout, where every cell has a kind."""
    kind = model_kind(model)
    if kind == "transformer":
        return TransformerStepper(model)
    if kind == "window":
        return WindowStepper(model)
    if not all(_kind_of(layer) for layer in recurrent_layers(model)):
        return CellStepper(model)
    if columns and PackedColumnStepper.supports(model):
        return PackedColumnStepper(model, dtype)
    return RecurrentStepper(model, dtype)


def _kind_of(layer):
    """The cell kind whose gates compute `layer`'s cell, or None."""
    kind = cells.for_cell(layer.cell)
    return kind if kind is not None and kind.supports(layer.cell) else None


def _product(x, weights):
    """x (float32) @ weights, in the weights' dtype; the result is float32."""
    if weights.dtype == tf.float32:
        return tf.matmul(x, weights)
    return tf.cast(tf.matmul(tf.cast(x, weights.dtype), weights), tf.float32)


def _float32(tensor) -> np.ndarray:
    return np.asarray(tensor, np.float32)


class _RowLayer:
    """One recurrent layer's weights for row steps: its kind's layout, products in `dtype`.

    `project` is the input half (x @ x_kernel + x_bias), `__call__` the rest of a step. The last
    `label_rows` rows of the input kernel, a concatenated label's, are kept apart as `label_kernel`
    (without them it is the whole input kernel, which an added label goes through).
    """

    def __init__(self, kind, cell, dtype, label_rows: int = 0):
        packed = kind.pack(cell)
        self.kind, self.units = kind, cell.units
        self.x_kernel, self.label_kernel = _split_label_rows(_float32(packed.x_kernel), label_rows)
        self.x_bias = _float32(packed.x_bias)  # with x_kernel, the first layer's table
        self.x_kernel_t, self.x_bias_t = tf.cast(self.x_kernel, dtype), tf.constant(self.x_bias)
        self.h_kernel = tf.cast(_float32(packed.h_kernel), dtype)
        self.h_bias = None if packed.h_bias is None else tf.constant(_float32(packed.h_bias))
        self.extras = [tf.cast(_float32(extra), dtype) for extra in packed.extras]

    def project(self, x):
        return _product(x, self.x_kernel_t) + self.x_bias_t

    def product(self, v, k):
        """v @ extras[k], split into blocks (the `product` a kind's gates call)."""
        extra = self.extras[k]
        return split_blocks(_product(v, extra), extra.shape[1] // self.units, axis=-1)

    def __call__(self, x_part, states):
        h_part = _product(states[0], self.h_kernel)
        if self.h_bias is not None:
            h_part = h_part + self.h_bias
        h, states, _ = self.kind.gates(self.kind.pre_activations(x_part, h_part, axis=-1), states, self.product)
        return h, states


class RecurrentStepper:
    """One token step through a sequence-mode recurrent model, states (batch, units) per layer.

    Works on a snapshot of the model's weights taken at construction. The first recurrent
    layer's input projection, embedding @ x_kernel + x_bias, is precomputed as a table with
    one row per token (when it fits in TABLE_MAX_BYTES), so a step is: a row lookup, one
    product of the hidden state with the recurrent kernel per layer, the cell kind's gate
    arithmetic and the output layer. `dtype` is the dtype of the recurrent and deeper input
    products (float32 or bfloat16); everything else is float32.
    """

    batch_axis = 0

    def __init__(self, model: keras.Model, dtype=tf.float32):
        embedding, rnns, kinds = _check_architecture(model)
        self.dtype = dtype
        self.labels = find_label_embedding(model)
        label_rows = concatenated_label_width(self.labels)
        self.layers = [_RowLayer(kind, layer.cell, dtype, label_rows if i == 0 else 0)
                       for i, (kind, layer) in enumerate(zip(kinds, rnns))]
        first = self.layers[0]
        matrix = _float32(embedding.embeddings.numpy())
        if embedding.input_dim * first.x_kernel.shape[1] * 4 <= TABLE_MAX_BYTES:
            self.table = tf.constant(matrix @ first.x_kernel + first.x_bias)
            self.embeddings = None
        else:
            self.table, self.embeddings = None, tf.constant(matrix)
        self.head_kernel, self.head_bias = _head(model)

    def initial_states(self, batch_size: int, labels=None):
        states = [[tf.zeros([batch_size, layer.units]) for _ in range(layer.kind.states)] for layer in self.layers]
        vectors = label_rows(self.labels, batch_size, labels)
        if vectors is not None:  # the label's part of the first layer's input projection
            states.append([tf.matmul(vectors, self.layers[0].label_kernel)])
        return states

    def tile_states(self, states, copies: int):
        return [[tf.tile(s, [copies, 1]) for s in layer] for layer in states]

    def step(self, token_ids, states):
        """token_ids: (batch,) int32 -> logits (batch, vocab) float32, new states."""
        if self.table is not None:
            x_part = tf.gather(self.table, token_ids)
        else:
            x_part = self.layers[0].project(tf.gather(self.embeddings, token_ids))
        labels = states[len(self.layers):]  # [[projected label vectors]] of a conditioned model, else []
        if labels:
            x_part = x_part + labels[0][0]
        new_states = []
        for i, (layer, state) in enumerate(zip(self.layers, states)):
            x, state = layer(x_part if i == 0 else layer.project(x), state)
            new_states.append(state)
        logits = tf.matmul(x, self.head_kernel)
        return (logits + self.head_bias if self.head_bias is not None else logits), new_states + labels


class _ColumnLayer:
    """One recurrent layer's weights for column steps: [x weights | h weights | bias], transposed.

    Rows are the kind's pre-activation blocks; a block that only one of x and h makes
    (textgen.models.cells.kind) has zeros in the other's columns.
    """

    def __init__(self, kind, units: int, packed, x_kernel: np.ndarray, dtype):
        self.kind, self.units, self.dtype = kind, units, dtype
        u, shared = units, kind.shared * units
        h_kernel, x_bias = _float32(packed.h_kernel), _float32(packed.x_bias)
        zeros = np.zeros
        x_columns = [self.x_blocks(x_kernel).numpy()]
        h_columns = [h_kernel[:, :shared], h_kernel[:, shared:], zeros((u, kind.input_only * u), np.float32)]
        if packed.h_bias is None:
            bias = [x_bias[:shared], zeros(kind.recurrent_only * u, np.float32), x_bias[shared:]]
        else:
            h_bias = _float32(packed.h_bias)
            bias = [x_bias[:shared] + h_bias[:shared], h_bias[shared:], x_bias[shared:]]
        matrix = np.concatenate([np.concatenate(x_columns, axis=1), np.concatenate(h_columns, axis=1),
                                 np.concatenate(bias)[None]], axis=0)
        self.matrix = tf.cast(tf.constant(matrix.T.copy()), dtype)
        self.extras = [tf.cast(_float32(extra).T.copy(), dtype) for extra in packed.extras]

    def x_blocks(self, x_part):
        """x's part of the pre-activations (rows, (shared + input_only) * units), in every block's
        columns: zeros where x makes none (the recurrent-only blocks)."""
        shared = self.kind.shared * self.units
        x_part = tf.convert_to_tensor(x_part, tf.float32)
        zeros = tf.zeros([tf.shape(x_part)[0], self.kind.recurrent_only * self.units])
        return tf.concat([x_part[:, :shared], zeros, x_part[:, shared:]], axis=1)

    def product(self, v, k):
        """extras[k]^T @ v, split into blocks (the `product` a kind's gates call)."""
        extra = self.extras[k]
        z = tf.cast(tf.matmul(extra, tf.cast(v, self.dtype)), tf.float32)
        return split_blocks(z, extra.shape[0] // self.units, axis=0)

    def __call__(self, x, ones, states, labels=None):
        """`labels`: the rows' label vectors times x's weights, (blocks * units, batch) float32, or None."""
        stacked = tf.concat([x, tf.cast(states[0], self.dtype), ones], axis=0)
        z = tf.cast(tf.matmul(self.matrix, stacked), tf.float32)
        if labels is not None:
            z = z + labels
        h, states, _ = self.kind.gates(split_blocks(z, self.kind.blocks, axis=0), states, self.product)
        return h, states


class PackedColumnStepper:
    """The stepper of large sampled batches: batch in columns, one packed product per layer.

    States are (units, batch). Each layer stacks its input x (for the first layer the
    one-hot tokens, whose weights are the lookup table), its state h and a row of ones,
    and multiplies that once by a packed matrix [x weights | h weights | bias] held on the
    left. In bfloat16 on oneDNN's AMX kernels this measured 23% faster per step at batch 64
    than a row lookup plus a separate product (the kernel then repacks only the small right
    operand on every call). Every cell kind's gates run here: `supports(model)`.
    """

    batch_axis = 1

    def __init__(self, model: keras.Model, dtype=tf.bfloat16, one_hot: bool | None = None):
        embedding, rnns, kinds = _check_architecture(model)
        self.dtype = dtype
        matrix = _float32(embedding.embeddings.numpy())
        self.vocab_size, width = matrix.shape
        # By default one-hot tokens when that product is no bigger than the embedding's.
        self.one_hot = self.vocab_size <= width if one_hot is None else one_hot
        self.embeddings = None if self.one_hot else tf.constant(matrix)
        self.labels = find_label_embedding(model)
        self.layers, label_kernel = [], None
        for i, (kind, layer) in enumerate(zip(kinds, rnns)):
            packed = kind.pack(layer.cell)
            x_kernel = _float32(packed.x_kernel)
            if i == 0:
                x_kernel, label_kernel = _split_label_rows(x_kernel, concatenated_label_width(self.labels))
                if self.one_hot:
                    x_kernel = matrix @ x_kernel  # the table: row v is token v's contribution to every block
            self.layers.append(_ColumnLayer(kind, layer.cell.units, packed, x_kernel, dtype))
        self.head_kernel, self.head_bias = _head(model)
        # A label vector's part of every first-layer block; it joins the pre-activations in float32.
        self.label_kernel = None if self.labels is None else self.layers[0].x_blocks(label_kernel)

    @staticmethod
    def supports(model: keras.Model) -> bool:
        layers = recurrent_layers(model)
        return bool(layers) and all(_kind_of(layer) for layer in layers)

    def initial_states(self, batch_size: int, labels=None):
        states = [[tf.zeros([layer.units, batch_size]) for _ in range(layer.kind.states)] for layer in self.layers]
        vectors = label_rows(self.labels, batch_size, labels)
        if vectors is not None:
            states.append([tf.transpose(tf.matmul(vectors, self.label_kernel))])
        return states

    def tile_states(self, states, copies: int):
        """The row stepper's states (its projected label vectors too), repeated in columns."""
        states = list(states)
        if len(states) > len(self.layers):  # the row stepper's label part holds x's blocks only
            states[-1] = [self.layers[0].x_blocks(states[-1][0])]
        return [[tf.tile(tf.transpose(s), [1, copies]) for s in layer] for layer in states]

    def step(self, token_ids, states):
        """token_ids: (batch,) int32 -> logits (batch, vocab) float32, new states."""
        if self.one_hot:
            x = tf.one_hot(token_ids, self.vocab_size, axis=0, dtype=self.dtype)
        else:
            x = tf.cast(tf.transpose(tf.gather(self.embeddings, token_ids)), self.dtype)
        ones = tf.ones_like(x[:1])
        labels = states[len(self.layers):]  # [[label vectors' blocks]] of a conditioned model, else []
        new_states = []
        for i, (layer, state) in enumerate(zip(self.layers, states)):
            h, state = layer(x, ones, state, labels[0][0] if labels and i == 0 else None)
            new_states.append(state)
            x = tf.cast(h, self.dtype)
        logits = tf.matmul(h, self.head_kernel, transpose_a=True)
        return (logits + self.head_bias if self.head_bias is not None else logits), new_states + labels


def _split_label_rows(x_kernel: np.ndarray, label_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(the token's input kernel, the label's): a concatenated label's `label_rows` come last;
    an added label (label_rows 0) goes through the same kernel as the token."""
    if not label_rows:
        return x_kernel, x_kernel
    return x_kernel[:-label_rows], x_kernel[-label_rows:]


def _head(model):
    """The output layer's kernel and bias (or None) as float32 constants."""
    head = output_layer(model)
    bias = tf.constant(_float32(head.bias.numpy())) if head.use_bias else None
    return tf.constant(_float32(head.kernel.numpy())), bias


def _check_layers(model):
    """The embedding and recurrent layers, or a one-line error naming what cannot be stepped."""
    embedding = find_token_embedding(model)
    rnns = recurrent_layers(model)
    if not rnns:
        raise ModelFileError(f"model {model.name} has no recurrent layers to step through")
    head = output_layer(model)
    labelled = _LABEL_LAYERS if find_label_embedding(model) is not None else ()
    for layer in model.layers:
        if not isinstance(layer, (TokenEmbedding, keras.layers.RNN, *_PASS_THROUGH, *labelled)) and layer is not head:
            raise ModelFileError(f"model {model.name} has a {type(layer).__name__} layer ({layer.name}) "
                                 "that generation cannot step through; build it with textgen's build_model")
    for layer in rnns:
        if layer.go_backwards:
            raise ModelFileError(f"layer {layer.name} ({type(layer.cell).__name__}, backwards) cannot be stepped; "
                                 "generation steps recurrent layers that run forward in time")
    return embedding, rnns


def _check_architecture(model):
    """The embedding, the recurrent layers and their cell kinds, for the raw-op steppers."""
    embedding, rnns = _check_layers(model)
    kinds = [_kind_of(layer) for layer in rnns]
    for layer, kind in zip(rnns, kinds):
        if kind is None:
            raise ModelFileError(f"layer {layer.name} ({type(layer.cell).__name__}) has no cell kind whose gates "
                                 "compute it; CellStepper steps it through the Keras cell")
    return embedding, rnns, kinds


class CellStepper:
    """Sequence-mode recurrent layers of any Keras cell, one `cell(x, states)` call per layer and token."""

    batch_axis = 0

    def __init__(self, model: keras.Model):
        self.embedding, rnns = _check_layers(model)
        self.cells = [layer.cell for layer in rnns]
        self.head = output_layer(model)
        self.labels = find_label_embedding(model)

    def initial_states(self, batch_size: int, labels=None):
        states = [[tf.zeros([batch_size, size]) for size in _state_sizes(cell)] for cell in self.cells]
        vectors = label_rows(self.labels, batch_size, labels)
        return states if vectors is None else states + [[vectors]]

    def step(self, token_ids, states):
        x = self.embedding(token_ids)
        labels = states[len(self.cells):]  # [[label vectors]] of a conditioned model, else []
        if labels and concatenated_label_width(self.labels):
            x = tf.concat([x, tf.cast(labels[0][0], x.dtype)], axis=-1)
        elif labels:
            x = x + tf.cast(labels[0][0], x.dtype)
        new_states = []
        for cell, state in zip(self.cells, states):
            x, state = cell(x, list(state))
            new_states.append([tf.cast(s, tf.float32) for s in state])
        return tf.cast(self.head(x), tf.float32), new_states + labels


def _state_sizes(cell) -> list[int]:
    sizes = cell.state_size
    return list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
