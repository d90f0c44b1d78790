"""`WordTokenizer` as TensorFlow graph ops, for a SavedModel that runs without textgen.

Encoding finds every token with one RE2 `regex_replace` that writes each match as
`separators 0xFE token 0xFF` (two bytes that never occur in UTF-8 text), then splits on
those bytes: RE2 has no findall. Laying out spaces (the spacing rules, pending markers,
paired quotes counted per paragraph) is vectorised as `WordTokenizer._layout` is: cumulative
sums and segment maxima over the tokens of every row at once, no loop per token. Everything
the graph needs (the vocabulary, each token's spacing class) lives in tables and variables the
module tracks, so `tf.saved_model.save` keeps them.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from textgen.data.tokenizer.spacing import GROUPS, NOSPACE, SPACE, UNK, token_regex
from textgen.data.tokenizer.word import WordTokenizer
from textgen.export import graph_text
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
        spacing, constant = tokenizer.spacing_table(), dict(trainable=False)
        self.text = tf.Variable(spacing["text"].tolist(), dtype=tf.string, **constant, name="text")
        self.before = tf.Variable(spacing["before"], dtype=tf.bool, **constant, name="space_before")
        self.after = tf.Variable(spacing["after"], dtype=tf.bool, **constant, name="space_after")
        self.group = tf.Variable(spacing["group"].astype(np.int32), **constant, name="quote_group")
        self.newline = tf.Variable(spacing["newline"], dtype=tf.bool, **constant, name="newline")
        self.marker = tf.Variable(spacing["marker"].astype(np.int32), **constant, name="marker_kind")

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
        """(whether a space goes before each token (batch, length), the state after the last).

        `WordTokenizer._layout` over a batch: `mask` marks the tokens of each row, `state` is
        (after_newline, space_after, marker, quote parity (batch, GROUPS)), as `Spacing`.
        """
        batch, length = tf.shape(ids)[0], tf.shape(ids)[1]
        kind = tf.gather(self.marker, ids)
        real = mask & (kind == 0)
        count = tf.reduce_sum(tf.cast(real, tf.int32), axis=1)  # real tokens per row
        # The real tokens side by side, plus one empty column where the state after the last is read.
        where = tf.ragged.boolean_mask(tf.broadcast_to(tf.range(length), [batch, length]), real)
        where = tf.pad(where.to_tensor(length), [[0, 0], [0, 1]], constant_values=length)
        tokens = tf.gather(tf.pad(ids, [[0, 0], [0, 1]]), where, batch_dims=1)
        present = tf.sequence_mask(count, tf.shape(where)[1])
        newline = tf.gather(self.newline, tokens) & present
        after_newline = tf.concat([state[0][:, None], newline[:, :-1]], axis=1)
        group = tf.where(present, tf.gather(self.group, tokens), -1)
        in_group = tf.cast(group[:, :, None] == tf.range(GROUPS), tf.int32)
        open_before = _quotes_open(in_group, newline & after_newline, state[3])  # (batch, tokens + 1, GROUPS)
        opening = tf.reduce_sum(open_before * in_group, axis=2) % 2 == 0
        quote = group >= 0
        before = tf.where(quote, opening, tf.gather(self.before, tokens))
        after = tf.where(quote, ~opening, tf.gather(self.after, tokens))
        after_previous = tf.concat([state[1][:, None], after[:, :-1]], axis=1)
        marker = _pending_markers(kind, real, mask, state[2])[:, :tf.shape(where)[1]]
        space = tf.where(marker == 1, True, tf.where(marker == 2, False, after_previous & before))
        spaced = space & ~newline & ~after_newline & present
        rank = tf.cumsum(tf.cast(real, tf.int32), axis=1, exclusive=True)  # back to every position
        final = (after_newline, after_previous, marker, open_before % 2)
        return tf.gather(spaced, rank, batch_dims=1) & real, tuple(tf.gather(f, count, batch_dims=1) for f in final)


def _quotes_open(in_group, paragraph, parity):
    """Quotes of each group seen before each token since the paragraph began (plus the state's parity)."""
    earlier = tf.cumsum(in_group, axis=1, exclusive=True)
    breaks = tf.ragged.boolean_mask(earlier, paragraph).to_tensor()  # `earlier` at each blank line
    breaks = tf.pad(breaks, [[0, 0], [0, 1], [0, 0]])
    seen = tf.cumsum(tf.cast(paragraph, tf.int32), axis=1)
    at_break = tf.gather(breaks, tf.maximum(seen - 1, 0), batch_dims=1)
    return tf.where((seen > 0)[:, :, None], earlier - at_break, earlier + parity[:, None, :])


def _pending_markers(kind, real, mask, waiting):
    """The marker in force before each real token, then the one left after the last (batch, length + 1)."""
    batch, length = tf.shape(kind)[0], tf.shape(kind)[1]
    segment = tf.cumsum(tf.cast(real, tf.int32), axis=1, exclusive=True)  # the real token a marker precedes
    segment += tf.range(batch)[:, None] * (length + 1)
    position = tf.where(mask & ~real, tf.range(length)[None, :], -1)
    last = tf.math.unsorted_segment_max(tf.reshape(position, [-1]), tf.reshape(segment, [-1]), batch * (length + 1))
    last = tf.maximum(tf.reshape(last, [batch, length + 1]), -1)  # empty segments give the lowest int
    marker = tf.where(last >= 0, tf.gather(tf.pad(kind, [[0, 0], [0, 1]]), tf.maximum(last, 0), batch_dims=1), 0)
    return tf.concat([tf.where(last[:, :1] >= 0, marker[:, :1], waiting[:, None]), marker[:, 1:]], axis=1)


def initial_state(batch):
    """`Spacing()` for every row: at the start of a line, nothing pending, no quote open."""
    return (tf.ones([batch], tf.bool), tf.zeros([batch], tf.bool), tf.zeros([batch], tf.int32),
            tf.zeros([batch, GROUPS], tf.int32))


def normalise(seeds):
    """The seed as the CLI reads it (`graph_text.normalise`); bytes that are not UTF-8 become U+FFFD.

    The token finder marks tokens with bytes that UTF-8 never holds, so the text must be UTF-8.
    """
    return graph_text.normalise(tf.strings.unicode_transcode(seeds, "UTF-8", "UTF-8", errors="replace"))


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

