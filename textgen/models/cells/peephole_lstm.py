"""The peephole LSTM: the LSTM variant of the lecture notes in which the gates also look at
the cell state (`PeepholeLSTMCell`, a cell Keras does not ship):

    f_t = sigmoid(W_f [C_{t-1}, h_{t-1}, x_t] + b_f)
    i_t = sigmoid(W_i [C_{t-1}, h_{t-1}, x_t] + b_i)
    g_t = tanh(W_g [h_{t-1}, x_t] + b_g)
    C_t = f_t * C_{t-1} + i_t * g_t
    o_t = sigmoid(W_o [C_t, h_{t-1}, x_t] + b_o)
    h_t = o_t * tanh(C_t)

The weights are stored as three blocks, as Keras's own LSTMCell stores its kernels: `kernel`
multiplies x_t, `recurrent_kernel` multiplies h_{t-1}, and `peephole_kernel` multiplies the
cell state (C_{t-1} for the forget and input gates, C_t for the output gate). The gate order
in the stacked columns is i, f, g, o, like Keras's LSTMCell. The cell has no fused cuDNN
kernel; on a GPU it runs through the generic RNN loop, and it has no fused training twin.
The peephole products sit inside the gates, so `gates` makes them through `product`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from textgen.models.cells.kind import CellKind, Packed, bias_or_zeros, keras_cell_step, read, weight_options


@keras.saving.register_keras_serializable(package="textgen")
class PeepholeLSTMCell(keras.layers.Layer):
    """An LSTM cell with full peephole connections from the cell state to every gate.

    Args:
        units: size of the hidden and cell states.
        kernel_initializer, recurrent_initializer, peephole_initializer: weight initialisers.
        unit_forget_bias: start the forget-gate bias at 1, as Keras's LSTMCell does.
        kernel_regularizer: penalty on the input kernel; recurrent_regularizer: on the
            recurrent and peephole kernels (textgen's `training.l2`).
    """

    def __init__(self, units, kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 peephole_initializer="glorot_uniform", unit_forget_bias=True, kernel_regularizer=None,
                 recurrent_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.peephole_initializer = keras.initializers.get(peephole_initializer)
        self.unit_forget_bias = unit_forget_bias
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)  # also on the peepholes
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape):
        dim = input_shape[-1]
        self.kernel = self.add_weight(shape=(dim, 4 * self.units), initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, 4 * self.units),
                                                initializer=self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer, name="recurrent_kernel")
        # Columns: input gate, forget gate, output gate (no peephole into the candidate g).
        self.peephole_kernel = self.add_weight(shape=(self.units, 3 * self.units),
                                               initializer=self.peephole_initializer,
                                               regularizer=self.recurrent_regularizer, name="peephole_kernel")
        self.bias = self.add_weight(shape=(4 * self.units,), initializer=self._bias_initializer, name="bias")
        super().build(input_shape)

    def _bias_initializer(self, shape, dtype=None):
        bias = ops.zeros(shape, dtype=dtype)
        if not self.unit_forget_bias:
            return bias
        u = self.units
        return ops.concatenate([ops.zeros((u,), dtype), ops.ones((u,), dtype), ops.zeros((2 * u,), dtype)])

    def call(self, inputs, states, training=False):
        return keras_cell_step(KIND, self, inputs, states)

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype) for _ in range(2)]

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, unit_forget_bias=self.unit_forget_bias,
                      **weight_options(self, ("kernel", "recurrent", "peephole"), ("kernel", "recurrent")))
        return config


class PeepholeLSTMKind(CellKind):
    name = "peephole_lstm"
    cell_class = PeepholeLSTMCell
    states = 2  # h, c
    shared = 4  # i, f, g, o

    def pack(self, cell) -> Packed:
        peephole = read(cell.peephole_kernel)  # columns: i, f | o
        u = cell.units
        return Packed(read(cell.kernel), read(cell.recurrent_kernel), bias_or_zeros(cell, 4 * u),
                      extras=(peephole[:, :2 * u], peephole[:, 2 * u:]))

    def gates(self, z, states, product):
        i, f, g, o = z
        c = states[1]
        peep_i, peep_f = product(c, 0)
        c = tf.sigmoid(f + peep_f) * c + tf.sigmoid(i + peep_i) * tf.tanh(g)
        h = tf.sigmoid(o + product(c, 1)[0]) * tf.tanh(c)
        return h, [h, c], []


KIND = PeepholeLSTMKind()
