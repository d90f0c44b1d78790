"""The compiled functions of generation: each calls only the stepper's `step` (textgen.generation.steppers).

`Generator` wraps each in a `tf.function`, traced once per mode, sampler class and penalty
switch. A sampling or beam loop produces up to CHUNK tokens per call for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

CHUNK = 256  # tokens per later call; amortises the call overhead (also the loop's buffer size)
FIRST_CHUNK = 16  # tokens in the first call, so streamed output appears at once
MAX_RANDOM_SEED = 2**63 - 1  # a random seed is one int64 of the stateless generator's key


@dataclass(frozen=True)
class LoopMode:
    """How one compiled function runs: the dtype of the recurrent products, and XLA or not."""

    dtype: tf.DType = tf.float32
    jit: bool = False


@tf.function(input_signature=[tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int32)])
def uniforms(random_seed, offset, batch):
    """(CHUNK, batch) uniform numbers in [0, 1) for the chunk starting at token `offset`.

    TensorFlow's stateless Philox generator keyed by (random seed, offset): the same numbers
    on every device and in every process, inside a graph or not, so a random seed means the
    same text from `textgen generate` and from an exported model (textgen.export). Compiled
    once: eagerly, its few ops cost 2.2 ms a call, which a server drawing for every job and
    chunk feels (0.8 ms compiled).
    """
    return _chunk_uniforms(tf.stack([random_seed, offset]), batch)


@tf.function(input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.int64), tf.TensorSpec([], tf.int32)])
def uniforms_many(random_seeds, offsets, batch):
    """(n, CHUNK, batch): `uniforms(random_seeds[i], offsets[i], batch)` for every i, in one call.

    For a server drawing the tables of many requests at once: each compiled call costs
    about as much as the few numbers it draws.
    """
    keys = tf.stack([random_seeds, offsets], axis=1)
    return tf.map_fn(lambda key: _chunk_uniforms(key, batch), keys,
                     fn_output_signature=tf.TensorSpec([CHUNK, None], tf.float32))


def _chunk_uniforms(key, batch):
    return tf.random.stateless_uniform([CHUNK, batch], seed=key, dtype=tf.float32, alg="philox")


def banned_mask(tokenizer):
    """A (vocab,) bool mask of the tokens never generated (the unknown-word token), or None: the loops' `banned`."""
    if tokenizer.unk_id is None:
        return None
    mask = np.zeros(tokenizer.vocab_size, dtype=bool)
    mask[tokenizer.unk_id] = True
    return tf.constant(mask)


def make_prime(stepper, banned):
    """Feed the first `length` tokens of `prefix` (the seed but its last token) to every row."""
    def prime(states, prefix, length):
        first = states[0][0]  # a zero per row of the batch, with the batch's static shape:
        rows = tf.zeros_like(first[0] if getattr(stepper, "batch_axis", 0) == 1 else first[:, 0], dtype=tf.int32)

        def body(t, states):
            _, states = stepper.step(rows + prefix[t], states)
            return t + 1, states

        _, states = tf.while_loop(lambda t, s: t < length, body, (tf.constant(0), states),
                                  maximum_iterations=tf.shape(prefix)[0])
        return states
    return prime


def make_prime_rows(stepper, banned):
    """Feed row r the first `lengths[r]` tokens of `prefixes[r]`; a row's states stop changing at its length.

    For batches of different seeds (textgen.serve). Every state tensor holds the batch on
    axis 0, as the float32 steppers keep it.
    """
    def prime_rows(states, prefixes, lengths):
        def body(t, states):
            _, new = stepper.step(prefixes[:, t], states)
            live = t < lengths
            return t + 1, tf.nest.map_structure(
                lambda n, o: tf.where(tf.reshape(live, [-1] + [1] * (n.shape.rank - 1)), n, o), new, states)

        _, states = tf.while_loop(lambda t, s: t < tf.reduce_max(lengths), body, (tf.constant(0), states),
                                  maximum_iterations=tf.shape(prefixes)[1])
        return states
    return prime_rows


def make_step(stepper, banned):
    def step(states, last):
        logits, states = stepper.step(last, states)
        return logits, states
    return step


def make_score(stepper, banned):
    def score(states, inputs, targets):
        def body(t, states, total):
            logits, states = stepper.step(inputs[t][None], states)
            return t + 1, states, total + tf.nn.log_softmax(logits)[0, targets[t]]

        _, _, total = tf.while_loop(lambda t, *_: t < tf.shape(inputs)[0], body,
                                    (tf.constant(0), states, tf.constant(0.0)))
        return total
    return score


def make_sample_loop(stepper, banned, sampler, penalised):
    """A chunk of up to CHUNK tokens for a batch: step, penalise, mask, pick; all compiled."""
    def loop(states, last, seen, n, uniforms, penalty, values):
        out = tf.TensorArray(tf.int32, size=CHUNK, element_shape=last.shape)

        def body(t, states, last, seen, out):
            logits, states = stepper.step(last, states)
            if penalised:
                logits = _apply_penalty(logits, seen, penalty)
            if banned is not None:
                logits = tf.where(banned, tf.constant(-np.inf, tf.float32), logits)
            token = sampler.next_token(logits, uniforms[t], values)
            if penalised:
                seen = tf.logical_or(seen, tf.one_hot(token, tf.shape(seen)[1], on_value=True, off_value=False))
            return t + 1, states, token, seen, out.write(t, token)

        _, states, last, seen, out = tf.while_loop(
            lambda t, *_: t < n, body, (tf.constant(0), states, last, seen, out), maximum_iterations=CHUNK)
        return out.stack(), states, last, seen  # tokens (CHUNK, batch); rows past n are unused
    return loop


def make_beam_loop(stepper, banned, sampler):
    """A chunk of beam search: every beam steps, `sampler.next_beams` keeps the best extensions."""
    def loop(states, scores, last, n):
        tokens = tf.TensorArray(tf.int32, size=CHUNK, element_shape=last.shape)
        parents = tf.TensorArray(tf.int32, size=CHUNK, element_shape=last.shape)

        def body(t, states, scores, last, tokens, parents):
            logits, states = stepper.step(last, states)
            log_probs = tf.nn.log_softmax(logits)
            if banned is not None:
                log_probs = tf.where(banned, tf.constant(-np.inf, tf.float32), log_probs)
            parent, token, scores = sampler.next_beams(scores, log_probs)
            states = tf.nest.map_structure(lambda s: tf.gather(s, parent), states)
            return t + 1, states, scores, token, tokens.write(t, token), parents.write(t, parent)

        _, states, scores, last, tokens, parents = tf.while_loop(
            lambda t, *_: t < n, body, (tf.constant(0), states, scores, last, tokens, parents),
            maximum_iterations=CHUNK)
        return tokens.stack(), parents.stack(), states, scores, last
    return loop


def _apply_penalty(logits, seen, penalty):
    """Divide positive logits (multiply negative ones) of tokens already present by `penalty`.

    `penalty` is one number for every row or one per row (batch,).
    """
    penalty = tf.reshape(penalty, [-1, 1])
    penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalised, logits)


def backtrack(tokens: np.ndarray, parents: np.ndarray, beam: int) -> np.ndarray:
    """The token sequence ending in `beam`, following the parent pointers back to the start."""
    ids = np.empty(len(tokens), np.int32)
    for t in range(len(tokens) - 1, -1, -1):
        ids[t] = tokens[t, beam]
        beam = parents[t, beam]
    return ids
