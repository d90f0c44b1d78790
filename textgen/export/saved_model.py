"""`textgen export --format saved_model`: the model, its tokenizer and the sampling loop as one graph.

The SavedModel's `serving_default` signature takes strings and returns strings:

    serving_default(seed: string[batch], length: int32, temperature: float32, top_k: int32,
                    top_p: float32, random_seed: int64) -> {"text": string[batch]}

and `generate_ids` takes and returns token ids, for apps that tokenize themselves (and for
word models whose tokenizer has no in-graph twin, where it is the default signature).

Inside, the graph runs what `textgen generate` runs, with the same pieces: the model's
float32 stepper (textgen.generation.steppers), the compiled chunk loops of
textgen.generation.loops with a `TensorSampler` (the strategy chosen by the call's values),
the same uniform numbers for a random seed, and the tokenizer's in-graph twin
(textgen.export.graph_text). So greedy output equals `textgen generate --temperature 0`,
and sampled output equals it for the same random seed where the CLI samples in float32.
With `xla` (the default) the seed and chunk loops are compiled with XLA, as the CLI does:
a single sample is about twice as fast, and TensorFlow Serving needs
`--xla_cpu_compilation_enabled=true` to run them (docs/deploy.md).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import keras
import tensorflow as tf

from textgen.export.graph_text import graph_tokenizer
from textgen.export.re2_pattern import Unsupported
from textgen.generation import loops
from textgen.generation.generate import Generator, banned_mask
from textgen.generation.samplers import TensorSampler
from textgen.generation.steppers import RecurrentStepper
from textgen.models.layers import find_token_embedding
from textgen.files import publish_directory

EXPORT_VERSION = 1  # the layout of assets.extra/textgen.json
OPTIONS = [tf.TensorSpec([], tf.int32, name="length"), tf.TensorSpec([], tf.float32, name="temperature"),
           tf.TensorSpec([], tf.int32, name="top_k"), tf.TensorSpec([], tf.float32, name="top_p"),
           tf.TensorSpec([], tf.int64, name="random_seed")]


class GenerationModule(tf.Module):
    """The exported object: signatures `serving_default` (strings) and `generate_ids` (ids).

    Args:
        model: a textgen model (loaded from its .keras file).
        xla: compile the seed and chunk loops with XLA.
    """

    def __init__(self, model: keras.Model, xla: bool = True):
        super().__init__(name="textgen")
        generator = Generator(model)
        self.stepper = generator.stepper
        if not isinstance(self.stepper, RecurrentStepper):  # that one holds its own copy of the weights
            self.model = model  # tracked, so the variables of the steppers that call Keras layers are saved
        self.embedding = find_token_embedding(model)
        self.vocab_size = generator.tokenizer.vocab_size
        self.tokens = None
        self.unsupported = None  # why strings cannot go in and out, or None
        try:
            self.tokens = graph_tokenizer(generator.tokenizer)
        except Unsupported as exc:  # a custom word pattern RE2 cannot run: ids in and out
            self.unsupported = str(exc)
        banned = banned_mask(generator.tokenizer)
        self._prime_loop = tf.function(loops.make_prime(self.stepper, banned), jit_compile=xla)
        self._chunk_loop = tf.function(loops.make_sample_loop(self.stepper, banned, TensorSampler(), False),
                                       jit_compile=xla)
        if self.tokens is not None:  # saving traces every function the module holds
            self.text = tf.function(self._text, input_signature=[tf.TensorSpec([None], tf.string, name="seed"),
                                                                 *OPTIONS])
        self.ids = tf.function(self._ids, input_signature=[tf.TensorSpec([None, None], tf.int32, name="seed_ids"),
                                                           *OPTIONS])

    def signatures(self) -> dict:
        ids = self.ids.get_concrete_function()
        if self.tokens is None:
            return {"serving_default": ids, "generate_ids": ids}
        return {"serving_default": self.text.get_concrete_function(), "generate_ids": ids}

    # ------------------------------------------------------------------ signatures

    def _text(self, seed, length, temperature, top_k, top_p, random_seed):
        seed_ids = self.tokens.encode(seed)
        generated = self._generate(seed_ids, length, temperature, top_k, top_p, random_seed)
        return {"text": self.tokens.decode(seed_ids, seed, generated)}

    def _ids(self, seed_ids, length, temperature, top_k, top_p, random_seed):
        ragged = tf.RaggedTensor.from_tensor(seed_ids)
        in_range = tf.debugging.assert_less(seed_ids, self.vocab_size, message="a seed id is past the vocabulary")
        checks = [in_range, tf.debugging.assert_non_negative(seed_ids, message="a seed id is negative")]
        with tf.control_dependencies(checks):
            return {"ids": self._generate(ragged, length, temperature, top_k, top_p, random_seed)}

    # ------------------------------------------------------------------ the loop

    def _generate(self, seed_ids, length, temperature, top_k, top_p, random_seed):
        """int32 ids (batch, length) continuing each row of `seed_ids` (ragged).

        Rows with the same seed (the usual way to ask for several samples) run as one batch
        from one pass over the seed, as in `textgen generate --num-samples`; different seeds
        run one after another, each drawing its own column of the same uniform numbers.
        """
        checks = [tf.debugging.assert_non_negative(length, message="length must be 0 or more"),
                  tf.debugging.assert_non_negative(random_seed, message="random_seed must be 0 or more"),
                  tf.debugging.assert_greater(tf.shape(seed_ids.row_splits)[0], 1, message="give at least one seed"),
                  tf.debugging.assert_greater(seed_ids.row_lengths(), tf.constant(0, seed_ids.row_splits.dtype),
                                              message="a seed has no tokens the model can read; give at least one "
                                                      "character of text to start from")]
        values = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        with tf.control_dependencies(checks):  # everything below waits for the checks, the branches too
            batch = seed_ids.nrows(out_type=tf.int32)
            lengths = tf.identity(seed_ids.row_lengths())
            dense = tf.identity(seed_ids.to_tensor())
            same = tf.logical_and(tf.reduce_all(tf.equal(lengths, lengths[0])),
                                  tf.reduce_all(tf.equal(dense, dense[:1])))

        def together():
            return self._sample(dense[0][:lengths[0]], batch, tf.range(batch), batch, length, values, random_seed)

        def one_by_one():
            def row(i):
                return self._sample(seed_ids[i], 1, i[None], batch, length, values, random_seed)[0]
            return tf.map_fn(row, tf.range(batch), fn_output_signature=tf.TensorSpec([None], tf.int32))

        return tf.cond(same, together, one_by_one)

    def _sample(self, seed, rows, columns, batch, length, values, random_seed):
        """(rows, length) ids after one `seed` (ids); row r draws column columns[r] of each chunk's
        uniforms for the whole call's `batch` of rows."""
        states = self._tile(self._prime(seed), rows)
        last = tf.fill([rows], seed[-1])
        seen = tf.zeros([rows, 0], tf.bool)  # the repetition penalty is not part of the signature
        penalty = tf.constant(1.0)
        chunks = tf.TensorArray(tf.int32, size=0, dynamic_size=True, infer_shape=False, element_shape=[None, None])

        def body(i, produced, states, last, chunks):
            n = tf.minimum(tf.where(produced == 0, loops.FIRST_CHUNK, loops.CHUNK), length - produced)
            uniforms = tf.gather(loops.uniforms(random_seed, tf.cast(produced, tf.int64), batch), columns, axis=1)
            tokens, states, last, _ = self._chunk_loop(states, last, seen, n, uniforms, penalty, values)
            return i + 1, produced + n, states, last, chunks.write(i, tokens[:n])

        def any_rows(tensor):  # the chunk loop's outputs do not keep a batch of 1 static
            return tf.TensorShape([None, *tensor.shape[1:]])

        invariants = (tf.TensorShape([]), tf.TensorShape([]), tf.nest.map_structure(any_rows, states),
                      any_rows(last), tf.TensorShape([]))  # a TensorArray: its flow is a scalar
        _, _, _, _, chunks = tf.while_loop(lambda i, produced, *_: produced < length, body,
                                           (tf.constant(0), tf.constant(0), states, last, chunks),
                                           shape_invariants=invariants)
        return tf.cond(length > 0, lambda: tf.transpose(chunks.concat()), lambda: tf.zeros([rows, 0], tf.int32))

    def _prime(self, seed):
        """The states after all but the last token of `seed`, for one row (padded as Generator._prime pads)."""
        n = tf.shape(seed)[0] - 1
        size = tf.while_loop(lambda s: s < n, lambda s: [s * 2], [tf.constant(64)])[0]
        prefix = tf.pad(seed[:-1], [[0, size - n]])
        return self._prime_loop(self.stepper.initial_states(1), prefix, n)

    def _tile(self, states, rows):
        if hasattr(self.stepper, "tile_states"):
            return self.stepper.tile_states(states, rows)
        return tf.nest.map_structure(lambda s: tf.repeat(s, rows, axis=0), states)


def export_saved_model(model: keras.Model, output: str | Path, xla: bool = True) -> dict:
    """Write the SavedModel folder `output` (which must not exist) and return facts about it.

    All or nothing: the folder is written under a temporary name beside `output` and renamed
    into place. `assets.extra/textgen.json` holds the model card, the tokenizer's config and
    what the signatures take.
    """
    output = Path(output)
    module = GenerationModule(model, xla=xla)
    embedding = module.embedding
    facts = {"format": "saved_model", "export_version": EXPORT_VERSION, "xla": xla,
             "signatures": {"serving_default": "text" if module.tokens is not None else "ids",
                            "generate_ids": "ids"},
             "strings_in_graph": module.tokens is not None, "unsupported": module.unsupported,
             "tokenizer": embedding.tokenizer, "model_card": embedding.model_card}

    def write(folder: Path) -> None:
        try:
            tf.saved_model.save(module, str(folder), signatures=module.signatures())
        except tf.errors.OpError as exc:  # TensorFlow's file writes fail with its own errors, not OSError
            full = "No space left" in exc.message or "Disk quota" in exc.message
            raise OSError(errno.ENOSPC if full else errno.EIO, exc.message.splitlines()[0]) from None
        extra = folder / "assets.extra"
        extra.mkdir()
        (extra / "textgen.json").write_text(json.dumps(facts, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    publish_directory(output, write)
    return {"path": str(output), "bytes": folder_bytes(output), **{k: facts[k] for k in
            ("format", "xla", "signatures", "strings_in_graph", "unsupported")}}


def folder_bytes(folder: Path) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)
