"""Character-level text <-> ids in TensorFlow ops, for graphs that run without textgen.

`graph_tokenizer(tokenizer)` returns the in-graph twin of a textgen tokenizer: a `tf.Module`
with `encode(seeds) -> RaggedTensor of ids` and `decode(seed_ids, seeds, ids) -> strings`,
equal row for row to the Python tokenizer (`encode_lenient` of the seed as the CLI reads it,
and the decoder a generation call uses). Word tokenizers are in textgen.export.word_graph.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from textgen.data.tokenizer import CharTokenizer, Tokenizer


def normalise(seeds):
    """`textgen.data.corpus.normalise_text` in graph ops: no leading byte-order marks, LF line ends."""
    seeds = tf.strings.regex_replace(seeds, "^\ufeff+", "")
    return tf.strings.regex_replace(seeds, "\r\n?", "\n")


class GraphCharTokenizer(tf.Module):
    """One id per code point, looked up in a dense table over code points (as CharTokenizer.lookup)."""

    def __init__(self, tokenizer: CharTokenizer):
        super().__init__(name="char_tokenizer")
        codepoints = np.array([ord(c) for c in tokenizer.vocabulary], np.int32)
        table = np.full(int(codepoints.max()) + 2, -1, np.int32)  # the last entry stands for every larger code point
        table[codepoints] = np.arange(len(codepoints), dtype=np.int32)
        self.codepoints = tf.constant(codepoints)
        self.table = tf.constant(table)

    def encode(self, seeds):
        """tf.string (batch,) -> int32 ids (batch, None); a character outside the vocabulary is an error."""
        chars = tf.strings.unicode_decode(normalise(seeds), "UTF-8", errors="strict")
        last = tf.shape(self.table)[0] - 1
        ids = tf.ragged.map_flat_values(lambda c: tf.gather(self.table, tf.minimum(c, last)), chars)
        known = tf.debugging.assert_non_negative(
            ids.flat_values, message="a seed has a character the model does not know (not in its vocabulary); "
                                     "remove or replace it")
        with tf.control_dependencies([known]):
            return tf.ragged.map_flat_values(tf.identity, ids)

    def decode(self, seed_ids, seeds, ids):
        """int32 ids (batch, length) -> tf.string (batch,); the seed does not change a character's text."""
        return tf.strings.unicode_encode(tf.gather(self.codepoints, ids), "UTF-8")


def graph_tokenizer(tokenizer: Tokenizer) -> tf.Module:
    """The in-graph twin of `tokenizer`; textgen.export.re2_pattern.Unsupported when there is none."""
    if isinstance(tokenizer, CharTokenizer):
        return GraphCharTokenizer(tokenizer)
    from textgen.export.word_graph import GraphWordTokenizer

    return GraphWordTokenizer(tokenizer)
