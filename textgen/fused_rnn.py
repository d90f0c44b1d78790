"""Fused LSTM and GRU kernels for training on a CPU.

Keras runs a recurrent layer on a CPU one time step at a time, and so does its gradient:
every step multiplies one time slice by the input kernel and adds that slice's share to the
kernel gradients, and under a mixed-precision policy it also casts the kernels and runs the
gates in bfloat16, which CPUs compute slowly. A GPU avoids all of this with cuDNN's fused
kernel. These kernels do on a CPU what cuDNN does:

- the input projection `x @ kernel` of every time step is one large matrix product before
  the loop, and the kernel, recurrent-kernel and input gradients are large products after
  the backward loop, so only `h @ recurrent_kernel` stays inside the loops;
- matrix products run in the layer's compute dtype (bfloat16 under `mixed_bfloat16`, which
  uses the CPU's AMX or AVX-512 BF16 units) and gates, cell states and their gradients in
  float32.

`FusedLSTM` and `FusedGRU` are Keras's LSTM and GRU with the same weights, configuration
and results (to float32 rounding); they take the fused path only where it computes exactly
what Keras would: no mask, forward in time, no dropout inside the cell, default
activations, biases, GRU `reset_after`, no GPU (where cuDNN is faster) and no TPU.
Otherwise they fall back to Keras. They are training-time classes: a saved model holds
Keras's own LSTM and GRU (see `KERAS_CLASSES` and `textgen.saving`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

# The Keras class each fused layer stands in for; saved models name these instead.
KERAS_CLASSES = {"FusedLSTM": "LSTM", "FusedGRU": "GRU"}


def _matmul(a, b, dtype, transpose_a: bool = False, transpose_b: bool = False):
    """a @ b with both operands in `dtype`; the result in float32."""
    product = tf.matmul(tf.cast(a, dtype), tf.cast(b, dtype), transpose_a=transpose_a, transpose_b=transpose_b)
    return tf.cast(product, tf.float32)


def _flat(x):
    return tf.reshape(x, [-1, tf.shape(x)[-1]])


def _previous(first, sequence):
    """[first, sequence[0], ..., sequence[-2]]: the state each time step started from."""
    return tf.concat([first[tf.newaxis], sequence[:-1]], axis=0)


def _unstack(values):
    return tf.TensorArray(values.dtype, size=tf.shape(values)[0]).unstack(values)


def _zeros_if_none(grad, like):
    return tf.zeros_like(like) if grad is None else tf.cast(grad, like.dtype)


def lstm_sequence(x, h0, c0, kernel, recurrent_kernel, bias):
    """Run an LSTM (Keras's gate order i, f, g, o) over time-major `x` (time, batch, features).

    Products run in `x.dtype` (the kernels are cast to it); `bias`, `h0`, `c0` and the
    results are float32. Returns (outputs (time, batch, units), last h, last c).
    """
    dtype = x.dtype
    kernel, recurrent_kernel = tf.cast(kernel, dtype), tf.cast(recurrent_kernel, dtype)
    bias, h0, c0 = tf.cast(bias, tf.float32), tf.cast(h0, tf.float32), tf.cast(c0, tf.float32)

    @tf.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, bias):
        steps, batch, units = tf.shape(x)[0], tf.shape(x)[1], tf.shape(h0)[1]
        projected = _unstack(tf.reshape(_matmul(_flat(x), kernel, dtype) + bias, [steps, batch, 4 * units]))

        def forward(t, h, c, hs, cs, gates):
            z = projected.read(t) + _matmul(h, recurrent_kernel, dtype)
            i, f, g, o = tf.split(z, 4, axis=1)
            i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
            c = f * c + i * g
            h = o * tf.tanh(c)
            return t + 1, h, c, hs.write(t, h), cs.write(t, c), gates.write(t, tf.concat([i, f, g, o], axis=1))

        arrays = [tf.TensorArray(tf.float32, size=steps) for _ in range(3)]
        _, h, c, hs, cs, gates = tf.while_loop(lambda t, *_: t < steps, forward, (0, h0, c0, *arrays))
        outputs, cells, gates = hs.stack(), cs.stack(), gates.stack()

        def grad(d_outputs, d_h, d_c):
            d_outputs = _zeros_if_none(d_outputs, outputs)
            cells_in, gates_in, d_in = _unstack(cells), _unstack(gates), _unstack(d_outputs)
            previous_cells = _unstack(_previous(c0, cells))

            def backward(t, dh_next, dc_next, dz_all):
                i, f, g, o = tf.split(gates_in.read(t), 4, axis=1)
                tanh_c = tf.tanh(cells_in.read(t))
                dh = d_in.read(t) + dh_next
                dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
                dz = tf.concat([dc * g * i * (1.0 - i), dc * previous_cells.read(t) * f * (1.0 - f),
                                dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)], axis=1)
                return (t - 1, _matmul(dz, recurrent_kernel, dtype, transpose_b=True), dc * f,
                        dz_all.write(t, dz))

            start = (steps - 1, _zeros_if_none(d_h, h), _zeros_if_none(d_c, c), tf.TensorArray(tf.float32, size=steps))
            _, dh0, dc0, dz_all = tf.while_loop(lambda t, *_: t >= 0, backward, start)
            dz = _flat(dz_all.stack())
            d_kernel = _matmul(_flat(x), dz, dtype, transpose_a=True)
            d_recurrent = _matmul(_flat(_previous(h0, outputs)), dz, dtype, transpose_a=True)
            dx = tf.reshape(_matmul(dz, kernel, dtype, transpose_b=True), tf.shape(x))
            return (tf.cast(dx, dtype), dh0, dc0, tf.cast(d_kernel, dtype), tf.cast(d_recurrent, dtype),
                    tf.reduce_sum(dz, axis=0))

        return (outputs, h, c), grad

    return run(x, h0, c0, kernel, recurrent_kernel, bias)


def gru_sequence(x, h0, kernel, recurrent_kernel, input_bias, recurrent_bias):
    """Run a GRU with `reset_after` (Keras's gate order z, r, h) over time-major `x`.

    Products run in `x.dtype`; biases, `h0` and the results are float32.
    Returns (outputs (time, batch, units), last h).
    """
    dtype = x.dtype
    kernel, recurrent_kernel = tf.cast(kernel, dtype), tf.cast(recurrent_kernel, dtype)
    input_bias, recurrent_bias = tf.cast(input_bias, tf.float32), tf.cast(recurrent_bias, tf.float32)
    h0 = tf.cast(h0, tf.float32)

    @tf.custom_gradient
    def run(x, h0, kernel, recurrent_kernel, input_bias, recurrent_bias):
        steps, batch, units = tf.shape(x)[0], tf.shape(x)[1], tf.shape(h0)[1]
        projected = _unstack(tf.reshape(_matmul(_flat(x), kernel, dtype) + input_bias, [steps, batch, 3 * units]))

        def forward(t, h, hs, saved):
            x_z, x_r, x_h = tf.split(projected.read(t), 3, axis=1)
            r_z, r_r, r_h = tf.split(_matmul(h, recurrent_kernel, dtype) + recurrent_bias, 3, axis=1)
            z, r = tf.sigmoid(x_z + r_z), tf.sigmoid(x_r + r_r)
            candidate = tf.tanh(x_h + r * r_h)
            h = z * h + (1.0 - z) * candidate
            return t + 1, h, hs.write(t, h), saved.write(t, tf.concat([z, r, candidate, r_h], axis=1))

        arrays = [tf.TensorArray(tf.float32, size=steps) for _ in range(2)]
        _, h, hs, saved = tf.while_loop(lambda t, *_: t < steps, forward, (0, h0, *arrays))
        outputs, saved = hs.stack(), saved.stack()

        def grad(d_outputs, d_h):
            d_outputs = _zeros_if_none(d_outputs, outputs)
            saved_in, d_in = _unstack(saved), _unstack(d_outputs)
            previous_h = _unstack(_previous(h0, outputs))

            def backward(t, dh_next, dx_all, drec_all):
                z, r, candidate, r_h = tf.split(saved_in.read(t), 4, axis=1)
                dh = d_in.read(t) + dh_next
                d_candidate = dh * (1.0 - z) * (1.0 - candidate * candidate)
                dz = dh * (previous_h.read(t) - candidate) * z * (1.0 - z)
                dr = d_candidate * r_h * r * (1.0 - r)
                d_projected = tf.concat([dz, dr, d_candidate], axis=1)
                d_recurrent = tf.concat([dz, dr, d_candidate * r], axis=1)
                dh_prev = dh * z + _matmul(d_recurrent, recurrent_kernel, dtype, transpose_b=True)
                return t - 1, dh_prev, dx_all.write(t, d_projected), drec_all.write(t, d_recurrent)

            arrays = [tf.TensorArray(tf.float32, size=steps) for _ in range(2)]
            _, dh0, dx_all, drec_all = tf.while_loop(lambda t, *_: t >= 0, backward,
                                                     (steps - 1, _zeros_if_none(d_h, h), *arrays))
            d_projected, d_recurrent = _flat(dx_all.stack()), _flat(drec_all.stack())
            d_kernel = _matmul(_flat(x), d_projected, dtype, transpose_a=True)
            d_rkernel = _matmul(_flat(_previous(h0, outputs)), d_recurrent, dtype, transpose_a=True)
            dx = tf.reshape(_matmul(d_projected, kernel, dtype, transpose_b=True), tf.shape(x))
            return (tf.cast(dx, dtype), dh0, tf.cast(d_kernel, dtype), tf.cast(d_rkernel, dtype),
                    tf.reduce_sum(d_projected, axis=0), tf.reduce_sum(d_recurrent, axis=0))

        return (outputs, h), grad

    return run(x, h0, kernel, recurrent_kernel, input_bias, recurrent_bias)


def fused_kernel_applies(layer, mask, training) -> bool:
    """Whether `layer` computes exactly what the fused kernel computes, here and now."""
    cell = layer.cell
    plain = (mask is None and not layer.go_backwards and not layer.unroll and cell.use_bias
             and cell.activation is keras.activations.tanh
             and cell.recurrent_activation is keras.activations.sigmoid
             and not (training and (cell.dropout or cell.recurrent_dropout))
             and getattr(cell, "reset_after", True))
    return plain and keras.backend.backend() == "tensorflow" and not _accelerator_present()


def _accelerator_present() -> bool:
    """A GPU (Keras takes cuDNN there) or a TPU strategy (XLA compiles the loop there)."""
    if tf.config.list_logical_devices("GPU"):
        return True
    return tf.distribute.has_strategy() and "TPU" in type(tf.distribute.get_strategy()).__name__


class FusedLSTM(keras.layers.LSTM):
    """keras.layers.LSTM that trains through `lstm_sequence` on a CPU (see the module docstring)."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not fused_kernel_applies(self, mask, training):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        cell = self.cell
        x = tf.transpose(tf.cast(sequences, cell.compute_dtype), [1, 0, 2])
        kernel, recurrent_kernel, bias = (keras.ops.convert_to_tensor(w) for w in
                                          (cell.kernel, cell.recurrent_kernel, cell.bias))
        outputs, h, c = lstm_sequence(x, initial_state[0], initial_state[1], kernel, recurrent_kernel, bias)
        return h, tf.transpose(outputs, [1, 0, 2]), [h, c]


class FusedGRU(keras.layers.GRU):
    """keras.layers.GRU that trains through `gru_sequence` on a CPU (see the module docstring)."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not fused_kernel_applies(self, mask, training):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        cell = self.cell
        h0 = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        x = tf.transpose(tf.cast(sequences, cell.compute_dtype), [1, 0, 2])
        kernel, recurrent_kernel, bias = (keras.ops.convert_to_tensor(w) for w in
                                          (cell.kernel, cell.recurrent_kernel, cell.bias))
        outputs, h = gru_sequence(x, h0, kernel, recurrent_kernel, bias[0], bias[1])
        return h, tf.transpose(outputs, [1, 0, 2]), [h]
