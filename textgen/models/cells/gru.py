"""The GRU as Keras builds it by default (reset_after=True, gate order z, r, h), and its
fused training twin.

    z, r = sigmoid(x W + b_x + h U + b_h) blocks
    candidate = tanh(x W_h + b_xh + r * (h U_h + b_hh))
    h' = z * h + (1 - z) * candidate

The reset gate scales only the candidate's recurrent part, so that part and the input part
are blocks of their own: shared z, r | recurrent-only h U_h | input-only x W_h. A GRU with
reset_after=False multiplies r into h before the product; generation steps it through the
Keras cell (textgen builds none).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from textgen.models.cells.kind import CellKind, Packed, read
from textgen.models.fused_rnn import FusedRecurrent


class FusedGRU(FusedRecurrent, keras.layers.GRU):
    """keras.layers.GRU that trains through textgen's fused CPU kernel (textgen.models.fused_rnn)."""


class GRUKind(CellKind):
    name = "gru"
    cell_class = keras.layers.GRUCell
    layer_class = keras.layers.GRU
    fused_class = FusedGRU
    cudnn = True
    shared, recurrent_only, input_only = 2, 1, 1  # z, r | h U_h | x W_h
    gates_read_h = True

    def supports(self, cell) -> bool:
        return super().supports(cell) and cell.reset_after

    def cudnn_problems(self, layer):
        problems = super().cudnn_problems(layer)
        if problems is not None and not layer.cell.reset_after:
            problems.append("GRU reset_after=False")
        return problems

    def pack(self, cell) -> Packed:
        if cell.use_bias:  # one row for the input product, one for the recurrent product
            bias = read(cell.bias)
            x_bias, h_bias = bias[0], bias[1]
        else:
            x_bias = h_bias = tf.zeros([3 * cell.units])
        return Packed(read(cell.kernel), read(cell.recurrent_kernel), x_bias, h_bias)

    def gates(self, z, states, product):
        z, r, recurrent_h, input_h = z
        h = states[0]
        z, r = tf.sigmoid(z), tf.sigmoid(r)
        candidate = tf.tanh(input_h + r * recurrent_h)
        h_new = z * h + (1.0 - z) * candidate
        return h_new, [h_new], [z, r, candidate, recurrent_h, h]

    def gates_backward(self, saved, d_states):
        z, r, candidate, recurrent_h, h_prev = saved
        dh = d_states[0]
        d_input_h = dh * (1.0 - z) * (1.0 - candidate * candidate)
        dz = dh * (h_prev - candidate) * z * (1.0 - z)
        dr = d_input_h * recurrent_h * r * (1.0 - r)
        return [dz, dr, d_input_h * r, d_input_h], [dh * z]


KIND = GRUKind()
