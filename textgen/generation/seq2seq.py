"""Decoding a seq2seq model: sources in, targets out, a batch at a time.

The encoder runs once per batch of sources; the decoder then steps all rows at once inside one
compiled `tf.function` (a `tf.while_loop`) that stops when every row has written END or reached
its length limit. `Seq2SeqStepper` is the model's step in the shape every textgen loop
uses (`step(token_ids, states) -> (logits, states)`): its states carry the decoder's recurrent
states and, as constant parts, the encoder outputs, their precomputed attention keys and the
source mask, so gathering states (beam search) gathers the source memory with them. The loops
here stop at END, which the language models' chunked loops (textgen.generation.loops) have no
notion of; the pick of a token is textgen's samplers' (`Sampler.next_token`).

Sources are encoded in chunks of CHUNK_ROWS sorted by length, so a chunk pads little.
`reference_greedy` is the plain decoder the tests hold the engine to: the full Keras model
re-run on the growing target prefix.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from textgen.data.pairs import END, PAD, RESERVED, START
from textgen.data.tokenizer import tokenizer_from_config
from textgen.errors import UsageError
from textgen.generation.constraints import TAIL_TOKENS, SameLetters, vocabulary_keys
from textgen.generation.request import fresh_random_seed
from textgen.generation.loops import MAX_RANDOM_SEED
from textgen.generation.samplers import make_sampler, require_whole
from textgen.models.architecture import model_kind
from textgen.models.seq2seq import Seq2SeqParts, decoder_step, encode
from textgen.saving import load_keras_model

__all__ = ["CHUNK_ROWS", "METHODS", "Seq2SeqStepper", "Translator", "reference_greedy"]

CHUNK_ROWS = 64  # sources encoded and decoded together
# Unless max_length is given, a target may have twice its source's tokens and 10 more (and no more
# than the training seq_length and END): room for any rewrite of a sentence, while a decoder caught
# in a loop stops near the length the answer should have, not at the longest a pair may be.
LENGTH_RATIO, LENGTH_EXTRA = 2, 10
METHODS = ("greedy", "sample", "beam")


class Seq2SeqStepper:
    """The decoder's step for a batch of encoded sources. States: (decoder states (a list per
    layer), values, keys, mask); only the first changes from step to step."""

    batch_axis = 0

    def __init__(self, model: keras.Model):
        self.parts = Seq2SeqParts.of(model)

    def start(self, source_ids, copies: int = 1):
        """The states after encoding `source_ids` (batch, S), each row repeated `copies` times."""
        values, mask, first = encode(self.parts, source_ids)
        if copies > 1:
            values, mask, first = (tf.nest.map_structure(lambda x: tf.repeat(x, copies, axis=0), part)
                                   for part in (values, mask, first))
        rows = tf.shape(values)[0]
        # In the cells' compute dtype: a model still under a mixed-precision policy (sampled during
        # training) keeps bfloat16 states, and a loop's states keep their dtype.
        states = [list(first)] + [[tf.zeros([rows, size], cell.compute_dtype) for size in _state_sizes(cell)]
                                  for cell in self.parts.decoder_cells[1:]]
        keys = self.parts.attention.keys(values) if self.parts.attention is not None else values
        if self.parts.attention is not None and self.parts.attention.positions:
            states.append([tf.zeros([rows], tf.int32)])  # the target position the attention reads
        return states, values, keys, mask

    def step(self, token_ids, states):
        logits, decoder_states, _ = decoder_step(self.parts, token_ids, states[0], states[1:])
        return logits, (decoder_states, *states[1:])

    def step_with_weights(self, token_ids, states):
        logits, decoder_states, weights = decoder_step(self.parts, token_ids, states[0], states[1:])
        return logits, (decoder_states, *states[1:]), weights


def _state_sizes(cell) -> list[int]:
    size = cell.state_size
    return list(size) if isinstance(size, (list, tuple)) else [size]


class Translator:
    """Translates source strings with a loaded seq2seq model (`Translator.load(path)`).
    `same_letters` holds the outputs to their sources' letters and digits
    (`textgen.generation.constraints`); None follows the model's `model.same_letters`."""

    def __init__(self, model: keras.Model, same_letters: bool | None = None):
        if model_kind(model) != "seq2seq":
            raise UsageError(f"model {model.name} is a {model_kind(model)} language model, not a seq2seq model; "
                             "give a model trained with model.type: seq2seq")
        self.model = model
        self.stepper = Seq2SeqStepper(model)
        parts = self.stepper.parts
        self.source_tokenizer = tokenizer_from_config(parts.source_embedding.tokenizer)
        self.target_tokenizer = tokenizer_from_config(parts.target_embedding.tokenizer)
        config = parts.source_embedding.model_card.get("config") or {}
        self.seq_length = (config.get("training") or {}).get("seq_length")
        if same_letters is None:
            same_letters = bool((config.get("model") or {}).get("same_letters", False))
        self.letters = SameLetters(self.source_tokenizer, self.target_tokenizer) if same_letters else None
        self.banned = banned_ids(self.target_tokenizer)
        self._compiled = {}

    @classmethod
    def load(cls, path: str | Path, same_letters: bool | None = None) -> "Translator":
        return cls(load_keras_model(path), same_letters)

    def translate(self, sources: list[str], *, method: str = "greedy", temperature: float = 1.0, top_k=None,
                  top_p=None, beam_width: int = 4, max_length: int | None = None,
                  random_seed: int | None = None) -> list[str]:
        """One target string per source."""
        ids = self.translate_ids(sources, method=method, temperature=temperature, top_k=top_k, top_p=top_p,
                                 beam_width=beam_width, max_length=max_length, random_seed=random_seed)
        return [self.detokenize(row) for row in ids]

    def translate_ids(self, sources: list[str], *, method: str = "greedy", temperature: float = 1.0, top_k=None,
                      top_p=None, beam_width: int = 4, max_length: int | None = None,
                      random_seed: int | None = None) -> list[np.ndarray]:
        """The targets as model ids, END and what follows it left out."""
        sampler = method_sampler(method, temperature=temperature, top_k=top_k, top_p=top_p, beam_width=beam_width)
        encoded = self.encode_sources(sources)
        limits = self.length_limits(encoded, max_length)
        steps = int(limits.max(initial=1))  # the random table's rows: one per step of the longest limit
        seed = fresh_random_seed() if random_seed is None else checked_seed(random_seed)
        results: list[np.ndarray | None] = [None] * len(sources)
        order = np.argsort([len(row) for row in encoded], kind="stable")
        for number, start in enumerate(range(0, len(order), CHUNK_ROWS)):
            rows = order[start:start + CHUNK_ROWS]
            source_ids = pad_rows([encoded[i] for i in rows])
            if sampler.beam:
                tokens = self._beam(source_ids, limits[rows], sampler.beam_width)
            else:
                key = tf.constant([seed, number], tf.int64)  # the same numbers for a seed, in every process
                uniforms = tf.random.stateless_uniform([steps, len(rows)], seed=key, alg="philox")
                tokens = self._sample(sampler, source_ids, limits[rows], uniforms)[0]
            for row, ids in zip(rows, tokens):
                results[row] = until_end(ids)
        return results

    def encode_sources(self, sources: list[str]) -> list[np.ndarray]:
        """Each source's model ids; a UsageError naming the source and the characters the vocabulary lacks."""
        if isinstance(sources, str):
            raise UsageError("give a list of source strings, not one string")
        encoded = []
        for number, source in enumerate(sources, 1):
            try:
                encoded.append(np.asarray(self.source_tokenizer.encode(source), np.int32) + RESERVED)
            except UsageError as exc:
                raise UsageError(f"source {number}: {exc}") from None
        return encoded

    def length_limits(self, encoded: list[np.ndarray], max_length: int | None) -> np.ndarray:
        """(sources,) int32, the decoder steps each source is allowed: `max_length` for all, else
        LENGTH_RATIO x its length + LENGTH_EXTRA, at most the training seq_length and END."""
        if max_length is not None:
            if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
                raise UsageError(f"max_length must be a whole number of 1 or more, got {max_length!r}")
            return np.full(len(encoded), int(max_length), np.int32)
        limits = LENGTH_RATIO * np.array([len(row) for row in encoded], np.int32) + LENGTH_EXTRA
        return np.minimum(limits, int(self.seq_length) + 1) if self.seq_length else limits

    def detokenize(self, ids) -> str:
        ids = np.asarray(ids, np.int64)
        return self.target_tokenizer.decode(ids[ids >= RESERVED] - RESERVED)

    def attention_weights(self, source: str):
        """(source tokens, target tokens, weights (T, S) numpy) of the greedy translation of `source`;
        the last target token is "<end>" when the translation ended before the length limit."""
        if self.stepper.parts.attention is None:
            raise UsageError("this model was trained with model.attention_type: none; it has no attention to draw")
        encoded = self.encode_sources([source])
        limits = self.length_limits(encoded, None)
        tokens, weights = self._sample(make_sampler(temperature=0), pad_rows(encoded), limits,
                                       tf.zeros([limits[0], 1]), record=True)
        ids = tokens[0]
        steps = len(until_end(ids)) + (1 if END in ids.tolist() else 0)
        source_tokens = [self.source_tokenizer.vocabulary[i - RESERVED] for i in encoded[0].tolist()]
        target_tokens = [self.target_tokenizer.vocabulary[i - RESERVED] if i >= RESERVED else "<end>"
                         for i in ids[:steps].tolist()]
        return source_tokens, target_tokens, weights[:steps, 0, :len(source_tokens)]

    # ------------------------------------------------------------------ the compiled loops

    def _sample(self, sampler, source_ids, limits, uniforms, record: bool = False):
        """(tokens (batch, steps) numpy, attention weights (steps, batch, S) numpy or None)."""
        key = (type(sampler), record)
        values = {name: tf.constant(value) for name, value in sampler.values().items()}
        if key not in self._compiled:  # one trace per strategy: every batch and source length fits its signature
            signature = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32),
                         tf.TensorSpec([None, None], tf.float32),
                         {name: tf.TensorSpec([], value.dtype) for name, value in values.items()}]
            loop = make_sample_loop(self.stepper, self.banned, sampler, record, self.letters)
            self._compiled[key] = tf.function(loop, input_signature=signature)
        tokens, weights = self._compiled[key](tf.constant(source_ids), tf.constant(limits, tf.int32), uniforms, values)
        return tokens.numpy().T, (weights.numpy() if record else None)

    def _beam(self, source_ids, limits, width: int) -> np.ndarray:
        if "beam" not in self._compiled:
            signature = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32),
                         tf.TensorSpec([], tf.int32)]
            self._compiled["beam"] = tf.function(make_beam_loop(self.stepper, self.banned, self.letters),
                                                 input_signature=signature)
        tokens, parents = self._compiled["beam"](tf.constant(source_ids), tf.constant(limits, tf.int32),
                                                 tf.constant(width))
        return backtrack_best(tokens.numpy(), parents.numpy())


def method_sampler(method: str, *, temperature, top_k, top_p, beam_width):
    """textgen's sampler for a decoding method (greedy | sample | beam) and its options."""
    if method == "greedy":
        return make_sampler(temperature=0)
    if method == "beam":
        return make_sampler(beam_width=beam_width)
    if method == "sample":
        return make_sampler(temperature=temperature, top_k=top_k, top_p=top_p)
    raise UsageError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def checked_seed(random_seed) -> int:
    require_whole(random_seed, "random seed")
    if not 0 <= random_seed <= MAX_RANDOM_SEED:
        raise UsageError(f"random seed must be between 0 and 2**63-1, got {random_seed}")
    return int(random_seed)


def banned_ids(target_tokenizer) -> tf.Tensor:
    """(vocab,) bool: the ids a decoder never writes: PAD, START and the target's unknown-word token."""
    banned = np.zeros(target_tokenizer.vocab_size + RESERVED, bool)
    banned[[PAD, START]] = True
    if target_tokenizer.unk_id is not None:
        banned[target_tokenizer.unk_id + RESERVED] = True
    return tf.constant(banned)


def make_sample_loop(stepper: Seq2SeqStepper, banned, sampler, record: bool, letters: SameLetters | None = None):
    """Greedy or sampled decoding of a batch, row i for at most limits[i] steps; finished rows write
    PAD. `record` also returns each step's attention weights, for the attention picture; `letters`
    holds every row to its source's letters."""
    def loop(source_ids, limits, uniforms, values):
        states = stepper.start(source_ids)
        rows = tf.shape(source_ids)[0]
        expected, position = letters.start(source_ids) if letters else (None, tf.zeros([rows], tf.int32))
        out = tf.TensorArray(tf.int32, size=0, dynamic_size=True)  # holds exactly the steps taken
        seen = tf.TensorArray(tf.float32, size=0, dynamic_size=True)

        def body(t, last, states, position, done, out, seen):
            if record:
                logits, states, weights = stepper.step_with_weights(last, states)
                seen = seen.write(t, weights)
            else:
                logits, states = stepper.step(last, states)
            logits = tf.where(banned, tf.constant(-np.inf, tf.float32), logits)
            if letters:
                logits = letters.mask(logits, expected, position)
            token = tf.where(done, PAD, sampler.next_token(logits, uniforms[t], values))
            if letters:
                position = letters.advance(expected, position, token)
            done = done | (token == END) | (t + 1 >= limits)
            return t + 1, token, states, position, done, out.write(t, token), seen

        start = (tf.constant(0), tf.fill([rows], START), states, position, limits < 1, out, seen)
        *_, out, seen = tf.while_loop(lambda t, _l, _s, _p, done, *_: ~tf.reduce_all(done), body, start)
        return out.stack(), (seen.stack() if record else tf.zeros([0]))
    return loop


def make_beam_loop(stepper: Seq2SeqStepper, banned, letters: SameLetters | None = None):
    """Beam search for every source of a batch at once: `width` beams per source, each step keeps a
    source's `width` best extensions by summed log-probability. A finished beam extends only with
    PAD, at no cost, so its score is final; a source is done when its best beam is finished, since
    every other beam's score can only fall, or when it has taken its limits[i] steps. `letters`
    holds every beam to its source's letters. Returns tokens and parent beams, (steps, batch, width)."""
    def loop(source_ids, limits, width):
        rows = tf.shape(source_ids)[0]
        states = stepper.start(source_ids, copies=width)
        expected, position = (letters.start(source_ids, copies=width) if letters
                              else (None, tf.zeros([rows * width], tf.int32)))
        vocab = tf.shape(banned)[0]
        pad_only = tf.where(tf.range(vocab) == PAD, 0.0, -np.inf)
        first = tf.tile(tf.concat([[0.0], tf.fill([width - 1], -np.inf)], 0), [rows])
        offsets = tf.range(rows)[:, None] * width
        beam_limits = tf.repeat(limits, width)
        tokens, parents = (tf.TensorArray(tf.int32, size=0, dynamic_size=True) for _ in range(2))

        def body(t, last, states, position, scores, done, tokens, parents):
            logits, states = stepper.step(last, states)
            logits = tf.where(banned, tf.constant(-np.inf, tf.float32), logits)
            if letters:
                logits = letters.mask(logits, expected, position)
            log_probs = tf.nn.log_softmax(logits)
            log_probs = tf.where(done[:, None], pad_only[None], log_probs)
            totals = tf.reshape(scores[:, None] + log_probs, [rows, width * vocab])
            best, index = tf.math.top_k(totals, k=width, sorted=True)
            parent, token = index // vocab, index % vocab
            flat = tf.reshape(parent + offsets, [-1])
            states = tf.nest.map_structure(lambda s: tf.gather(s, flat), states)
            tokens, parents = tokens.write(t, token), parents.write(t, parent)
            token = tf.reshape(token, [-1])
            if letters:
                position = letters.advance(expected, tf.gather(position, flat), token)
            done = tf.gather(done, flat) | (token == END) | (t + 1 >= beam_limits)
            return t + 1, token, states, position, tf.reshape(best, [-1]), done, tokens, parents

        def going(t, _last, _states, _position, _scores, done, *_):
            return ~tf.reduce_all(tf.reshape(done, [rows, width])[:, 0])

        start = (tf.constant(0), tf.fill([rows * width], START), states, position, first, beam_limits < 1,
                 tokens, parents)
        *_, tokens, parents = tf.while_loop(going, body, start)
        return tokens.stack(), parents.stack()
    return loop


def backtrack_best(tokens: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """(batch, steps): each source's best final beam (beam 0; top_k sorts) followed back to the start."""
    steps, rows, _ = tokens.shape
    out = np.empty((rows, steps), np.int32)
    beam = np.zeros(rows, np.int64)
    for t in range(steps - 1, -1, -1):
        out[:, t] = tokens[t, np.arange(rows), beam]
        beam = parents[t, np.arange(rows), beam]
    return out


def pad_rows(rows: list[np.ndarray]) -> np.ndarray:
    """(len(rows), longest) int32 with PAD after each row (at least one column)."""
    out = np.full((len(rows), max([len(row) for row in rows] + [1])), PAD, np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def until_end(ids) -> np.ndarray:
    """The ids before the first END (PAD cannot come before it)."""
    ids = np.asarray(ids, np.int32)
    ends = np.flatnonzero(ids == END)
    return ids[:ends[0]] if len(ends) else ids[ids != PAD]


def reference_greedy(model: keras.Model, sources: list[str], max_length: int | None = None,
                     same_letters: bool | None = None) -> list[np.ndarray]:
    """Greedy decoding the plain way, for tests: per source, the full model re-run on the growing
    target prefix, the argmax of its last position (PAD, START and <unk> excluded, as the engine
    excludes them), until END or the source's length limit (`Translator.length_limits`). With
    `same_letters` (None: the model's setting) the argmax is over the tokens the rule of
    textgen.generation.constraints allows, worked out from the tokens' strings. Model ids, END
    left out."""
    translator = Translator(model, same_letters)
    banned = translator.banned.numpy()
    target_keys = [""] * RESERVED + vocabulary_keys(translator.target_tokenizer)
    all_source_keys = vocabulary_keys(translator.source_tokenizer)
    results = []
    encoded = translator.encode_sources(sources)
    for source, limit in zip(encoded, translator.length_limits(encoded, max_length)):
        lettered = [all_source_keys[i - RESERVED] for i in source.tolist()]
        source_keys = [key for key in lettered if key and key in target_keys]  # the ones a target token can write
        prefix = [START]
        for _ in range(limit):
            logits = model([pad_rows([source]), np.array([prefix], np.int32)])[0, -1].numpy()
            allowed = ~banned
            if translator.letters is not None:
                written = sum(1 for token in prefix[1:] if target_keys[token])
                want = source_keys[written] if written < len(source_keys) else None
                lettered_at = [i for i, token in enumerate(prefix) if target_keys[token]]
                marks = len(prefix) - 1 - (lettered_at[-1] if lettered_at else 0)  # written after the last letter
                free = want is not None or marks < TAIL_TOKENS
                allowed &= np.array([want is None if i == END else
                                     i >= RESERVED and (target_keys[i] == want or (free and target_keys[i] == ""))
                                     for i in range(len(target_keys))])
            token = int(np.argmax(np.where(allowed, logits, -np.inf)))
            prefix.append(token)
            if token == END:
                break
        results.append(until_end(prefix[1:]))
    return results
