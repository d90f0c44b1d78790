"""The LSTM: Keras's LSTMCell (gate order i, f, g, o), and its fused training twin.

    i, f, o = sigmoid(x W + h U + b) blocks, g = tanh(...)
    c' = f * c + i * g,  h' = o * tanh(c')
"""

from __future__ import annotations

import keras
import tensorflow as tf

from textgen.models.cells.kind import CellKind, Packed, bias_or_zeros, read
from textgen.models.fused_rnn import FusedRecurrent


class FusedLSTM(FusedRecurrent, keras.layers.LSTM):
    """keras.layers.LSTM that trains through textgen's fused CPU kernel (textgen.models.fused_rnn)."""


class LSTMKind(CellKind):
    name = "lstm"
    cell_class = keras.layers.LSTMCell
    layer_class = keras.layers.LSTM
    fused_class = FusedLSTM
    cudnn = True
    states = 2  # h, c
    shared = 4  # i, f, g, o

    def pack(self, cell) -> Packed:
        return Packed(read(cell.kernel), read(cell.recurrent_kernel), bias_or_zeros(cell, 4 * cell.units))

    def gates(self, z, states, product):
        i, f, g, o = z
        c = states[1]
        i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
        c_new = f * c + i * g
        tanh_c = tf.tanh(c_new)
        h = o * tanh_c
        return h, [h, c_new], [i, f, g, o, tanh_c, c]

    def gates_backward(self, saved, d_states):
        i, f, g, o, tanh_c, c_prev = saved
        dh, dc = d_states
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
        dz = [dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)]
        return dz, [None, dc * f]


KIND = LSTMKind()
