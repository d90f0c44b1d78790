"""Fused recurrent kernels for training on a CPU, for any cell kind with a backward pass.

Keras runs a recurrent layer on a CPU one time step at a time, and so does its gradient:
every step multiplies one time slice by the input kernel and adds that slice's share to the
kernel gradients, and under a mixed-precision policy it also casts the kernels and runs the
gates in bfloat16, which CPUs compute slowly. A GPU avoids all of this with cuDNN's fused
kernel. `run_sequence` does on a CPU what cuDNN does, for the gates of a cell kind
(textgen.models.cells), which provides them forward (`gates`) and backward (`gates_backward`):

- the input projection `x @ x_kernel` of every time step is one large matrix product before
  the loop, and the kernel, recurrent-kernel and input gradients are large products after
  the backward loop, so only `h @ h_kernel` stays inside the loops;
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
  (`_for_dtype`);
- a batch of known size runs as one loop per core, each over its own group of rows
  (`run_in_groups`): one loop leaves the cores idle while its gates run, two fill that time.

A fused layer (`FusedRecurrent` mixed into Keras's layer class, e.g. the LSTM kind's
FusedLSTM) has Keras's weights, configuration and results (to float32 rounding); it takes
the fused path only where it computes exactly what Keras would: no mask, or one whose masked
steps keep the states and output zeros (`zero_output_for_mask`, which Bidirectional sets);
forward or backward in time; no dropout inside the cell; a cell its kind's gates cover
(default activations, GRU `reset_after`); biases; no GPU (where cuDNN is faster) and no TPU.
Otherwise it falls back to Keras. Fused layers are training-time classes: a saved model holds Keras's own layers
(`textgen.models.cells.stand_ins` and `textgen.saving`).
"""

from __future__ import annotations

import functools
import os

import keras
import tensorflow as tf

from textgen.models import cells
from textgen.models.cells.kind import split_blocks


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


@functools.lru_cache(maxsize=None)
def _steps(kind):
    """The kind's forward and backward time steps as XLA-compiled functions, made once per kind."""
    return (tf.function(functools.partial(_forward_step, kind), jit_compile=True),
            tf.function(functools.partial(_backward_step, kind), jit_compile=True))


def _forward_step(kind, projected, recurrent, x_bias, h_bias, states):
    """New states from the step's x @ x_kernel, h @ h_kernel and the biases; h in the products'
    dtype for the next product; what the backward step reads, in float32."""
    h_part = tf.cast(recurrent, tf.float32)
    if h_bias is not None:
        h_part = h_part + h_bias
    z = kind.pre_activations(tf.cast(projected, tf.float32) + x_bias, h_part, axis=1)
    h, states, saved = kind.gates(z, states, None)
    return states, tf.cast(h, recurrent.dtype), tf.concat(saved, axis=1)


def _backward_step(kind, saved, count, d_output, dh_recurrent, d_direct, d_biases):
    """Gradients of x's and h's pre-activations (in the products' dtype), of the states before
    the step through the gates alone, and the bias gradients summed so far, in float32.

    `d_direct` holds the gradients of the states that reach them other than through the
    next step's h @ h_kernel: h's direct part first where the gates read h, then the rest.
    """
    dh = tf.cast(d_output, tf.float32) + tf.cast(dh_recurrent, tf.float32)
    if kind.gates_read_h:
        dh, d_direct = dh + d_direct[0], d_direct[1:]
    dz, d_previous = kind.gates_backward(split_blocks(saved, count, axis=1), [dh, *d_direct])
    d_x = tf.concat(kind.x_blocks(dz), axis=1)
    d_h = tf.concat(kind.h_blocks(dz), axis=1) if kind.blocks != kind.shared else d_x
    d_biases = [d_biases[0] + tf.reduce_sum(d_x, axis=0)] + [b + tf.reduce_sum(d_h, axis=0) for b in d_biases[1:]]
    d_direct = d_previous if kind.gates_read_h else d_previous[1:]
    low = dh_recurrent.dtype
    return tf.cast(d_x, low), tf.cast(d_h, low), d_direct, d_biases


def run_sequence(kind, x, initial_states, packed, mask=None):
    """Run a cell of `kind` over time-major `x` (time, batch, features) with `packed` weights.

    Products run in `x.dtype` (the kernels are cast to it); gates and states in float32.
    Returns (outputs (time, batch, units) in `x.dtype`, the last states in float32).
    With a time-major bool `mask` (time, batch), as Keras's loop does for a layer with
    `zero_output_for_mask`: a masked step leaves the row's states as they were and outputs
    zeros.
    """
    dtype = x.dtype
    x_kernel, h_kernel = tf.cast(packed.x_kernel, dtype), tf.cast(packed.h_kernel, dtype)
    biases = [tf.cast(b, tf.float32) for b in (packed.x_bias, packed.h_bias) if b is not None]
    states = [tf.cast(s, tf.float32) for s in initial_states]
    forward_step, backward_step = _for_dtype(dtype, *_steps(kind))
    count = len(states)

    @tf.custom_gradient
    def run(x, x_kernel, h_kernel, *rest):
        biases, states = list(rest[:len(rest) - count]), list(rest[len(rest) - count:])
        x_bias, h_bias = biases[0], (biases[1] if len(biases) > 1 else None)
        steps, batch = tf.shape(x)[0], tf.shape(x)[1]
        inputs = _flat(x)
        projected = tf.reshape(tf.matmul(inputs, x_kernel), [steps, batch, x_kernel.shape[-1]])

        def forward(t, h_low, states, hs, saved):
            new_states, new_h_low, kept = forward_step(projected[t], tf.matmul(h_low, h_kernel), x_bias, h_bias,
                                                       states)
            if mask is not None:  # a masked row keeps its states
                keep = mask[t][:, None]
                new_states = [tf.where(keep, new, old) for new, old in zip(new_states, states)]
                new_h_low = tf.where(keep, new_h_low, h_low)
            return t + 1, new_h_low, new_states, hs.write(t, new_h_low), saved.write(t, kept)

        start = (0, tf.cast(states[0], dtype), states, tf.TensorArray(dtype, size=steps),
                 tf.TensorArray(tf.float32, size=steps))
        _, _, last, hs, saved = tf.while_loop(lambda t, *_: t < steps, forward, start)
        hs, saved = hs.stack(), saved.stack()  # hs: h after each step, held over masked steps
        outputs = hs if mask is None else tf.where(mask[:, :, None], hs, tf.zeros_like(hs))

        def grad(d_outputs, *d_last):
            d_outputs = _zeros_if_none(d_outputs, outputs)
            if mask is not None:
                d_outputs = tf.where(mask[:, :, None], d_outputs, tf.zeros_like(d_outputs))
            d_last = [_zeros_if_none(d, s) for d, s in zip(d_last, last)]
            return _backward(kind, backward_step, x, inputs, hs, saved, d_outputs, d_last, states,
                             x_kernel, h_kernel, biases, mask)

        return (outputs, *last), grad

    outputs, *last = run(x, x_kernel, h_kernel, *biases, *states)
    return outputs, last


# Fewest rows a group of `run_in_groups` takes. Groups of 16 and 32 rows ran faster than one
# group of 32 and 64 on the 2-core EPYC BF16 (docs/benchmarks.md); fewer rows were not tried
# as a default, and on CPUs of more cores a batch of 64 makes at most 4 groups.
MIN_GROUP_ROWS = 16


def row_groups(batch: int | None) -> int:
    """How many groups of rows `run_in_groups` runs a batch of `batch` rows in: one per core this
    process may use, of at least MIN_GROUP_ROWS rows each; one where the batch size is unknown."""
    if not batch:
        return 1
    cores = tf.config.threading.get_intra_op_parallelism_threads()
    if not cores:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, batch // MIN_GROUP_ROWS))


def run_in_groups(kind, x, initial_states, packed, mask=None, groups=1):
    """`run_sequence` over `groups` groups of the batch's rows, concatenated as one run's results.

    Each time step waits for the one before, and its gates' element-wise work runs no faster
    on two cores than on one (docs/benchmarks.md, the training step's profile), so a single
    loop leaves cores idle. Rows never mix, so groups of rows are independent loops, which
    TensorFlow's executor runs side by side: one loop's products fill the time another
    spends on its gates.
    """
    if groups == 1:
        return run_sequence(kind, x, initial_states, packed, mask)
    batch = x.shape[1]
    sizes = [batch // groups] * (groups - 1) + [batch - batch // groups * (groups - 1)]
    xs = tf.split(x, sizes, axis=1)
    states = zip(*[tf.split(s, sizes, axis=0) for s in initial_states])
    masks = tf.split(mask, sizes, axis=1) if mask is not None else [None] * groups
    runs = [run_sequence(kind, *group, packed, m) for group, m in zip(zip(xs, states), masks)]
    outputs = tf.concat([out for out, _ in runs], axis=1)
    return outputs, [tf.concat(parts, axis=0) for parts in zip(*[last for _, last in runs])]


def _backward(kind, backward_step, x, inputs, hs, saved, d_outputs, d_last, states, x_kernel, h_kernel,
              biases, mask=None):
    """The gradients of `run_sequence`'s inputs: a loop back through time for the gates and the
    recurrent product, then the big products of the kernel and input gradients. `hs` holds h
    after each step; under a `mask` a masked row's gradients pass its step by, untouched."""
    dtype, steps = x.dtype, tf.shape(x)[0]
    count = saved.shape[-1] // h_kernel.shape[0]  # tensors `gates` saved per step, each `units` wide
    h_kernel_t = tf.transpose(h_kernel)  # once, not transpose_b per step (module docstring)
    split = kind.blocks != kind.shared  # x's and h's blocks differ (else one gradient serves both)

    def backward(t, dh_recurrent, d_direct, d_biases, dx_all, dh_all):
        if mask is None:
            d_x, d_h, d_direct, d_biases = backward_step(saved[t], count, d_outputs[t], dh_recurrent, d_direct,
                                                         d_biases)
            dh_previous = tf.matmul(d_h, h_kernel_t)
        else:  # the step sees only its unmasked rows' gradients (so the rest get zeros from it)
            keep = mask[t][:, None]
            d_x, d_h, d_step, d_biases = backward_step(
                saved[t], count, d_outputs[t], tf.where(keep, dh_recurrent, tf.zeros_like(dh_recurrent)),
                [tf.where(keep, d, tf.zeros_like(d)) for d in d_direct], d_biases)
            dh_previous = tf.matmul(d_h, h_kernel_t) + tf.where(keep, tf.zeros_like(dh_recurrent), dh_recurrent)
            d_direct = [tf.where(keep, new, old) for new, old in zip(d_step, d_direct)]
        return (t - 1, dh_previous, d_direct, d_biases, dx_all.write(t, d_x),
                dh_all.write(t, d_h) if split else dh_all)

    if kind.gates_read_h:  # the last h's gradient reaches it directly, as the gates' does
        dh_recurrent, d_direct = tf.zeros_like(tf.cast(d_last[0], dtype)), d_last
    else:  # it joins the recurrent product's gradient
        dh_recurrent, d_direct = tf.cast(d_last[0], dtype), d_last[1:]
    start = (steps - 1, dh_recurrent, d_direct, [tf.zeros_like(b) for b in biases],
             tf.TensorArray(dtype, size=steps), tf.TensorArray(dtype, size=steps if split else 0))
    _, dh_recurrent, d_direct, d_biases, dx_all, dh_all = tf.while_loop(lambda t, *_: t >= 0, backward, start)
    d_x = _flat(dx_all.stack())
    d_h = _flat(dh_all.stack()) if split else d_x
    d_x_kernel = tf.matmul(inputs, d_x, transpose_a=True)
    d_h_kernel = tf.matmul(_flat(_previous(tf.cast(states[0], dtype), hs)), d_h, transpose_a=True)
    dx = tf.reshape(tf.matmul(d_x, x_kernel, transpose_b=True), tf.shape(x))
    dh0 = tf.cast(dh_recurrent, tf.float32)
    d_states = [dh0 + d_direct[0], *d_direct[1:]] if kind.gates_read_h else [dh0, *d_direct]
    return (dx, d_x_kernel, d_h_kernel, *d_biases, *d_states)


def fused_kernel_applies(layer, mask, training) -> bool:
    """Whether `layer` computes exactly what the fused kernel computes, here and now."""
    cell = layer.cell
    kind = cells.for_cell(cell)
    plain = (kind is not None and kind.fused_class is not None and kind.supports(cell)
             and (mask is None or layer.zero_output_for_mask) and not layer.unroll and cell.use_bias
             and not (training and (cell.dropout or cell.recurrent_dropout)))
    return plain and keras.backend.backend() == "tensorflow" and not _accelerator_present()


def _accelerator_present() -> bool:
    """A GPU (Keras takes cuDNN there) or a TPU strategy (XLA compiles the loop there)."""
    if tf.config.list_logical_devices("GPU"):
        return True
    return tf.distribute.has_strategy() and "TPU" in type(tf.distribute.get_strategy()).__name__


def bidirectional(layer, name: str):
    """Keras's Bidirectional around `layer`, which may be a fused twin. Bidirectional copies its
    layer through the layer's config, and twins are not registered for loading (saved models
    hold Keras's classes): in this scope the twin's name resolves to its class."""
    with keras.saving.custom_object_scope({type(layer).__name__: type(layer)}):
        return keras.layers.Bidirectional(layer, name=name)


class FusedRecurrent:
    """Mixed into a Keras recurrent layer class before it: the layer trains through
    `run_sequence` on a CPU where `fused_kernel_applies` (module docstring)."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not fused_kernel_applies(self, mask, training):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        cell = self.cell
        kind = cells.for_cell(cell)
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        x = tf.transpose(tf.cast(sequences, cell.compute_dtype), [1, 0, 2])
        if mask is not None:
            mask = tf.transpose(tf.cast(mask, tf.bool), [1, 0])
        if self.go_backwards:  # as Keras's loop: the steps run last to first, outputs in that order
            x = tf.reverse(x, [0])
            mask = None if mask is None else tf.reverse(mask, [0])
        outputs, last = run_in_groups(kind, x, states, kind.pack(cell), mask, row_groups(x.shape[1]))
        return (last[0] if mask is None else outputs[-1]), tf.transpose(outputs, [1, 0, 2]), last
