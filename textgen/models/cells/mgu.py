"""The minimal gated unit (MGU; Zhou, Wu, Zhang and Zhou, 2016): a GRU with one gate.

    f  = sigmoid(x W_f + h U_f + b_f)
    h~ = tanh(x W_h + (f * h) U_h + b_h)
    h' = (1 - f) * h + f * h~

The forget gate does the work of the GRU's update and reset gates, so the cell has two
thirds of a GRU's weights. `kernel` holds [W_f | W_h], `recurrent_kernel` [U_f | U_h] and
`bias` [b_f | b_h]. The candidate's recurrent product multiplies f * h, which only exists
inside the step, so `U_h` is an extra the gates multiply by through `product`; the pre-
activations are the gate (x's and h's parts summed) and the candidate's input part. Keras
has no cuDNN kernel for it and textgen no fused training twin.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from textgen.models.cells.kind import CellKind, Packed, bias_or_zeros, keras_cell_step, read, weight_options


@keras.saving.register_keras_serializable(package="textgen")
class MGUCell(keras.layers.Layer):
    """A minimal gated unit cell (module docstring), for `keras.layers.RNN`.

    Args:
        units: size of the hidden state.
        kernel_initializer, recurrent_initializer, bias_initializer: weight initialisers.
        kernel_regularizer: penalty on the input kernel; recurrent_regularizer: on the
            recurrent kernel (textgen's `training.l2`).
    """

    def __init__(self, units, kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.state_size = units
        self.output_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 2 * self.units), initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, 2 * self.units),
                                                initializer=self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer, name="recurrent_kernel")
        self.bias = self.add_weight(shape=(2 * self.units,), initializer=self.bias_initializer, name="bias")
        super().build(input_shape)

    def call(self, inputs, states, training=False):
        return keras_cell_step(KIND, self, inputs, states)

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype)]

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units,
                      **weight_options(self, ("kernel", "recurrent", "bias"), ("kernel", "recurrent")))
        return config


class MGUKind(CellKind):
    name = "mgu"
    cell_class = MGUCell
    shared, input_only = 1, 1  # f | x W_h

    def pack(self, cell) -> Packed:
        u = cell.units
        recurrent = read(cell.recurrent_kernel)
        return Packed(read(cell.kernel), recurrent[:, :u], bias_or_zeros(cell, 2 * u), extras=(recurrent[:, u:],))

    def gates(self, z, states, product):
        f, input_candidate = z
        h = states[0]
        f = tf.sigmoid(f)
        candidate = tf.tanh(input_candidate + product(f * h, 0)[0])
        h = (1.0 - f) * h + f * candidate
        return h, [h], []


KIND = MGUKind()
