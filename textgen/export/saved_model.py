"""`textgen export --format saved_model`: the model, its tokenizer and the sampling loop as one graph.

The SavedModel's `serving_default` signature takes strings and returns strings:

    serving_default(seed: string[batch], length: int32, temperature: float32, top_k: int32,
                    top_p: float32, random_seed: int64) -> {"text": string[batch]}

and `generate_ids` takes and returns token ids, for apps that tokenize themselves (and for
word models whose tokenizer has no in-graph twin, where it is the default signature).

A conditioned model's signatures take one more input after the seed, `label_weights:
float32[batch or 1, labels]`: each row's weight on every label of every group, flat in the
order of textgen.labels (`LabelSpace.mix`), each group's weights summing to 1. The groups
and their labels are in assets.extra/textgen.json, so a client builds the rows without
textgen; the rows' label vectors (weights @ the label embedding) start the stepper's
states as `Generator.label_vectors` starts them. Unconditioned models' signatures are
unchanged.

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
from textgen.generation.generate import Generator
from textgen.generation.loops import banned_mask
from textgen.generation.samplers import TensorSampler
from textgen.generation.steppers import RecurrentStepper
from textgen.labels import ANY, LabelSpace
from textgen.models.architecture import model_kind
from textgen.models.layers import find_label_embedding, find_token_embedding
from textgen.files import publish_directory

EXPORT_VERSION = 1  # the layout of assets.extra/textgen.json
OPTIONS = [tf.TensorSpec([], tf.int32, name="length"), tf.TensorSpec([], tf.float32, name="temperature"),
           tf.TensorSpec([], tf.int32, name="top_k"), tf.TensorSpec([], tf.float32, name="top_p"),
           tf.TensorSpec([], tf.int64, name="random_seed")]
GROUP_SUM_TOLERANCE = 1e-3  # float32 rounding of weights a client scaled to sum to 1


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
        self.label_space: LabelSpace | None = generator.label_space
        self.label_table = None  # (all labels, embedding_dim) float32: the label embedding's rows
        if self.label_space is not None:
            self.label_table = tf.constant(find_label_embedding(model).embeddings.numpy().astype("float32"))
        banned = banned_mask(generator.tokenizer)
        self._prime_loop = tf.function(loops.make_prime(self.stepper, banned), jit_compile=xla)
        self._chunk_loop = tf.function(loops.make_sample_loop(self.stepper, banned, TensorSampler(), False),
                                       jit_compile=xla)
        labelled = self.label_space is not None
        # A conditioned model's signatures take label_weights after the seed; the two entry
        # points differ only in that argument, as named inputs of a signature must be parameters.
        labels = [tf.TensorSpec([None, self.label_space.size], tf.float32, name="label_weights")] if labelled else []
        if self.tokens is not None:  # saving traces every function the module holds
            self.text = tf.function(self._text_labelled if labelled else self._text,
                                    input_signature=[tf.TensorSpec([None], tf.string, name="seed"), *labels, *OPTIONS])
        self.ids = tf.function(self._ids_labelled if labelled else self._ids,
                               input_signature=[tf.TensorSpec([None, None], tf.int32, name="seed_ids"), *labels,
                                                *OPTIONS])

    def signatures(self) -> dict:
        ids = self.ids.get_concrete_function()
        if self.tokens is None:
            return {"serving_default": ids, "generate_ids": ids}
        return {"serving_default": self.text.get_concrete_function(), "generate_ids": ids}

    # ------------------------------------------------------------------ signatures

    def _text(self, seed, length, temperature, top_k, top_p, random_seed, label_weights=None):
        seed_ids = self.tokens.encode(seed)
        vectors = None if label_weights is None else self._label_vectors(label_weights, tf.shape(seed)[0])
        generated = self._generate(seed_ids, length, temperature, top_k, top_p, random_seed, vectors)
        return {"text": self.tokens.decode(seed_ids, seed, generated)}

    def _text_labelled(self, seed, label_weights, length, temperature, top_k, top_p, random_seed):
        return self._text(seed, length, temperature, top_k, top_p, random_seed, label_weights)

    def _ids(self, seed_ids, length, temperature, top_k, top_p, random_seed, label_weights=None):
        ragged = tf.RaggedTensor.from_tensor(seed_ids)
        in_range = tf.debugging.assert_less(seed_ids, self.vocab_size, message="a seed id is past the vocabulary")
        checks = [in_range, tf.debugging.assert_non_negative(seed_ids, message="a seed id is negative")]
        with tf.control_dependencies(checks):
            vectors = None if label_weights is None else self._label_vectors(label_weights, tf.shape(seed_ids)[0])
            return {"ids": self._generate(ragged, length, temperature, top_k, top_p, random_seed, vectors)}

    def _ids_labelled(self, seed_ids, label_weights, length, temperature, top_k, top_p, random_seed):
        return self._ids(seed_ids, length, temperature, top_k, top_p, random_seed, label_weights)

    def _label_vectors(self, label_weights, batch):
        """(batch, embedding_dim) label vectors of the weight rows, one per seed or one for all, once
        they are known to be weights: none negative, each group's summing to 1."""
        rows = tf.shape(label_weights)[0]
        sums = tf.stack([tf.reduce_sum(label_weights[:, start:start + len(group.labels)], axis=1)
                         for start, group in zip(self.label_space.offsets(), self.label_space.groups)], axis=1)
        checks = [tf.debugging.assert_equal(tf.logical_or(tf.equal(rows, batch), tf.equal(rows, 1)), True,
                                            message="label_weights needs one row per seed, or one row for all"),
                  tf.debugging.assert_non_negative(label_weights, message="a label weight is negative"),
                  tf.debugging.assert_less_equal(tf.abs(sums - 1.0), GROUP_SUM_TOLERANCE,
                                                 message="the weights of each label group must sum to 1; a "
                                                         f"group you do not choose takes weight 1 on {ANY}, its "
                                                         "first label")]
        with tf.control_dependencies(checks):
            weights = tf.broadcast_to(label_weights, [batch, self.label_space.size])
            return tf.matmul(weights, self.label_table)  # as LabelEmbedding.mix computes them

    # ------------------------------------------------------------------ the loop

    def _generate(self, seed_ids, length, temperature, top_k, top_p, random_seed, vectors=None):
        """int32 ids (batch, length) continuing each row of `seed_ids` (ragged), each row under its
        label vector of `vectors` (batch, embedding_dim) in a conditioned model.

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
            return self._sample(dense[0][:lengths[0]], batch, tf.range(batch), batch, length, values, random_seed,
                                vectors)

        def one_by_one():
            def row(i):
                mine = None if vectors is None else vectors[i:i + 1]
                return self._sample(seed_ids[i], 1, i[None], batch, length, values, random_seed, mine)[0]
            return tf.map_fn(row, tf.range(batch), fn_output_signature=tf.TensorSpec([None], tf.int32))

        return tf.cond(same, together, one_by_one)

    def _sample(self, seed, rows, columns, batch, length, values, random_seed, vectors=None):
        """(rows, length) ids after one `seed` (ids); row r draws column columns[r] of each chunk's
        uniforms for the whole call's `batch` of rows and starts from its label vector in `vectors`."""
        states = self._start(seed, rows, vectors)
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

    def _start(self, seed, rows, vectors):
        """The states of `rows` rows after `seed`. As Generator._start does: the seed runs once when
        every row has the same label (or there are none), else once per row under its label."""
        if vectors is None:
            return self._tile(self._prime(seed), rows)
        alike = tf.reduce_all(tf.equal(vectors, vectors[:1]))
        primed = tf.where(alike, 1, rows)
        return self._tile(self._prime(seed, vectors[:primed]), rows // primed)

    def _prime(self, seed, vectors=None):
        """The states after all but the last token of `seed` (padded as Generator._prime pads), for
        one row, or one row per label vector."""
        n = tf.shape(seed)[0] - 1
        size = tf.while_loop(lambda s: s < n, lambda s: [s * 2], [tf.constant(64)])[0]
        prefix = tf.pad(seed[:-1], [[0, size - n]])
        rows = 1 if vectors is None else tf.shape(vectors)[0]
        return self._prime_loop(self.stepper.initial_states(rows, vectors), prefix, n)

    def _tile(self, states, rows):
        if hasattr(self.stepper, "tile_states"):
            return self.stepper.tile_states(states, rows)
        return tf.nest.map_structure(lambda s: tf.repeat(s, rows, axis=0), states)


def export_saved_model(model: keras.Model, output: str | Path, xla: bool = True) -> dict:
    """Write the SavedModel folder `output` (which must not exist) and return facts about it.

    All or nothing: the folder is written under a temporary name beside `output` and renamed
    into place. `assets.extra/textgen.json` holds the model card, the tokenizer's config and
    what the signatures take. A seq2seq model's folder is textgen.export.seq2seq_export's
    (its loop runs without XLA, as textgen's own seq2seq decoding does: `xla` is not used).
    """
    if model_kind(model) == "seq2seq":  # source strings in, target strings out: its own module
        from textgen.export.seq2seq_export import export_seq2seq

        return export_seq2seq(model, output)
    module = GenerationModule(model, xla=xla)
    embedding = module.embedding
    facts = {"xla": xla,
             "signatures": {"serving_default": "text" if module.tokens is not None else "ids",
                            "generate_ids": "ids"},
             "strings_in_graph": module.tokens is not None, "unsupported": module.unsupported,
             "tokenizer": embedding.tokenizer, "model_card": embedding.model_card,
             "labels": label_facts(module.label_space)}
    return write_saved_model(module, module.signatures(), facts, output)


def write_saved_model(module: tf.Module, signatures: dict, facts: dict, output: str | Path) -> dict:
    """Save `module` with `signatures` as the new folder `output`, `facts` in assets.extra/textgen.json,
    all or nothing (`publish_directory`); returns what the CLI prints about it."""
    output = Path(output)
    facts = {"format": "saved_model", "export_version": EXPORT_VERSION, **facts}

    def write(folder: Path) -> None:
        try:
            tf.saved_model.save(module, str(folder), signatures=signatures)
        except tf.errors.OpError as exc:  # TensorFlow's file writes fail with its own errors, not OSError
            full = "No space left" in exc.message or "Disk quota" in exc.message
            raise OSError(errno.ENOSPC if full else errno.EIO, exc.message.splitlines()[0]) from None
        extra = folder / "assets.extra"
        extra.mkdir()
        (extra / "textgen.json").write_text(json.dumps(facts, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    publish_directory(output, write)
    kept = ("kind", "format", "xla", "signatures", "strings_in_graph", "unsupported", "labels")
    return {"path": str(output), "bytes": folder_bytes(output), **{k: facts[k] for k in kept if k in facts}}


def label_facts(space: LabelSpace | None) -> dict | None:
    """textgen.json's `labels`: what a client needs to build `label_weights` rows, or None.

    `groups` in the order of the rows' columns; `columns` names each column GROUP=LABEL;
    `any` is the row of a text without a label (weight 1 on every group's `any`).
    """
    if space is None:
        return None
    return {"groups": space.to_card(), "size": space.size,
            "columns": [f"{group.name}={label}" for group in space.groups for label in group.labels],
            "any": space.mix((), 1)[0][0]}


def folder_bytes(folder: Path) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)
