"""Fused LSTM and GRU kernels for training on a CPU.

Keras runs a recurrent layer on a CPU one time step at a time, and so does its gradient:
every step multiplies one time slice by the input kernel and adds that slice's share to the
kernel gradients, and under a mixed-precision policy it also casts the kernels and runs the
gates in bfloat16, which CPUs compute slowly. A GPU avoids all of this with cuDNN's fused
kernel. These kernels do on a CPU what cuDNN does:

- the input projection `x @ kernel` of every time step is one large matrix product before
  the loop, and the kernel, recurrent-kernel and input gradients are large products after
  the backward loop, so only `h @ recurrent_kernel` stays inside the loops;
- the backward loop multiplies by a copy of the recurrent kernel transposed once before it,
  not by the kernel with `transpose_b=True`: for a batch of 64 rows that product ran 3.4
  times slower on an AVX2 EPYC (12 ms against 3.4 ms per step at 768 units, float32), and
  it made the whole backward pass nearly twice the forward one;
- matrix products run in the layer's compute dtype (bfloat16 under `mixed_bfloat16`, which
  uses the CPU's AMX or AVX-512 BF16 units) and gates, cell states and their gradients in
  float32;
- under bfloat16 the element-wise work of each time step (gates, states, their gradients
  and the casts between float32 and the products' dtype) is one XLA-compiled function, a
  few fused loops instead of some thirty separate TensorFlow ops; in float32, with no casts
  to fuse, the same arithmetic runs as plain TensorFlow ops, which measured faster there
  (`_for_dtype`).

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


def _flat(x):
    return tf.reshape(x, [-1, tf.shape(x)[-1]])


def _previous(first, sequence):
    """[first, sequence[0], ..., sequence[-2]]: the state each time step started from."""
    return tf.concat([first[tf.newaxis], sequence[:-1]], axis=0)


def _zeros_if_none(grad, like):
    return tf.zeros_like(like) if grad is None else grad


def _for_dtype(dtype, *steps):
    """The step functions as XLA compiles them, or as plain TensorFlow ops for float32 products.

    With bfloat16 products XLA fuses the casts into the gate loops (chosen on the AMX Xeon);
    in float32 there are no casts, and on the AVX2 EPYC plain ops made whole training steps
    4-12% faster at GRU 384 x batch 128 and LSTM 512 x batch 64 (two interleaved rounds of
    each), and no slower at LSTM 768.
    """
    return [step.python_function for step in steps] if dtype == tf.float32 else list(steps)


# The element-wise work of one time step is compiled by XLA into a few fused loops, with the
# casts between the float32 gates and the products' dtype inside them (bfloat16 products; in
# float32 the same functions run uncompiled, see _for_dtype). The matrix products stay
# outside XLA, in oneDNN, which uses the CPU's bfloat16 units.


@tf.function(jit_compile=True)
def _lstm_forward_step(projected, bias, recurrent, c):
    """Gates and states from the step's x @ kernel, the bias and h @ recurrent_kernel."""
    z = tf.cast(projected, tf.float32) + bias + tf.cast(recurrent, tf.float32)
    i, f, g, o = tf.split(z, 4, axis=1)
    i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
    c_new = f * c + i * g
    tanh_c = tf.tanh(c_new)
    h = o * tanh_c
    return h, tf.cast(h, recurrent.dtype), c_new, tf.concat([i, f, g, o, tanh_c, c], axis=1)


@tf.function(jit_compile=True)
def _lstm_backward_step(saved, d_output, dh_recurrent, dc, d_bias):
    """Gradients of the gate pre-activations and of the cell state before the step; the
    bias gradient summed so far, in float32."""
    i, f, g, o, tanh_c, c_prev = tf.split(saved, 6, axis=1)
    dh = tf.cast(d_output, tf.float32) + tf.cast(dh_recurrent, tf.float32)
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
    dz = tf.concat([dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                    dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)], axis=1)
    return tf.cast(dz, dh_recurrent.dtype), dc * f, d_bias + tf.reduce_sum(dz, axis=0)


def lstm_sequence(x, h0, c0, kernel, recurrent_kernel, bias):
    """Run an LSTM (Keras's gate order i, f, g, o) over time-major `x` (time, batch, features).

    Products run in `x.dtype` (the kernels are cast to it); gates and cell states in float32.
    Returns (outputs (time, batch, units) in `x.dtype`, last h, last c in float32).
    """
    dtype = x.dtype
    kernel, recurrent_kernel = tf.cast(kernel, dtype), tf.cast(recurrent_kernel, dtype)
    bias, h0, c0 = tf.cast(bias, tf.float32), tf.cast(h0, tf.float32), tf.cast(c0, tf.float32)
    forward_step, backward_step = _for_dtype(dtype, _lstm_forward_step, _lstm_backward_step)

    @tf.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, bias):
        steps, batch, units = tf.shape(x)[0], tf.shape(x)[1], tf.shape(h0)[1]
        inputs = _flat(x)
        projected = tf.reshape(tf.matmul(inputs, kernel), [steps, batch, 4 * units])

        def forward(t, h, h_low, c, hs, saved):
            h, h_low, c, kept = forward_step(projected[t], bias, tf.matmul(h_low, recurrent_kernel), c)
            return t + 1, h, h_low, c, hs.write(t, h_low), saved.write(t, kept)

        start = (0, h0, tf.cast(h0, dtype), c0, tf.TensorArray(dtype, size=steps),
                 tf.TensorArray(tf.float32, size=steps))
        _, h, _, c, hs, saved = tf.while_loop(lambda t, *_: t < steps, forward, start)
        outputs, saved = hs.stack(), saved.stack()

        def grad(d_outputs, d_h, d_c):
            d_outputs = _zeros_if_none(d_outputs, outputs)

            recurrent_t = tf.transpose(recurrent_kernel)  # once, not transpose_b per step (docstring)

            def backward(t, dh_recurrent, dc, d_bias, dz_all):
                dz, dc, d_bias = backward_step(saved[t], d_outputs[t], dh_recurrent, dc, d_bias)
                return t - 1, tf.matmul(dz, recurrent_t), dc, d_bias, dz_all.write(t, dz)

            start = (steps - 1, tf.cast(_zeros_if_none(d_h, h), dtype), _zeros_if_none(d_c, c), tf.zeros_like(bias),
                     tf.TensorArray(dtype, size=steps))
            _, dh0, dc0, d_bias, dz_all = tf.while_loop(lambda t, *_: t >= 0, backward, start)
            dz = _flat(dz_all.stack())
            d_kernel = tf.matmul(inputs, dz, transpose_a=True)
            d_recurrent = tf.matmul(_flat(_previous(tf.cast(h0, dtype), outputs)), dz, transpose_a=True)
            dx = tf.reshape(tf.matmul(dz, kernel, transpose_b=True), tf.shape(x))
            return dx, tf.cast(dh0, tf.float32), dc0, d_kernel, d_recurrent, d_bias

        return (outputs, h, c), grad

    return run(x, h0, c0, kernel, recurrent_kernel, bias)


@tf.function(jit_compile=True)
def _gru_forward_step(projected, input_bias, recurrent, recurrent_bias, h):
    """The new state from the step's x @ kernel, h @ recurrent_kernel and the biases."""
    x_z, x_r, x_h = tf.split(tf.cast(projected, tf.float32) + input_bias, 3, axis=1)
    r_z, r_r, r_h = tf.split(tf.cast(recurrent, tf.float32) + recurrent_bias, 3, axis=1)
    z, r = tf.sigmoid(x_z + r_z), tf.sigmoid(x_r + r_r)
    candidate = tf.tanh(x_h + r * r_h)
    h_new = z * h + (1.0 - z) * candidate
    return h_new, tf.cast(h_new, recurrent.dtype), tf.concat([z, r, candidate, r_h, h], axis=1)


@tf.function(jit_compile=True)
def _gru_backward_step(saved, d_output, dh_recurrent, dh_direct, d_biases):
    """Gradients of the input and recurrent pre-activations, the direct part of dh_prev and
    the (input, recurrent) bias gradients summed so far, in float32."""
    z, r, candidate, r_h, h_prev = tf.split(saved, 5, axis=1)
    dh = tf.cast(d_output, tf.float32) + tf.cast(dh_recurrent, tf.float32) + dh_direct
    d_candidate = dh * (1.0 - z) * (1.0 - candidate * candidate)
    dz = dh * (h_prev - candidate) * z * (1.0 - z)
    dr = d_candidate * r_h * r * (1.0 - r)
    d_projected = tf.concat([dz, dr, d_candidate], axis=1)
    d_recurrent = tf.concat([dz, dr, d_candidate * r], axis=1)
    d_biases = d_biases + tf.stack([tf.reduce_sum(d_projected, axis=0), tf.reduce_sum(d_recurrent, axis=0)])
    low = dh_recurrent.dtype
    return tf.cast(d_projected, low), tf.cast(d_recurrent, low), dh * z, d_biases


def gru_sequence(x, h0, kernel, recurrent_kernel, input_bias, recurrent_bias):
    """Run a GRU with `reset_after` (Keras's gate order z, r, h) over time-major `x`.

    Products run in `x.dtype`; gates and states in float32.
    Returns (outputs (time, batch, units) in `x.dtype`, last h in float32).
    """
    dtype = x.dtype
    kernel, recurrent_kernel = tf.cast(kernel, dtype), tf.cast(recurrent_kernel, dtype)
    input_bias, recurrent_bias = tf.cast(input_bias, tf.float32), tf.cast(recurrent_bias, tf.float32)
    h0 = tf.cast(h0, tf.float32)
    forward_step, backward_step = _for_dtype(dtype, _gru_forward_step, _gru_backward_step)

    @tf.custom_gradient
    def run(x, h0, kernel, recurrent_kernel, input_bias, recurrent_bias):
        steps, batch, units = tf.shape(x)[0], tf.shape(x)[1], tf.shape(h0)[1]
        inputs = _flat(x)
        projected = tf.reshape(tf.matmul(inputs, kernel), [steps, batch, 3 * units])

        def forward(t, h, h_low, hs, saved):
            h, h_low, kept = forward_step(projected[t], input_bias, tf.matmul(h_low, recurrent_kernel),
                                          recurrent_bias, h)
            return t + 1, h, h_low, hs.write(t, h_low), saved.write(t, kept)

        start = (0, h0, tf.cast(h0, dtype), tf.TensorArray(dtype, size=steps), tf.TensorArray(tf.float32, size=steps))
        _, h, _, hs, saved = tf.while_loop(lambda t, *_: t < steps, forward, start)
        outputs, saved = hs.stack(), saved.stack()

        def grad(d_outputs, d_h):
            d_outputs = _zeros_if_none(d_outputs, outputs)

            recurrent_t = tf.transpose(recurrent_kernel)  # once, not transpose_b per step (docstring)

            def backward(t, dh_recurrent, dh_direct, d_biases, dx_all, drec_all):
                d_projected, d_recurrent, dh_direct, d_biases = backward_step(
                    saved[t], d_outputs[t], dh_recurrent, dh_direct, d_biases)
                return (t - 1, tf.matmul(d_recurrent, recurrent_t), dh_direct, d_biases,
                        dx_all.write(t, d_projected), drec_all.write(t, d_recurrent))

            start = (steps - 1, tf.zeros_like(tf.cast(h, dtype)), _zeros_if_none(d_h, h),
                     tf.zeros([2, 3 * units]), tf.TensorArray(dtype, size=steps), tf.TensorArray(dtype, size=steps))
            _, dh_recurrent, dh_direct, d_biases, dx_all, drec_all = tf.while_loop(lambda t, *_: t >= 0, backward,
                                                                                  start)
            d_projected, d_recurrent = _flat(dx_all.stack()), _flat(drec_all.stack())
            d_kernel = tf.matmul(inputs, d_projected, transpose_a=True)
            d_rkernel = tf.matmul(_flat(_previous(tf.cast(h0, dtype), outputs)), d_recurrent, transpose_a=True)
            dx = tf.reshape(tf.matmul(d_projected, kernel, transpose_b=True), tf.shape(x))
            dh0 = tf.cast(dh_recurrent, tf.float32) + dh_direct
            return dx, dh0, d_kernel, d_rkernel, d_biases[0], d_biases[1]

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
