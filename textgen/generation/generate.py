"""Generation: load a .keras file and sample text from a seed.

The seed runs through the network once; after that every new token is one recurrent step
with the states carried forward, so the cost of a token does not depend on how much text
came before it. The step loop runs inside one compiled `tf.function` (a `tf.while_loop`)
that produces a chunk of tokens per call, for a whole batch of samples at once; Python only
decodes finished chunks (to stream them) and checks stop strings between chunks.

A step is written with raw TensorFlow ops on a snapshot of the model's weights rather than
by calling the Keras layers (`RecurrentStepper`, in textgen/generation/steppers.py): the first layer's input projection is a
lookup table, so a step multiplies the hidden state by the recurrent kernel and little
else. How each loop is compiled was chosen by measurement on a 2-core AVX-512 CPU
(docs/generation.md): with XLA (`jit_compile=True`) for float32, which makes a single
sample 2.3-2.8x faster; without XLA but with packed bfloat16 products
(`PackedColumnStepper`) for sampled batches of 32 or more on CPUs with native bfloat16,
where oneDNN's AMX kernels beat XLA's float32 ones by about 1.3x at 64 samples. Greedy decoding, beam search and scoring always run
in float32, so they stay equal to the Keras model's own results.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf

from textgen.training.distribute import cpu_has_native_bf16
from textgen.errors import ModelFileError, UsageError
from textgen.models.layers import find_token_embedding
from textgen.generation.samplers import GreedySampler, Sampler, make_sampler, require_whole
from textgen.generation.steppers import PackedColumnStepper, RecurrentStepper, make_stepper
from textgen.saving import load_keras_model, check_textgen_model  # noqa: F401  (re-exported)
from textgen.data.tokenizer import Tokenizer, tokenizer_from_config

FIRST_CHUNK = 16  # tokens in the first compiled call, so streamed output appears at once
CHUNK = 256  # tokens per later call; amortises the call overhead (also the loop's buffer size)
BFLOAT16_MIN_BATCH = 32  # sampled batches at least this large use bfloat16 products ("auto"); measured
PRECISIONS = ("auto", "float32", "bfloat16")
MAX_NUM_SAMPLES = 100_000
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
_STOP_LOOKBACK = 64  # characters before a new chunk searched again for a sentence end


def load(path: str | Path, **options) -> "Generator":
    """Load a textgen model file and return a `Generator` for it (options: see `Generator`)."""
    return Generator(load_keras_model(path), **options)


@dataclass
class Sample:
    """One generated text and why it ended."""

    text: str
    tokens: int
    stopped_by: str = "length"  # length | stop | sentence
    log_probability: float | None = None  # beam search: the sequence's log-probability under the model


def fresh_random_seed() -> int:
    """A random seed from the operating system, for samples that differ from call to call."""
    return int.from_bytes(os.urandom(4), "little") >> 1


@dataclass
class Request:
    """Everything that shapes one generation call, validated once."""

    seed: str
    length: int = 200
    sampler: Sampler = field(default_factory=GreedySampler)
    num_samples: int = 1
    random_seed: int = 0
    repetition_penalty: float = 1.0
    min_length: int = 0
    stop: tuple[str, ...] = ()
    end_at_sentence: bool = False
    strict: bool = False  # out-of-vocabulary seed tokens are an error instead of <unk>

    def __post_init__(self):
        for name in ("length", "min_length", "num_samples", "random_seed"):
            require_whole(getattr(self, name), name.replace("_", "-"))
        if self.length < 0:
            raise UsageError(f"length must be 0 or more, got {self.length}")
        if self.min_length < 0:
            raise UsageError(f"min-length must be 0 or more, got {self.min_length}")
        if self.min_length > self.length:
            raise UsageError(f"min-length ({self.min_length}) cannot exceed length ({self.length})")
        if self.num_samples < 1:
            raise UsageError(f"num-samples must be at least 1, got {self.num_samples}")
        if self.num_samples > MAX_NUM_SAMPLES:  # one batch; 10**18 rows overflowed TensorFlow's shapes
            raise UsageError(f"num-samples must be at most {MAX_NUM_SAMPLES:,} (they run as one batch), "
                             f"got {self.num_samples:,}; run again for more")
        if not math.isfinite(self.repetition_penalty):
            raise UsageError(f"repetition penalty must be a finite number, got {self.repetition_penalty}")
        if self.repetition_penalty < 1.0:
            raise UsageError(f"repetition penalty must be 1 (off) or more, got {self.repetition_penalty}")
        if any(s == "" for s in self.stop):
            raise UsageError("a stop string cannot be empty")
        if self.random_seed < 0:
            raise UsageError(f"random seed must be 0 or more, got {self.random_seed}")
        if self.sampler.beam and self.num_samples != 1:
            raise UsageError("beam search returns the single most likely text; drop --num-samples or --beam-width")
        if self.sampler.beam and self.repetition_penalty != 1.0:
            raise UsageError("beam search scores the model's own probabilities; "
                             "drop --repetition-penalty or --beam-width")


@functools.lru_cache(maxsize=1)
def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX)."""
    return cpu_has_native_bf16()


# ---------------------------------------------------------------------- the generator


@dataclass(frozen=True)
class _Plan:
    """How one compiled function runs: the dtype of the recurrent products, and XLA or not."""

    dtype: tf.DType = tf.float32
    jit: bool = False


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
        self.precision = precision
        self.jit_compile = jit_compile
        self.stepper = make_stepper(model)  # float32; a bfloat16 one is made when first needed
        self._steppers = {(tf.float32, False): self.stepper}
        self._banned = self._banned_ids()
        self._functions: dict[tuple, tf.types.experimental.GenericFunction] = {}

    # ------------------------------------------------------------------ public API

    def generate(self, seed: str, length: int = 200, temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, num_samples: int = 1, random_seed: int | None = None,
                 repetition_penalty: float = 1.0, min_length: int = 0, stop=(), end_at_sentence: bool = False,
                 beam_width: int | None = None, strict: bool = False, sampler: Sampler | None = None) -> list[str]:
        """Return `num_samples` continuations of `seed` (the seed itself not included).

        temperature None means 1.0 (0 is greedy); `beam_width` asks for beam search, which
        returns the single most likely continuation and takes no sampling options.
        `random_seed` None draws a fresh one, so each call samples anew; the same seed, model
        and options give the same text in any process. `stop` is one stop string or several.
        """
        request = Request(seed=seed, length=length,
                          sampler=sampler or make_sampler(temperature, top_k, top_p, beam_width),
                          num_samples=num_samples,
                          random_seed=fresh_random_seed() if random_seed is None else random_seed,
                          repetition_penalty=repetition_penalty, min_length=min_length,
                          stop=(stop,) if isinstance(stop, str) else tuple(stop), end_at_sentence=end_at_sentence,
                          strict=strict)
        return [sample.text for sample in self.run(request)]

    def stream(self, request: Request) -> Iterator[str]:
        """Yield the text of a single sample piece by piece as chunks are generated.

        The last characters of each chunk are held back while a stop string could still
        begin in them, so nothing printed is ever taken back.
        """
        if request.num_samples != 1:
            raise UsageError("streaming produces one sample; set num_samples to 1")
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
        return samples or [Sample("", 0) for _ in range(request.num_samples)]

    def encode_seed(self, seed: str, strict: bool = False) -> tuple[np.ndarray, list[str]]:
        """Token ids of the seed and the seed's out-of-vocabulary tokens (mapped to <unk>).

        With `strict`, or for a tokenizer without an unknown token, out-of-vocabulary tokens
        are a UsageError that names them.
        """
        if seed == "":
            raise UsageError("the seed is empty; give at least one character of text to start from")
        ids, unknown = self.tokenizer.encode_lenient(seed)
        if unknown and strict:
            shown = ", ".join(repr(t) for t in unknown[:10])
            raise UsageError(f"seed words not in the model's vocabulary: {shown}; "
                             "rephrase the seed or drop --strict to map them to <unk>")
        if len(ids) == 0:
            raise UsageError("the seed has no tokens the model can read; give some text to start from")
        return ids, unknown

    def check(self, request: Request) -> list[str]:
        """Refuse a request this model cannot serve; return the seed's out-of-vocabulary tokens.

        `run` and `stream` check too, but lazily: call this first to fail before any output.
        """
        return self._prepare(request)[1]

    def log_probability(self, seed: str, continuation) -> float:
        """Natural-log probability the model gives `continuation` after `seed`.

        `continuation` is text (encoded on its own) or a sequence of token ids. The sum runs
        over the continuation's tokens, each scored given everything before it.
        """
        seed_ids, _ = self.encode_seed(seed)
        if isinstance(continuation, str):
            targets = self.tokenizer.encode_lenient(continuation)[0] if continuation else np.zeros(0, np.int32)
        else:
            targets = np.asarray(continuation, np.int32).reshape(-1)
        if len(targets) == 0:
            return 0.0
        states, last = self._start(seed_ids, 1)
        inputs = np.concatenate([[seed_ids[-1]], targets[:-1]]).astype(np.int32)
        score = self._function("score", _Plan())
        return float(score(states, tf.constant(inputs), tf.constant(targets.astype(np.int32))))

    def session(self, seed: str, strict: bool = False) -> "StepSession":
        """A token-by-token session from `seed`, driven by the caller (see `StepSession`)."""
        return StepSession(self, seed, strict)

    # ------------------------------------------------------------------ the engine

    def _plan(self, sampler: Sampler, batch: int):
        """How to compile the loop for this sampler and batch; the module docstring has the measurements."""
        bf16 = sampler.stochastic and (
            self.precision == "bfloat16"
            or (self.precision == "auto" and batch >= BFLOAT16_MIN_BATCH and native_bfloat16()))
        jit = self.jit_compile if self.jit_compile is not None else not bf16
        return _Plan(tf.bfloat16 if bf16 else tf.float32, jit)

    def _prepare(self, request: Request) -> tuple[np.ndarray, list[str]]:
        """The seed's ids and unknown tokens, once the request is known to fit this model."""
        seed_ids, unknown = self.encode_seed(request.seed, request.strict)
        width = getattr(request.sampler, "beam_width", 0)
        if width > self.tokenizer.vocab_size:
            raise UsageError(f"beam width {width} exceeds the vocabulary size {self.tokenizer.vocab_size}; "
                             "use a smaller --beam-width")
        return seed_ids, unknown

    def _chunks(self, request: Request) -> Iterator[list[Sample]]:
        """Run the compiled loop chunk by chunk; after each chunk yield the samples so far."""
        seed_ids, _ = self._prepare(request)
        if request.sampler.beam:
            yield from self._beam(request, seed_ids)
            return
        batch, sampler = request.num_samples, request.sampler
        plan = self._plan(sampler, batch)
        states, last = self._start(seed_ids, batch, plan)
        penalised = request.repetition_penalty != 1.0
        loop = self._function("sample", plan, sampler, penalised)
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
            n = min(FIRST_CHUNK if produced == 0 else CHUNK, request.length - produced)
            uniforms = self._uniforms(request.random_seed, produced, batch) if sampler.stochastic else \
                np.zeros((CHUNK, batch), np.float32)
            tokens, states, last, seen = loop(states, last, seen, tf.constant(n, tf.int32), tf.constant(uniforms),
                                              penalty, values)
            tokens = tokens.numpy()[:n].T
            for i in range(batch):
                if done[i]:
                    continue
                before = len(texts[i])
                texts[i] += decoders[i].push(tokens[i])
                counts[i] += n
                cut = self._find_end(texts[i], before, counts[i], decoders[i], request)
                if cut is not None:
                    texts[i], done[i] = texts[i][:cut[0]], cut[1]
                    counts[i] = _tokens_within(decoders[i], cut[0], counts[i])
            produced += n
            yield [Sample(texts[i], counts[i], done[i] or "length") for i in range(batch)]

    @staticmethod
    def _uniforms(random_seed: int, offset: int, batch: int) -> np.ndarray:
        """(CHUNK, batch) uniform numbers for the chunk starting at token `offset`.

        Drawn with numpy's seeded generator outside the compiled loop, so a random seed means
        the same text however the loop is compiled, in every process.
        """
        rng = np.random.default_rng([random_seed, offset])
        return rng.random((batch, CHUNK), dtype=np.float32).T.copy()

    def _beam(self, request: Request, seed_ids: np.ndarray) -> Iterator[list[Sample]]:
        """Beam search over `request.length` tokens, chunk by chunk; yields the best beam at the end."""
        width = request.sampler.beam_width
        states, last = self._start(seed_ids, width)
        scores = tf.constant([0.0] + [-np.inf] * (width - 1), tf.float32)  # one live beam at first
        loop = self._function("beam", _Plan(jit=self.jit_compile is not False), request.sampler)
        tokens, parents, produced = [], [], 0
        while produced < request.length:
            n = min(CHUNK, request.length - produced)
            chunk_tokens, chunk_parents, states, scores, last = loop(states, scores, last, tf.constant(n, tf.int32))
            tokens.append(chunk_tokens.numpy()[:n])
            parents.append(chunk_parents.numpy()[:n])
            produced += n
        if produced == 0:
            return
        scores = scores.numpy()
        ids = _backtrack(np.concatenate(tokens), np.concatenate(parents), int(np.argmax(scores)))
        decoder = self.tokenizer.decoder(seed_ids, request.seed)
        text = decoder.push(ids)
        cut = self._find_end(text, 0, len(ids), decoder, request)
        stopped_by, count = "length", len(ids)
        if cut is not None:
            text, stopped_by, count = text[:cut[0]], cut[1], _tokens_within(decoder, cut[0], len(ids))
        yield [Sample(text, count, stopped_by, float(np.max(scores)))]

    def _start(self, seed_ids: np.ndarray, batch: int, plan: "_Plan | None" = None):
        """Run all but the last seed token through the network; the last one starts the loop.

        Every row starts from the same seed, so for textgen's own steppers the seed runs once,
        as one row in float32 with XLA, and its states are copied to every row in the plan's
        layout: priming a 64-row bfloat16 batch row by row cost about 5% of a 1000-token run.
        """
        plan = plan or _Plan()
        stepper = self._stepper(plan)
        if isinstance(self.stepper, RecurrentStepper) and isinstance(stepper, (RecurrentStepper, PackedColumnStepper)):
            states = self._prime(_Plan(jit=self.jit_compile is not False), seed_ids, 1)
            columns = stepper.batch_axis == 1
            states = [[tf.tile(tf.transpose(s), [1, batch]) if columns else tf.tile(s, [batch, 1]) for s in layer]
                      for layer in states]
        else:
            states = self._prime(plan, seed_ids, batch)
        last = tf.fill([batch], tf.constant(int(seed_ids[-1]), tf.int32))
        return states, last

    def _prime(self, plan: "_Plan", seed_ids: np.ndarray, batch: int):
        states = self._stepper(plan).initial_states(batch)
        length = len(seed_ids) - 1
        if length:
            # Padded to a power of two (at least 64) so XLA compiles once per size class, not per seed.
            prefix = np.zeros(max(64, 1 << (length - 1).bit_length()), np.int32)
            prefix[:length] = seed_ids[:-1]
            states = self._function("prime", plan)(states, tf.constant(prefix), tf.constant(length, tf.int32))
        return states

    def _stepper(self, plan: "_Plan"):
        packed = plan.dtype == tf.bfloat16 and not plan.jit and PackedColumnStepper.supports(self.model)
        key = (plan.dtype, packed)
        if key not in self._steppers:
            self._steppers[key] = PackedColumnStepper(self.model) if packed else make_stepper(self.model, plan.dtype)
        return self._steppers[key]

    def _function(self, kind: str, plan: "_Plan", sampler: Sampler | None = None, penalised: bool = False):
        """The compiled function of one kind, traced once per plan, sampler class and penalty switch."""
        key = (kind, plan, type(sampler), penalised)
        if key not in self._functions:
            stepper = self._stepper(plan)
            make = {"prime": _make_prime, "score": _make_score, "step": _make_step,
                    "sample": functools.partial(_make_sample_loop, sampler=sampler, penalised=penalised),
                    "beam": functools.partial(_make_beam_loop, sampler=sampler)}[kind]
            # TensorFlow counts traces by the code of the function, so every Generator's first
            # calls looked like retracing in a loop and a process loading several models was
            # warned about it; a partial has no code of its own and is counted on its own.
            self._functions[key] = tf.function(functools.partial(make(stepper, self._banned)),
                                               jit_compile=plan.jit, reduce_retracing=True)
        return self._functions[key]

    # ------------------------------------------------------------------ helpers

    def _banned_ids(self):
        """Tokens never generated (the unknown-word token)."""
        if self.tokenizer.unk_id is None:
            return None
        mask = np.zeros(self.tokenizer.vocab_size, dtype=bool)
        mask[self.tokenizer.unk_id] = True
        return tf.constant(mask)

    @staticmethod
    def _find_end(text: str, before: int, count: int, decoder, request: Request):
        """(cut position, reason) of the earliest stop after the minimum length, or None.

        `before` is the length of text already searched; a stop string or sentence end can
        straddle that boundary, so the search starts a little earlier.
        """
        if not request.stop and not request.end_at_sentence:
            return None
        if request.min_length and count < request.min_length:
            return None
        min_chars = decoder.chars_for_tokens(request.min_length) if request.min_length else 0
        lookback = max([_STOP_LOOKBACK] + [len(s) for s in request.stop])
        start = max(before - lookback, min_chars)
        best = None
        for stop in request.stop:
            pos = text.find(stop, start)
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, "stop")
        if request.end_at_sentence:
            match = _SENTENCE_END.search(text, start)
            if match is not None and (best is None or match.end() < best[0]):
                best = (match.end(), "sentence")
        return best


class StepSession:
    """Generation one token at a time, driven by the caller: the interactive CLI's engine.

    After the seed, `candidates()` lists the most likely next tokens; `choose` appends one,
    `append_text` appends the caller's own text, `back` undoes the last appended tokens.
    Nothing here reads from the terminal.
    """

    def __init__(self, generator: Generator, seed: str, strict: bool = False):
        self.generator = generator
        self.seed = seed
        self.seed_ids, _ = generator.encode_seed(seed, strict)
        self._step = generator._function("step", _Plan())
        states, last = generator._start(self.seed_ids, 1)
        self._stack = [(states, last)]  # states before feeding `last`, one entry per appended token
        self.ids: list[int] = []
        self._next = None  # (probabilities, states after feeding the top entry's `last`)

    @property
    def text(self) -> str:
        """The text appended after the seed so far."""
        if not self.ids:
            return ""
        return self.generator.tokenizer.decoder(self.seed_ids, self.seed).push(np.array(self.ids, np.int32))

    def candidates(self, k: int = 10, temperature: float = 1.0) -> list[tuple[int, str, float]]:
        """The k most likely next tokens as (token id, text, probability), most likely first."""
        if temperature <= 0:
            raise UsageError(f"temperature must be greater than 0 to show probabilities, got {temperature}")
        logits = self._advance()[0] / temperature
        if self.generator._banned is not None:
            logits = np.where(self.generator._banned.numpy(), -np.inf, logits)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")[:k]
        return [(int(i), self.generator.tokenizer.decode([int(i)]), float(probs[i])) for i in order]

    def choose(self, token_id: int) -> None:
        """Append one token."""
        if not 0 <= token_id < self.generator.tokenizer.vocab_size:
            raise UsageError(f"token id {token_id} is outside the vocabulary "
                             f"(0..{self.generator.tokenizer.vocab_size - 1})")
        _, states = self._advance()
        self._stack.append((states, tf.constant([token_id], tf.int32)))
        self.ids.append(int(token_id))
        self._next = None

    def append_text(self, text: str) -> int:
        """Append the tokens of `text`; returns how many. Unknown characters are a UsageError."""
        ids, unknown = self.generator.tokenizer.encode_lenient(text)
        if unknown:
            raise UsageError(f"{', '.join(repr(t) for t in unknown[:10])} not in the model's vocabulary")
        for token_id in np.asarray(ids).tolist():
            self.choose(token_id)
        return len(ids)

    def back(self, n: int = 1) -> int:
        """Remove up to the last n appended tokens (never the seed); returns how many were removed."""
        n = max(0, min(n, len(self.ids)))
        for _ in range(n):
            self._stack.pop()
            self.ids.pop()
        self._next = None
        return n

    def _advance(self):
        if self._next is None:
            states, last = self._stack[-1]
            logits, after = self._step(states, last)
            self._next = (logits.numpy()[0], after)
        return self._next


# ---------------------------------------------------------------------- compiled functions


def _make_prime(stepper, banned):
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


def _make_step(stepper, banned):
    def step(states, last):
        logits, states = stepper.step(last, states)
        return logits, states
    return step


def _make_score(stepper, banned):
    def score(states, inputs, targets):
        def body(t, states, total):
            logits, states = stepper.step(inputs[t][None], states)
            return t + 1, states, total + tf.nn.log_softmax(logits)[0, targets[t]]

        _, _, total = tf.while_loop(lambda t, *_: t < tf.shape(inputs)[0], body,
                                    (tf.constant(0), states, tf.constant(0.0)))
        return total
    return score


def _make_sample_loop(stepper, banned, sampler, penalised):
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


def _make_beam_loop(stepper, banned, sampler):
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


def _tokens_within(decoder, chars: int, upper: int) -> int:
    """How many of the first `upper` decoded tokens end within the first `chars` characters."""
    low, high = 0, upper
    while low < high:
        middle = (low + high + 1) // 2
        if decoder.chars_for_tokens(middle) <= chars:
            low = middle
        else:
            high = middle - 1
    return low


def _backtrack(tokens: np.ndarray, parents: np.ndarray, beam: int) -> np.ndarray:
    """The token sequence ending in `beam`, following the parent pointers back to the start."""
    ids = np.empty(len(tokens), np.int32)
    for t in range(len(tokens) - 1, -1, -1):
        ids[t] = tokens[t, beam]
        beam = parents[t, beam]
    return ids


def _apply_penalty(logits, seen, penalty):
    """Divide positive logits (multiply negative ones) of tokens already present by `penalty`."""
    penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalised, logits)
