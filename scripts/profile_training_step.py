"""Where one training step of the course network spends its time, each part timed alone.

bench_limits.py finds textgen's training short of the large-product peak while the step's
products, run alone, come much closer: this script shows where the rest goes. The network
is the one of bench_limits.py and bench_train.py, Embedding(65, 256) -> LSTM(512) ->
Dense(65), batch 64 x seq 40, built by textgen's own builder with the fused CPU kernels, in
the precision textgen trains in on this CPU (mixed_bfloat16 with native bfloat16 units,
else float32). Timed, each as its own compiled function, best of three rounds:

  step          forward, backward and Adam (what `textgen train` runs per batch)
  parts         the forward pass; forward and backward; the LSTM forward, and forward and
                backward; the fused kernel's loops forward and backward, in one group of
                rows and in the layer's one group per core (fused_rnn.row_groups); the head
                and loss forward and backward; Adam's update alone
  per time step the LSTM's recurrent product (64 x 512 @ 512 x 2048) and its element-wise
                gate work (textgen.models.fused_rnn's forward step), each in a loop of 40

The products of the LSTM are also counted at the rate bench_limits.py measures for them,
so the element-wise share is what remains.

Usage: python scripts/profile_training_step.py [--rounds 3]
Run it on an otherwise idle machine (see `uptime`).
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
import tensorflow as tf

from bench_generate import best_time
from bench_train import BATCH, CORPUS, EMBED, SEQ, UNITS, load
from textgen.config.loading import load_config
from textgen.data.corpus import stream_corpus
from textgen.data.tokenizer.char import CharTokenizer
from textgen.models import cells, fused_rnn
from textgen.models.builder import build_model, recurrent_layers
from textgen.training.distribute import cpu_has_native_bf16, cpu_model


def best_ms(function, rounds: int, calls: int = 30) -> float:
    """Milliseconds per call of `function`: rounds of `calls` calls, the best of `rounds` after a
    warm-up round (bench_generate.best_time)."""
    def round_of_calls():
        for _ in range(calls):
            result = function()
        float(tf.reduce_sum(tf.cast(tf.nest.flatten(result)[0], tf.float32)))  # wait for the last call

    return best_time(round_of_calls, rounds) / calls * 1000


def step_functions(model, dtype) -> dict:
    """The step and its parts, each a tf.function over fixed random batches."""
    vocab = model.output_shape[-1]
    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(0, vocab, (BATCH, SEQ)), tf.int32)
    y = tf.constant(rng.integers(0, vocab, (BATCH, SEQ)), tf.int32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.Adam(0.002)
    optimizer.build(model.trainable_variables)
    lstm, head = recurrent_layers(model)[0], model.get_layer("logits")
    embedded = tf.cast(tf.random.normal([BATCH, SEQ, EMBED]), dtype)
    hidden = tf.cast(tf.random.normal([BATCH, SEQ, UNITS]), dtype)
    zeros = [tf.zeros_like(v) for v in model.trainable_variables]
    kind, time_major = cells.get("lstm"), tf.transpose(embedded, [1, 0, 2])
    states = [tf.zeros([BATCH, UNITS]), tf.zeros([BATCH, UNITS])]

    def gradients(loss_of, sources):
        with tf.GradientTape() as tape:
            if isinstance(sources[0], tf.Tensor):  # an input; variables are watched already
                tape.watch(sources[0])
            loss = loss_of()
        return tape.gradient(loss, sources)

    def step():
        grads = gradients(lambda: loss_fn(y, model(x, training=True)), model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return grads[0]

    def loops(groups):
        """The fused kernel's loops over the batch in `groups` groups of rows (the layer takes
        fused_rnn.row_groups: one loop per core)."""
        outputs, _ = fused_rnn.run_in_groups(kind, time_major, states, kind.pack(lstm.cell), None, groups)
        return tf.reduce_sum(tf.cast(outputs, tf.float32)) * 1e-3

    def adam():
        optimizer.apply_gradients(zip(zeros, model.trainable_variables))
        return optimizer.iterations

    parts = {
        "step: forward, backward, Adam": step,
        "forward": lambda: loss_fn(y, model(x, training=True)),
        "forward and backward": lambda: gradients(lambda: loss_fn(y, model(x, training=True)),
                                                  model.trainable_variables),
        "LSTM forward": lambda: lstm(embedded, training=True),
        "LSTM forward and backward": lambda: gradients(
            lambda: tf.reduce_sum(tf.cast(lstm(embedded, training=True), tf.float32)) * 1e-3,
            [embedded, *lstm.trainable_variables]),
        **{f"LSTM loops forward and backward, {groups} group{'s' * (groups > 1)} of rows": (
            lambda groups=groups: gradients(lambda: loops(groups), [time_major, *lstm.trainable_variables]))
           for groups in sorted({1, fused_rnn.row_groups(BATCH)})},
        "head and loss, forward and backward": lambda: gradients(lambda: loss_fn(y, head(hidden)),
                                                                 [hidden, *head.trainable_variables]),
        "Adam's update": adam,
    }
    return {name: tf.function(function, autograph=False) for name, function in parts.items()}


def time_step_functions(dtype) -> dict:
    """One LSTM time step's recurrent product and its element-wise gate work, each 40 times in a loop."""
    kind = cells.get("lstm")
    forward_step = fused_rnn._for_dtype(dtype, *fused_rnn._steps(kind))[0]
    h = tf.cast(tf.random.normal([BATCH, UNITS]), dtype)
    kernel = tf.cast(tf.random.normal([UNITS, 4 * UNITS]), dtype)
    projected = tf.cast(tf.random.normal([BATCH, 4 * UNITS]), dtype)
    bias, states = tf.zeros([4 * UNITS]), [tf.zeros([BATCH, UNITS]), tf.zeros([BATCH, UNITS])]

    def product():
        return tf.while_loop(lambda t, _: t < SEQ, lambda t, total: (t + 1, total + tf.cast(
            tf.matmul(h, kernel)[0, 0], tf.float32)), (0, 0.0))[1]

    def gates():
        def body(t, states, total):
            states, h_low, saved = forward_step(projected, projected, bias, None, states)
            return t + 1, states, total + tf.cast(h_low[0, 0], tf.float32) + saved[0, 0]
        return tf.while_loop(lambda t, *_: t < SEQ, body, (0, states, 0.0))[2]

    return {"recurrent product": tf.function(product, autograph=False),
            "element-wise gate work": tf.function(gates, autograph=False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per part; the best counts")
    args = parser.parse_args()
    native = cpu_has_native_bf16()
    policy = "mixed_bfloat16" if native else "float32"
    keras.mixed_precision.set_global_policy(policy)  # a script's process: the precision textgen trains in here
    dtype = tf.bfloat16 if native else tf.float32
    print(f"CPU: {cpu_model()}; {policy}; TensorFlow {tf.__version__}; load {load():.2f}")
    tokenizer = CharTokenizer.fit("".join(stream_corpus([str(CORPUS)])))
    config = load_config(None, [f"model.embedding_dim={EMBED}", f"model.units={UNITS}"])
    model = build_model(config.model, tokenizer.get_config(), fused_kernels=True)

    times = {name: best_ms(function, args.rounds) for name, function in step_functions(model, dtype).items()}
    step = times["step: forward, backward, Adam"]
    print(f"\n{'part of a training step (batch 64 x 40)':52s} {'ms':>8s} {'of the step':>12s}")
    for name, ms in times.items():
        print(f"{name:52s} {ms:8.2f} {ms / step:12.0%}")
    print(f"\n{'one LSTM time step, forward (batch 64)':52s} {'us':>8s}")
    for name, function in time_step_functions(dtype).items():
        print(f"{name:52s} {best_ms(function, args.rounds, calls=10) / SEQ * 1000:8.0f}")
    print(f"\nload average {load():.2f} after")


if __name__ == "__main__":
    main()
