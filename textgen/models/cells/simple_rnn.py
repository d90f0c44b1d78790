"""The plain recurrent cell: h' = tanh(x W + h U + b) (Keras's SimpleRNNCell)."""

from __future__ import annotations

import keras
import tensorflow as tf

from textgen.models.cells.kind import CellKind, Packed, bias_or_zeros, read


class SimpleRNNKind(CellKind):
    name = "simple_rnn"
    cell_class = keras.layers.SimpleRNNCell
    layer_class = keras.layers.SimpleRNN

    def pack(self, cell) -> Packed:
        return Packed(read(cell.kernel), read(cell.recurrent_kernel), bias_or_zeros(cell, cell.units))

    def gates(self, z, states, product):
        h = tf.tanh(z[0])
        return h, [h], [h]


KIND = SimpleRNNKind()
