"""Generation: load a .keras file and sample text from a seed.

The seed runs through the network once; after that every new token is one step of the
model's stepper with the states carried forward (textgen.generation.steppers), so for a
recurrent model the cost of a token does not depend on how much text came before it. The
step loop runs inside one compiled `tf.function` (a `tf.while_loop`, textgen.generation.loops)
that produces a chunk of tokens per call, for a whole batch of samples at once; Python only
decodes finished chunks (to stream them) and checks stop strings between chunks.

How each loop is compiled was chosen by measurement on a 2-core AVX-512 CPU
(docs/generation.md): with XLA (`jit_compile=True`) for float32, which makes a single
sample 2.3-2.8x faster; without XLA but with packed bfloat16 products (the column stepper)
for sampled batches of 32 or more on CPUs with native bfloat16, where oneDNN's AMX kernels
beat XLA's float32 ones by about 1.3x at 64 samples. Greedy decoding, beam search and
scoring always run in float32, so they stay equal to the Keras model's own results.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf

from textgen.data.tokenizer import Tokenizer, tokenizer_from_config
from textgen.data.unknown import name_tokens
from textgen.errors import ModelFileError, UsageError
from textgen.generation import loops
from textgen.generation.loops import LoopMode, banned_mask
from textgen.generation.request import MAX_NUM_SAMPLES, Request, Sample, find_end, fresh_random_seed, tokens_within
from textgen.generation.samplers import Sampler, TensorSampler, make_sampler
from textgen.generation.session import StepSession
from textgen.generation.steppers import make_stepper
from textgen.labels import LabelSpace
from textgen.models import cells
from textgen.models.layers import find_label_embedding, find_token_embedding
from textgen.saving import check_textgen_model, load_keras_model
from textgen.training.distribute import cpu_has_native_bf16

__all__ = ["BFLOAT16_MIN_BATCH", "Generator", "MAX_NUM_SAMPLES", "PRECISIONS", "Request", "Sample", "StepSession",
           "check_textgen_model", "fresh_random_seed", "load", "load_keras_model"]

# Saved models name the Keras cell classes of textgen's cell kinds; importing every kind registers
# them, so a file loads here, and with keras.models.load_model after `textgen.load_keras_objects()`.
cells.kinds()

BFLOAT16_MIN_BATCH = 32  # sampled batches at least this large use bfloat16 products ("auto"); measured
PRECISIONS = ("auto", "float32", "bfloat16")


def load(path: str | Path, **options) -> "Generator":
    """Load a textgen model file and return a `Generator` for it (options: see `Generator`)."""
    return Generator(load_keras_model(path), **options)


@functools.lru_cache(maxsize=1)
def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX)."""
    return cpu_has_native_bf16()


class Generator:
    """Samples text from a loaded textgen model. Build it with `textgen.load(path)`.

    Args:
        model: a model built by textgen's `build_model` (loaded from its .keras file).
        precision: "auto" (default: bfloat16 products for sampled batches of at least
            BFLOAT16_MIN_BATCH on CPUs with native bfloat16, float32 otherwise), "float32"
            or "bfloat16" (sampling only; greedy, beam and scoring are always float32).
        jit_compile: compile the loops with XLA. None (default) uses XLA for float32 loops
            and not for bfloat16 ones, which is what measured fastest.
    """

    def __init__(self, model: keras.Model, precision: str = "auto", jit_compile: bool | None = None):
        if precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.model = model
        embedding = find_token_embedding(model)
        if embedding is None or not embedding.tokenizer:
            raise ModelFileError(f"model {model.name} carries no tokenizer; train it with `textgen train`")
        self.tokenizer: Tokenizer = tokenizer_from_config(embedding.tokenizer)
        self.model_card = embedding.model_card
        self.label_space = LabelSpace.from_card(self.model_card.get("labels"))  # None: trained without labels
        self._label_embedding = find_label_embedding(model)
        if (self.label_space is None) != (self._label_embedding is None):
            raise ModelFileError(f"model {model.name}'s card and layers disagree on whether it has labels; "
                                 "train it again with `textgen train`")
        self.precision = precision
        self.jit_compile = jit_compile
        self.stepper = make_stepper(model)  # float32; a bfloat16 one is made when first needed
        self._steppers = {(tf.float32, False): self.stepper}
        self._banned = banned_mask(self.tokenizer)
        self._functions: dict[tuple, tf.types.experimental.GenericFunction] = {}

    # ------------------------------------------------------------------ public API

    def generate(self, seed: str, length: int = 200, temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, num_samples: int = 1, random_seed: int | None = None,
                 repetition_penalty: float = 1.0, min_length: int = 0, stop=(), end_at_sentence: bool = False,
                 beam_width: int | None = None, strict: bool = False, sampler: Sampler | None = None,
                 labels=()) -> list[str]:
        """Return `num_samples` continuations of `seed` (the seed itself not included).

        temperature None means 1.0 (0 is greedy); `beam_width` asks for beam search, which
        returns the single most likely continuation and takes no sampling options.
        `random_seed` None draws a fresh one, so each call samples anew; the same seed, model
        and options give the same text in any process. `stop` is one stop string or several.
        `labels` (a conditioned model) is one `--label` spec or several (textgen.labels): "austen",
        "author=austen", a blend "austen:0.7,melville:0.3"; several labels of one group give one
        sample each.
        """
        request = Request(seed=seed, length=length,
                          sampler=sampler or make_sampler(temperature, top_k, top_p, beam_width),
                          num_samples=num_samples,
                          random_seed=fresh_random_seed() if random_seed is None else random_seed,
                          repetition_penalty=repetition_penalty, min_length=min_length,
                          stop=(stop,) if isinstance(stop, str) else tuple(stop), end_at_sentence=end_at_sentence,
                          strict=strict, labels=(labels,) if isinstance(labels, str) else tuple(labels))
        return [sample.text for sample in self.run(request)]

    def stream(self, request: Request) -> Iterator[str]:
        """Yield the text of a single sample piece by piece as chunks are generated.

        The last characters of each chunk are held back while a stop string could still
        begin in them, so nothing printed is ever taken back.
        """
        if self._resolve(request)[0].num_samples != 1:
            raise UsageError("streaming produces one sample; set num_samples to 1 and give one label per group")
        hold = max((len(s) for s in request.stop), default=1) - 1
        emitted, text = 0, ""
        for samples in self._chunks(request):
            text = samples[0].text
            safe = len(text) - (hold if samples[0].stopped_by == "length" else 0)
            if safe > emitted:
                yield text[emitted:safe]
                emitted = safe
        if len(text) > emitted:
            yield text[emitted:]

    def run(self, request: Request) -> list[Sample]:
        """Generate every sample of a request to its end and return them."""
        samples: list[Sample] = []
        for samples in self._chunks(request):
            pass
        return samples or [Sample("", 0) for _ in range(self._resolve(request)[0].num_samples)]

    def encode_seed(self, seed: str, strict: bool = False) -> tuple[np.ndarray, list[str]]:
        """Token ids of the seed and the seed's out-of-vocabulary tokens (mapped to <unk>).

        With `strict`, or for a tokenizer without an unknown token, out-of-vocabulary tokens
        are a UsageError that names them.
        """
        if seed == "":
            raise UsageError("the seed is empty; give at least one character of text to start from")
        ids, unknown = self.tokenizer.encode_lenient(seed)
        if unknown and strict:
            raise UsageError(f"seed words not in the model's vocabulary: {name_tokens(unknown)}; "
                             "rephrase the seed or drop --strict to map them to <unk>")
        if len(ids) == 0:
            raise UsageError("the seed has no tokens the model can read; give some text to start from")
        return ids, unknown

    def check(self, request: Request) -> list[str]:
        """Refuse a request this model cannot serve; return the seed's out-of-vocabulary tokens.

        `run` and `stream` check too, but lazily: call this first to fail before any output.
        """
        return self._prepare(request)[1]

    def log_probability(self, seed: str, continuation, labels=()) -> float:
        """Natural-log probability the model gives `continuation` after `seed`.

        `continuation` is text (encoded on its own) or a sequence of token ids. The sum runs
        over the continuation's tokens, each scored given everything before it. `labels`: the
        `--label` specs of one text (a conditioned model; none is `any`).
        """
        seed_ids, _ = self.encode_seed(seed)
        vectors = self.one_label(labels, "a score")
        if isinstance(continuation, str):
            targets = self.tokenizer.encode_lenient(continuation)[0] if continuation else np.zeros(0, np.int32)
        else:
            targets = np.asarray(continuation, np.int32).reshape(-1)
        if len(targets) == 0:
            return 0.0
        states, last = self._start(seed_ids, 1, labels=vectors)
        inputs = np.concatenate([[seed_ids[-1]], targets[:-1]]).astype(np.int32)
        score = self._function("score", LoopMode())
        return float(score(states, tf.constant(inputs), tf.constant(targets.astype(np.int32))))

    def session(self, seed: str, strict: bool = False, labels=()) -> "StepSession":
        """A token-by-token session from `seed`, driven by the caller (see `StepSession`)."""
        return StepSession(self, seed, strict, labels)

    def label_vectors(self, specs, num_samples: int = 1) -> tuple[np.ndarray | None, int]:
        """(label vectors (rows, embedding_dim) float32, rows) for `--label` specs, or (None, num_samples)
        without specs: the steppers then start every row from `any`. Specs for a model without
        labels, or labels it does not have, are a UsageError; several labels of one group set
        the number of rows (textgen.labels.LabelSpace.mix)."""
        specs = (specs,) if isinstance(specs, str) else tuple(specs)
        if not specs:
            return None, num_samples
        if self.label_space is None:
            raise UsageError("this model was trained without labels; drop --label")
        rows, count = self.label_space.mix(specs, num_samples)
        return np.asarray(self._label_embedding.mix(rows), np.float32), count

    def one_label(self, specs, what: str) -> np.ndarray | None:
        """The one row of label vectors of `specs`, for `what` works on a single text."""
        vectors, rows = self.label_vectors(specs, 1)
        if rows != 1:
            raise UsageError(f"{what} is for one text: give one label per group (a blend mixes several)")
        return vectors

    def prime_states(self, seeds: list[np.ndarray], labels=None):
        """Float32 states of one row per seed, after all but its last token (the last starts the loop).

        For callers that assemble their own batches (textgen.serve): the rows are in the
        stepper's `initial_states` layout, batch on axis 0, and the seeds run as one batch.
        Rows and seed lengths are padded to powers of two so XLA compiles a few shapes. A
        transformer steps every row at one position, so its seeds must be of one length.
        `labels`: one label vector per seed (`label_vectors`); None is `any` for every row.
        """
        mode = LoopMode(jit=self.jit_compile is not False)
        lengths = np.array([len(ids) - 1 for ids in seeds], np.int32)
        if hasattr(self.stepper, "context") and len(set(lengths.tolist())) > 1:
            raise UsageError("a transformer primes seeds of one length together; prime the others apart")
        rows = 1 << max(len(seeds) - 1, 0).bit_length()
        prefixes = np.zeros((rows, max(64, 1 << max(int(lengths.max()) - 1, 0).bit_length())), np.int32)
        for row, ids in enumerate(seeds):
            prefixes[row, :lengths[row]] = ids[:-1]
        if labels is not None:
            labels = np.pad(np.asarray(labels, np.float32), ((0, rows - len(seeds)), (0, 0)))
        states = self._stepper(mode).initial_states(rows, labels)
        if lengths.max():
            states = self._function("prime_rows", mode)(
                states, tf.constant(prefixes), tf.constant(np.pad(lengths, (0, rows - len(seeds)))))
        return tf.nest.map_structure(lambda s: s[:len(seeds)], states)

    def row_sample_loop(self, penalised: bool):
        """The compiled float32 sampling loop whose options are per row (a `TensorSampler`'s values of
        shape (batch,), penalty (batch,)), for callers that batch different requests together."""
        mode = LoopMode(tf.float32, self.jit_compile if self.jit_compile is not None else True)
        return self._function("sample", mode, TensorSampler(), penalised)

    # ------------------------------------------------------------------ the engine

    def _loop_mode(self, sampler: Sampler, batch: int):
        """How to compile the loop for this sampler and batch; the module docstring has the measurements."""
        bf16 = sampler.stochastic and (
            self.precision == "bfloat16"
            or (self.precision == "auto" and batch >= BFLOAT16_MIN_BATCH and native_bfloat16()))
        jit = self.jit_compile if self.jit_compile is not None else not bf16
        return LoopMode(tf.bfloat16 if bf16 else tf.float32, jit)

    def _prepare(self, request: Request):
        """(seed ids, unknown tokens, the request as resolved by `_resolve`, label vectors), once the
        request is known to fit this model."""
        seed_ids, unknown = self.encode_seed(request.seed, request.strict)
        width = getattr(request.sampler, "beam_width", 0)
        if width > self.tokenizer.vocab_size:
            raise UsageError(f"beam width {width} exceeds the vocabulary size {self.tokenizer.vocab_size}; "
                             "use a smaller --beam-width")
        return (seed_ids, unknown, *self._resolve(request))

    def _resolve(self, request: Request) -> tuple[Request, np.ndarray | None]:
        """The request with as many samples as its labels ask for, and each sample's label vector
        (None: no labels, every row `any`)."""
        if request.sampler.beam:
            return request, self.one_label(request.labels, "beam search")
        vectors, rows = self.label_vectors(request.labels, request.num_samples)
        return (request if rows == request.num_samples else dataclasses.replace(request, num_samples=rows)), vectors

    def _chunks(self, request: Request) -> Iterator[list[Sample]]:
        """Run the compiled loop chunk by chunk; after each chunk yield the samples so far."""
        seed_ids, _, request, labels = self._prepare(request)
        if request.sampler.beam:
            yield from self._beam(request, seed_ids, labels)
            return
        batch, sampler = request.num_samples, request.sampler
        mode = self._loop_mode(sampler, batch)
        states, last = self._start(seed_ids, batch, mode, labels)
        penalised = request.repetition_penalty != 1.0
        loop = self._function("sample", mode, sampler, penalised)
        values = {k: tf.constant(v, dtype=tf.int32 if isinstance(v, int) else tf.float32)
                  for k, v in sampler.values().items()}
        seen = np.zeros((batch, self.tokenizer.vocab_size), dtype=bool)
        seen[:, np.unique(seed_ids)] = True
        seen = tf.constant(seen)
        penalty = tf.constant(request.repetition_penalty, tf.float32)
        decoders = [self.tokenizer.decoder(seed_ids, request.seed) for _ in range(batch)]
        texts, counts = [""] * batch, [0] * batch
        done: list[str | None] = [None] * batch
        produced = 0
        while produced < request.length and not all(done):
            n = min(loops.FIRST_CHUNK if produced == 0 else loops.CHUNK, request.length - produced)
            uniforms = loops.uniforms(request.random_seed, produced, batch) if sampler.stochastic else \
                tf.zeros((loops.CHUNK, batch), tf.float32)
            tokens, states, last, seen = loop(states, last, seen, tf.constant(n, tf.int32), uniforms, penalty, values)
            tokens = tokens.numpy()[:n].T
            for i in range(batch):
                if done[i]:
                    continue
                before = len(texts[i])
                texts[i] += decoders[i].push(tokens[i])
                counts[i] += n
                cut = find_end(texts[i], before, counts[i], decoders[i], request)
                if cut is not None:
                    texts[i], done[i] = texts[i][:cut[0]], cut[1]
                    counts[i] = tokens_within(decoders[i], cut[0], counts[i])
            produced += n
            yield [Sample(texts[i], counts[i], done[i] or "length") for i in range(batch)]

    def _beam(self, request: Request, seed_ids: np.ndarray, labels) -> Iterator[list[Sample]]:
        """Beam search over `request.length` tokens, chunk by chunk; yields the best beam at the end."""
        width = request.sampler.beam_width
        states, last = self._start(seed_ids, width, labels=labels)
        scores = tf.constant([0.0] + [-np.inf] * (width - 1), tf.float32)  # one live beam at first
        loop = self._function("beam", LoopMode(jit=self.jit_compile is not False), request.sampler)
        tokens, parents, produced = [], [], 0
        while produced < request.length:
            n = min(loops.CHUNK, request.length - produced)
            chunk_tokens, chunk_parents, states, scores, last = loop(states, scores, last, tf.constant(n, tf.int32))
            tokens.append(chunk_tokens.numpy()[:n])
            parents.append(chunk_parents.numpy()[:n])
            produced += n
        if produced == 0:
            return
        scores = scores.numpy()
        ids = loops.backtrack(np.concatenate(tokens), np.concatenate(parents), int(np.argmax(scores)))
        decoder = self.tokenizer.decoder(seed_ids, request.seed)
        text = decoder.push(ids)
        cut = find_end(text, 0, len(ids), decoder, request)
        stopped_by, count = "length", len(ids)
        if cut is not None:
            text, stopped_by, count = text[:cut[0]], cut[1], tokens_within(decoder, cut[0], len(ids))
        yield [Sample(text, count, stopped_by, float(np.max(scores)))]

    def _start(self, seed_ids: np.ndarray, batch: int, mode: "LoopMode | None" = None, labels=None):
        """Run all but the last seed token through the network; the last one starts the loop.

        Every row starts from the same seed, so for textgen's own steppers the seed runs once,
        as one row in float32 with XLA, and its states are copied to every row in the mode's
        layout: priming a 64-row bfloat16 batch row by row cost about 5% of a 1000-token run.
        `labels` (one vector per row, or one for all) condition the seed too, so rows with
        different labels are primed apart.
        """
        mode = mode or LoopMode()
        stepper = self._stepper(mode)
        if hasattr(self.stepper, "tile_states") and hasattr(stepper, "tile_states"):
            rows = 1 if labels is None or (labels == labels[:1]).all() else batch
            primed = self._prime(LoopMode(jit=self.jit_compile is not False), seed_ids, rows,
                                 None if labels is None else labels[:rows])
            states = stepper.tile_states(primed, batch // rows)
        else:
            states = self._prime(mode, seed_ids, batch, labels)
        last = tf.fill([batch], tf.constant(int(seed_ids[-1]), tf.int32))
        return states, last

    def _prime(self, mode: LoopMode, seed_ids: np.ndarray, batch: int, labels=None):
        states = self._stepper(mode).initial_states(batch, labels)
        length = len(seed_ids) - 1
        if length:
            # Padded to a power of two (at least 64) so XLA compiles once per size class, not per seed.
            prefix = np.zeros(max(64, 1 << (length - 1).bit_length()), np.int32)
            prefix[:length] = seed_ids[:-1]
            states = self._function("prime", mode)(states, tf.constant(prefix), tf.constant(length, tf.int32))
        return states

    def _stepper(self, mode: LoopMode):
        columns = mode.dtype == tf.bfloat16 and not mode.jit  # packed bfloat16 products, where the cells allow
        key = (mode.dtype, columns)
        if key not in self._steppers:
            self._steppers[key] = make_stepper(self.model, mode.dtype, columns=columns)
        return self._steppers[key]

    def _function(self, kind: str, mode: LoopMode, sampler: Sampler | None = None, penalised: bool = False):
        """The compiled function of one kind, traced once per mode, sampler class and penalty switch."""
        key = (kind, mode, type(sampler), penalised)
        if key not in self._functions:
            stepper = self._stepper(mode)
            make = {"prime": loops.make_prime, "prime_rows": loops.make_prime_rows, "score": loops.make_score, "step": loops.make_step,
                    "sample": functools.partial(loops.make_sample_loop, sampler=sampler, penalised=penalised),
                    "beam": functools.partial(loops.make_beam_loop, sampler=sampler)}[kind]
            # TensorFlow counts traces by the code of the function, so every Generator's first
            # calls looked like retracing in a loop and a process loading several models was
            # warned about it; a partial has no code of its own and is counted on its own.
            self._functions[key] = tf.function(functools.partial(make(stepper, self._banned)),
                                               jit_compile=mode.jit, reduce_retracing=True)
        return self._functions[key]
