"""Holding a seq2seq decoder to its source's letters (`model.same_letters`).

In restoration tasks (case and punctuation, the bundled `restore` preset) the output is the
source with its case changed and punctuation put in: its letters and digits are the source's,
in order. A decoder that is only trained to do that still drifts: it writes a phrase twice, or
a word the source lacks. `SameLetters` makes it a rule of decoding instead: at every step the
tokens the decoder may write are

- tokens without a letter or digit (punctuation, spaces, a word model's spacing markers),
  anywhere;
- the token whose letters and digits, lower-cased, are the source's next ones;
- END, once the source's letters and digits are all written. Before it come at most
  TAIL_TOKENS letterless tokens (the closing marks: `.`, `?”`); a decoder that, with nothing
  left to copy, keeps writing marks is made to stop there instead of at the length limit.

Tokens are compared by their *key*: their letters and digits, lower-cased ("Mr." and "mr",
"Bingley's" and "bingleys" share one), which works for character and word tokens alike; a word
model's spacing markers and unknown-word token have none. A source token whose key no target
token has cannot be written, and is skipped.

The rule is a mask on the logits, so greedy, sampling and beam search all keep it, and it runs
inside the compiled loops (`textgen.generation.seq2seq`): per row, a table of the source's keys
and a position in it, advanced by every lettered token written. Past the last key the table
holds TAIL_TOKENS times DONE, then ENDS, and every token written there moves the position on:
the position alone says how many closing marks are written, so the loops carry no other state.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from textgen.data.pairs import END, PAD, RESERVED

__all__ = ["FREE", "TAIL_TOKENS", "SameLetters", "token_key", "vocabulary_keys"]

FREE = -1  # the key of a token without letters or digits, and of the reserved marks
DONE = -2  # the key expected once the source's letters are all written: a closing mark or END
ENDS = -3  # the key expected once TAIL_TOKENS closing marks are written: END only
# The most letterless tokens after the last letter. The bundled books' sentences end with at
# most 5 characters of marks after their last letter (`.’”`, `. ...`), nearly all with 1-2.
TAIL_TOKENS = 6


def token_key(token: str) -> str:
    """A token's letters and digits, lower-cased; "" for a token that has none."""
    return "".join(ch for ch in token.lower() if ch.isalnum())


def vocabulary_keys(tokenizer) -> list[str]:
    """The key of every token of a vocabulary; "" for the tokens that stand for no text of their
    own, whatever their spelling: a word model's spacing markers and its unknown-word token."""
    special = {*tokenizer.marker_ids, tokenizer.unk_id}
    return ["" if i in special else token_key(token) for i, token in enumerate(tokenizer.vocabulary)]


class SameLetters:
    """The decoding rule for one pair of tokenizers; its tensors are the keys of both
    vocabularies as numbers (model ids: tokenizer id + RESERVED)."""

    def __init__(self, source_tokenizer, target_tokenizer):
        target_keys = vocabulary_keys(target_tokenizer)
        numbers = {key: n for n, key in enumerate(sorted({key for key in target_keys if key}))}
        self.target_keys = tf.constant([FREE] * RESERVED + [numbers.get(key, FREE) for key in target_keys], tf.int32)
        # A source key no target token has (or none at all) is skipped: FREE here too.
        self.source_keys = tf.constant([FREE] * RESERVED + [numbers.get(key, FREE)
                                                            for key in vocabulary_keys(source_tokenizer)], tf.int32)
        self._is_end = tf.range(tf.shape(self.target_keys)[0]) == END

    def start(self, source_ids, copies: int = 1):
        """(expected, position): expected (rows, S + TAIL_TOKENS + 1) holds each row's lettered
        source keys in order, then TAIL_TOKENS times DONE, then ENDS (and ENDS to the end of the
        row); position (rows,) zeros. Rows repeated `copies` times, as the states."""
        keys = tf.gather(self.source_keys, source_ids)
        rows, columns = tf.shape(keys)[0], tf.shape(keys)[1]
        # The lettered keys first, in order: sort the positions with the FREE ones moved past the end.
        order = tf.argsort(tf.where(keys != FREE, 0, columns) + tf.range(columns)[None, :], axis=1, stable=True)
        ordered = tf.concat([tf.gather(keys, order, batch_dims=1), tf.fill([rows, TAIL_TOKENS + 1], FREE)], axis=1)
        lettered = tf.reduce_sum(tf.cast(keys != FREE, tf.int32), axis=1, keepdims=True)
        column = tf.range(columns + TAIL_TOKENS + 1)[None, :]
        expected = tf.where(column < lettered, ordered, tf.where(column < lettered + TAIL_TOKENS, DONE, ENDS))
        if copies > 1:
            expected = tf.repeat(expected, copies, axis=0)
        return expected, tf.zeros([tf.shape(expected)[0]], tf.int32)

    def allowed(self, expected, position):
        """(rows, vocab) bool: the tokens each row may write next."""
        want = tf.gather(expected, position[:, None], batch_dims=1)  # (rows, 1)
        allowed = ((self.target_keys[None, :] == FREE) & (want != ENDS)) | (self.target_keys[None, :] == want)
        return tf.where(self._is_end[None, :], want <= DONE, allowed)

    def advance(self, expected, position, token):
        """The positions after writing `token` (rows,): one on for a lettered token, and for a
        closing mark once the letters are written (END and the PAD of a finished row stay)."""
        want = tf.gather(expected, position[:, None], batch_dims=1)[:, 0]
        mark = (want == DONE) & (token != END) & (token != PAD)
        return position + tf.cast((tf.gather(self.target_keys, token) != FREE) | mark, tf.int32)

    def mask(self, logits, expected, position):
        """`logits` with the tokens a row may not write at -inf."""
        return tf.where(self.allowed(expected, position), logits, tf.constant(-np.inf, logits.dtype))
