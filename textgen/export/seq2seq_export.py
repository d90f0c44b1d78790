"""`textgen export --format saved_model` for a seq2seq model: source strings in, target strings out.

    serving_default(source: string[batch], max_length: int32, temperature: float32,
                    random_seed: int64) -> {"text": string[batch]}
    translate_ids(source_ids: int32[batch, S], max_length, temperature, random_seed)
                    -> {"ids": int32[batch, T]}

`max_length` of 0 or less means each source's own limit, as `Translator.length_limits` chooses
it (twice the source's length + 10, at most the training seq_length + 1). `temperature` 0 is greedy.
`translate_ids` speaks model ids (a tokenizer id + RESERVED, PAD = 0 pads a source row); its
rows hold END where a target ended and PAD after it.

Inside, the graph runs the decoder's own loop (`textgen.generation.seq2seq.make_sample_loop`
over a `Seq2SeqStepper`) with a `TensorSampler`, so greedy output equals
`Translator.translate(method="greedy")`. Sources are sorted by length before the loop, as the
Translator sorts them, and each row draws the uniform numbers the Translator draws for it (a
table per chunk of CHUNK_ROWS sorted sources): sampled output equals the Translator's for the
same random seed. All rows step as one batch: they do not touch each other, so the Translator's
chunks need not be kept. Beam search is not exported.
Both tokenizers run in the graph (textgen.export.graph_text); a word tokenizer whose pattern
RE2 cannot run leaves `translate_ids` as the only signature, and the default one.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from textgen.data.pairs import END, PAD, RESERVED
from textgen.export.graph_text import GraphCharTokenizer, graph_tokenizer
from textgen.export.re2_pattern import Unsupported
from textgen.generation.samplers import TensorSampler
from textgen.generation.seq2seq import CHUNK_ROWS, LENGTH_EXTRA, LENGTH_RATIO, Translator, make_sample_loop

__all__ = ["Seq2SeqModule", "export_seq2seq", "seq2seq_facts"]

OPTIONS = [tf.TensorSpec([], tf.int32, name="max_length"), tf.TensorSpec([], tf.float32, name="temperature"),
           tf.TensorSpec([], tf.int64, name="random_seed")]


class Seq2SeqModule(tf.Module):
    """The exported object of a seq2seq model: `serving_default` (strings) and `translate_ids` (ids)."""

    def __init__(self, model: keras.Model):
        super().__init__(name="textgen_seq2seq")
        translator = Translator(model)  # refuses a language model in one line
        self.model = model  # tracked: the stepper calls the model's own layers, whose variables must be saved
        self.stepper = translator.stepper
        self.seq_length = int(translator.seq_length or 0)
        self.same_letters = translator.letters is not None  # the outputs held to their sources' letters
        self.source_vocab = translator.source_tokenizer.vocab_size + RESERVED
        self.source_tokens = self.target_tokens = None
        self.unsupported = None  # why strings cannot go in and out, or None
        try:
            self.source_tokens = graph_tokenizer(translator.source_tokenizer)
            self.target_tokens = graph_tokenizer(translator.target_tokenizer)
        except Unsupported as exc:
            self.source_tokens = self.target_tokens = None
            self.unsupported = str(exc)
        self._loop = tf.function(make_sample_loop(self.stepper, translator.banned, TensorSampler(), False,
                                                     translator.letters))
        if self.source_tokens is not None:
            self.text = tf.function(self._text, input_signature=[tf.TensorSpec([None], tf.string, name="source"),
                                                                 *OPTIONS])
        self.ids = tf.function(self._ids, input_signature=[tf.TensorSpec([None, None], tf.int32, name="source_ids"),
                                                           *OPTIONS])

    def signatures(self) -> dict:
        ids = self.ids.get_concrete_function()
        if self.source_tokens is None:
            return {"serving_default": ids, "translate_ids": ids}
        return {"serving_default": self.text.get_concrete_function(), "translate_ids": ids}

    # ------------------------------------------------------------------ signatures

    def _text(self, source, max_length, temperature, random_seed):
        ids = tf.ragged.map_flat_values(lambda i: i + RESERVED, self.source_tokens.encode(source))
        tokens = self._translate(ids.to_tensor(PAD), tf.cast(ids.row_lengths(), tf.int32), max_length, temperature,
                                 random_seed)
        return {"text": self._detokenize(tokens)}

    def _ids(self, source_ids, max_length, temperature, random_seed):
        checks = [tf.debugging.assert_non_negative(source_ids, message="a source id is negative"),
                  tf.debugging.assert_less(source_ids, self.source_vocab,
                                           message="a source id is past the source vocabulary (+ RESERVED)")]
        with tf.control_dependencies(checks):
            lengths = tf.reduce_sum(tf.cast(source_ids != PAD, tf.int32), axis=1)
            return {"ids": self._translate(tf.identity(source_ids), lengths, max_length, temperature, random_seed)}

    # ------------------------------------------------------------------ the loop

    def _translate(self, source_ids, lengths, max_length, temperature, random_seed):
        """(batch, steps) model ids: each row's target, END where it ended, PAD after."""
        rows = tf.shape(source_ids)[0]
        checks = [tf.debugging.assert_greater(rows, 0, message="give at least one source"),
                  tf.debugging.assert_non_negative(random_seed, message="random_seed must be 0 or more")]
        with tf.control_dependencies(checks):
            # At least one column, as Translator's pad_rows gives an empty source one PAD to read.
            source_ids = tf.pad(source_ids, [[0, 0], [0, tf.maximum(1 - tf.shape(source_ids)[1], 0)]])
            random_seed, lengths = tf.identity(random_seed), tf.identity(lengths)
        default = LENGTH_RATIO * lengths + LENGTH_EXTRA
        if self.seq_length:
            default = tf.minimum(default, self.seq_length + 1)
        limits = tf.where(max_length > 0, tf.fill([rows], max_length), default)
        order = tf.argsort(lengths, stable=True)  # the Translator's order, which its chunks slice
        uniforms = chunk_uniforms(random_seed, tf.reduce_max(limits), rows)
        values = {"temperature": temperature, "top_k": tf.constant(0), "top_p": tf.constant(1.0)}
        tokens, _ = self._loop(tf.gather(source_ids, order), tf.gather(limits, order), uniforms, values)
        return tf.gather(tf.transpose(tokens), tf.argsort(order))  # back to the callers' order

    def _detokenize(self, tokens):
        """Strings of (batch, steps) model ids: the tokens before END, through the target tokenizer."""
        keep = (tf.cumsum(tf.cast(tokens == END, tf.int32), axis=1) == 0) & (tokens >= RESERVED)
        if isinstance(self.target_tokens, GraphCharTokenizer):
            return self.target_tokens.decode(None, None, tf.ragged.boolean_mask(tokens - RESERVED, keep))
        # A word decoder lays spaces out over every column: the unused ones hold a no-space marker,
        # which adds no text and, after the last word, moves no space.
        ids = tf.where(keep, tokens - RESERVED, self.target_tokens.nospace_id)
        batch = tf.shape(ids)[0]
        empty = tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int32), tf.zeros([batch], tf.int64))
        return self.target_tokens.decode(empty, tf.fill([batch], ""), ids)


def chunk_uniforms(random_seed, steps, rows):
    """(steps, rows) float32: the uniform numbers `Translator.translate` draws for `rows` sources sorted
    by length: chunk c of CHUNK_ROWS of them draws its own table, keyed (random_seed, c) with Philox."""
    chunks = (rows + CHUNK_ROWS - 1) // CHUNK_ROWS

    def table(c):
        width = tf.minimum(CHUNK_ROWS, rows - c * CHUNK_ROWS)
        key = tf.stack([random_seed, tf.cast(c, tf.int64)])  # as the Translator keys chunk c
        drawn = tf.random.stateless_uniform(tf.stack([steps, width]), seed=key, alg="philox")
        return tf.pad(drawn, [[0, 0], [0, CHUNK_ROWS - width]])

    tables = tf.map_fn(table, tf.range(chunks), fn_output_signature=tf.TensorSpec([None, CHUNK_ROWS], tf.float32))
    row = tf.range(rows)
    return tf.transpose(tf.gather_nd(tf.transpose(tables, [0, 2, 1]), tf.stack([row // CHUNK_ROWS,
                                                                                 row % CHUNK_ROWS], axis=1)))


def seq2seq_facts(module: Seq2SeqModule) -> dict:
    """What assets.extra/textgen.json says of a seq2seq export, beside the common entries."""
    parts = module.stepper.parts
    return {"kind": "seq2seq",
            "signatures": {"serving_default": "text" if module.source_tokens is not None else "ids",
                           "translate_ids": "ids"},
            "strings_in_graph": module.source_tokens is not None, "unsupported": module.unsupported,
            "tokenizer": parts.source_embedding.tokenizer, "target_tokenizer": parts.target_embedding.tokenizer,
            "model_card": parts.source_embedding.model_card, "reserved_ids": {"PAD": PAD, "END": END,
                                                                               "RESERVED": RESERVED},
            "same_letters": module.same_letters, "labels": None}


def export_seq2seq(model: keras.Model, output: str | Path) -> dict:
    """Write the SavedModel folder `output` (which must not exist) of a seq2seq model, all or nothing."""
    from textgen.export.saved_model import write_saved_model

    module = Seq2SeqModule(model)
    return write_saved_model(module, module.signatures(), {**seq2seq_facts(module), "xla": False}, output)
