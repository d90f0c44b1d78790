"""`WordTokenizer` as TensorFlow graph ops, for a SavedModel that runs without textgen.

Encoding finds every token with one RE2 `regex_replace` that writes each match as
`separators 0xFE token 0xFF` (two bytes that never occur in UTF-8 text), then splits on
those bytes: RE2 has no findall. Laying out spaces (the spacing rules, pending markers,
paired quotes counted per paragraph) is a recurrence over the tokens, run as one
`tf.scan` step per token position over the whole batch at once. Everything the graph
needs (the vocabulary, each token's spacing class) lives in tables and variables the
module tracks, so `tf.saved_model.save` keeps them.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from textgen.data.tokenizer.spacing import GROUPS, NOSPACE, SPACE, UNK, token_regex
from textgen.data.tokenizer.word import WordTokenizer
from textgen.export.re2_pattern import CODE_POINTS, SURROGATES, Unsupported, space_class, to_re2

__all__ = ["GraphWordTokenizer", "Unsupported"]

_GAP, _END = b"\xfe", b"\xff"  # invalid in UTF-8, so never part of a gap or a token


class GraphWordTokenizer(tf.Module):
    """Encodes seeds and decodes generated ids exactly as `tokenizer` does, in graph ops.

    Raises `Unsupported` when `tokenizer.pattern` uses syntax RE2 cannot run.
    """

    def __init__(self, tokenizer: WordTokenizer, name: str = "word_tokenizer"):
        super().__init__(name=name)
        self.lowercase = bool(tokenizer.lowercase)
        self.lower_fixes = lowercase_fixes() if self.lowercase else ()
        self.token_pattern = to_re2(token_regex(tokenizer.pattern).pattern)
        self.ends_in_space = "(?s).*" + space_class()  # Python's `text[-1:].isspace()`
        _check_compiles(self.token_pattern)
        vocabulary = list(tokenizer.vocabulary)
        self.unk_id, self.space_id, self.nospace_id = (vocabulary.index(t) for t in (UNK, SPACE, NOSPACE))
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(vocabulary), tf.range(len(vocabulary), dtype=tf.int32)),
            default_value=self.unk_id)
        # Per token id: its text, its spacing class, whether it is a newline or a marker.
        constant = dict(trainable=False)
        self.text = tf.Variable(tokenizer._text, dtype=tf.string, **constant, name="text")
        self.before = tf.Variable(tokenizer._before, dtype=tf.bool, **constant, name="space_before")
        self.after = tf.Variable(tokenizer._after, dtype=tf.bool, **constant, name="space_after")
        self.group = tf.Variable(tokenizer._group.astype(np.int32), **constant, name="quote_group")
        self.newline = tf.Variable(tokenizer._newline, dtype=tf.bool, **constant, name="newline")
        self.marker = tf.Variable(tokenizer._marker.astype(np.int32), **constant, name="marker_kind")

    # ------------------------------------------------------------------ text -> ids

    def encode(self, seeds):
        """tf.string (batch,) -> int32 RaggedTensor (batch, None): `encode_lenient(normalise_text(seed))[0]`."""
        text = normalise(seeds)
        if self.lowercase:
            text = lower(text, self.lower_fixes)
        gapped, tokens = self._find_tokens(text)
        ids = tf.ragged.map_flat_values(self.table.lookup, tokens)
        lengths = ids.row_lengths()
        dense, mask = ids.to_tensor(0), tf.sequence_mask(lengths)
        newline = tf.gather(self.newline, dense) & mask
        after_newline = tf.concat([tf.ones_like(newline[:, :1]), newline[:, :-1]], axis=1)
        spaced = gapped.to_tensor(False) & ~newline & ~after_newline
        ruled, _ = self._layout(dense, mask, initial_state(tf.shape(dense)[0]))
        wrong = (spaced != ruled) & mask
        markers = tf.where(wrong, tf.where(spaced, self.space_id, self.nospace_id), -1)
        pairs = tf.reshape(tf.stack([markers, tf.where(mask, dense, -1)], axis=2), [tf.shape(dense)[0], -1])
        return tf.ragged.boolean_mask(pairs, pairs >= 0)

    def _find_tokens(self, text):
        """(whether separators precede each token, the tokens), both ragged (batch, None)."""
        marked = tf.strings.regex_replace(text, self.token_pattern, b"\\1" + _GAP + b"\\2" + _END)
        pieces = tf.strings.split(marked, sep=_END)  # the last piece is what follows the last token
        pieces = tf.RaggedTensor.from_row_lengths(
            tf.gather(pieces.flat_values, _all_but_last(pieces)), pieces.row_lengths() - 1)
        halves = tf.reshape(tf.strings.split(pieces.flat_values, sep=_GAP).flat_values, [-1, 2])
        gapped = pieces.with_flat_values(tf.strings.length(halves[:, 0]) > 0)
        return gapped, pieces.with_flat_values(halves[:, 1])

    # ------------------------------------------------------------------ ids -> text

    def decode(self, seed_ids, seeds, ids):
        """Text of generated `ids` (int32 (batch, length)) after each seed: `decoder(seed_ids, seed).push(ids)`."""
        seed_dense = seed_ids.to_tensor(0)
        batch = tf.shape(seed_dense)[0]
        _, state = self._layout(seed_dense, tf.sequence_mask(seed_ids.row_lengths()), initial_state(batch))
        ids = tf.cast(ids, tf.int32)
        spaced, _ = self._layout(ids, tf.ones_like(ids, dtype=tf.bool), state)
        text = tf.gather(self.text, ids)
        pieces = tf.where(spaced, tf.strings.join([" ", text]), text)
        # Encoding drops the seed's trailing whitespace: the first piece of text must not add a space again.
        after_space = tf.strings.regex_full_match(seeds, self.ends_in_space)
        nonempty = tf.strings.length(pieces) > 0
        first = nonempty & (tf.cumsum(tf.cast(nonempty, tf.int32), axis=1) == 1)
        unspace = first & after_space[:, None] & (tf.strings.substr(pieces, 0, 1) == " ")
        pieces = tf.where(unspace, tf.strings.regex_replace(pieces, "^ ", ""), pieces)
        return tf.strings.reduce_join(pieces, axis=1)

    # ------------------------------------------------------------------ the spacing rules

    def _layout(self, ids, mask, state):
        """(whether a space goes before each token (batch, length), the state after the last), as `_layout`.

        state: (after_newline, space_after, marker, quote parity (batch, GROUPS)), as `Spacing`.
        """
        columns = [tf.gather(table, ids) for table in (self.marker, self.newline, self.before, self.after, self.group)]
        # One padding column, so the scan always has a step to return the final state from.
        steps = [tf.transpose(tf.pad(c, [[0, 0], [0, 1]])) for c in (mask, *columns)]
        spaced = tf.zeros_like(state[0])
        *states, spaced = tf.scan(_step, tuple(steps), initializer=(*state, spaced))
        final = tuple(s[-1] for s in states)
        return tf.transpose(spaced)[:, :-1], final


def _step(carry, column):
    """One token position of every row: whether the token is spaced, and the state after it."""
    after_newline, space_after, marker, parity, _ = carry
    valid, kind, newline, before, after, group = column
    real = valid & (kind == 0)
    newline &= real
    parity = tf.where((newline & after_newline)[:, None], tf.zeros_like(parity), parity)  # a blank line
    in_group = tf.cast(group[:, None] == tf.range(GROUPS), tf.int32)
    opening = tf.reduce_sum(parity * in_group, axis=1) == 0
    quote = group >= 0
    before, after = tf.where(quote, opening, before), tf.where(quote, ~opening, after)
    space = tf.where(marker == 1, True, tf.where(marker == 2, False, space_after & before))
    spaced = real & space & ~newline & ~after_newline
    return (tf.where(real, newline, after_newline), tf.where(real, after, space_after),
            tf.where(real, 0, tf.where(valid & (kind > 0), kind, marker)),
            tf.where(real[:, None], (parity + in_group) % 2, parity), spaced)


def initial_state(batch):
    """`Spacing()` for every row: at the start of a line, nothing pending, no quote open."""
    return (tf.ones([batch], tf.bool), tf.zeros([batch], tf.bool), tf.zeros([batch], tf.int32),
            tf.zeros([batch, GROUPS], tf.int32))


def normalise(seeds):
    """`textgen.data.corpus.normalise_text` in graph ops; bytes that are not UTF-8 become U+FFFD."""
    text = tf.strings.unicode_transcode(seeds, "UTF-8", "UTF-8", errors="replace")
    text = tf.strings.regex_replace(text, "^\ufeff+", "")
    return tf.strings.regex_replace(tf.strings.regex_replace(text, "\r\n", "\n"), "\r", "\n")


def lower(text, fixes):
    """`str.lower` in graph ops: `tf.strings.lower` after `fixes` (see `lowercase_fixes`).

    `tf.strings.lower` stops at a NUL character, so the text is lowered between NULs.
    """
    for upper, lowered in fixes:
        text = tf.strings.regex_replace(text, rf"\x{{{ord(upper):x}}}", lowered)
    pieces = tf.strings.split(text, sep="\0")
    pieces = pieces.with_flat_values(tf.strings.lower(pieces.flat_values, encoding="utf-8") + "\0")
    joined = tf.strings.reduce_join(pieces, axis=-1)  # a NUL as `separator` would read as none
    length = tf.strings.length(joined)
    return tf.strings.substr(joined, tf.zeros_like(length), length - 1)


@functools.cache
def lowercase_fixes() -> tuple[tuple[str, str], ...]:
    """(character, its `str.lower()`) wherever `tf.strings.lower` disagrees with Python.

    TensorFlow's case tables can follow an older Unicode version than Python's (characters
    added later stay upper case there): those characters are lowered first, by replacement.
    """
    characters = [chr(cp) for cp in range(1, CODE_POINTS)
                  if cp != ord("\n") and not SURROGATES[0] <= cp < SURROGATES[1]]
    with tf.init_scope():
        lowered = tf.strings.lower("\n".join(characters), encoding="utf-8").numpy().decode("utf-8").split("\n")
    return tuple((c, c.lower()) for c, low in zip(characters, lowered) if low != c.lower())


def _all_but_last(pieces):
    """Flat positions of every piece but the last of each row."""
    positions = tf.range(pieces.row_splits[-1])
    return tf.boolean_mask(positions, positions < tf.gather(pieces.row_splits[1:], pieces.value_rowids()) - 1)


def _check_compiles(pattern: str):
    with tf.init_scope():
        try:
            tf.strings.regex_full_match(tf.constant([""]), pattern)
        except tf.errors.InvalidArgumentError as exc:
            reason = exc.message.splitlines()[0] if exc.message else "RE2 rejects it"
            raise Unsupported(f"RE2 cannot compile the token pattern: {reason}") from None

