"""Generation: load a .keras file and sample text from a seed.

The seed runs through the network once; after that every new token is one recurrent step
with the states carried forward. The step loop runs inside one compiled `tf.function`
(a `tf.while_loop`) that produces a chunk of tokens per call, for a whole batch of samples
at once; Python only decodes finished chunks (to stream them) and checks stop strings
between chunks. The cost of a token does not depend on how much text came before it.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf

from textgen.errors import ModelFileError, UsageError
from textgen.layers import FORMAT_VERSION, find_token_embedding
from textgen.model import recurrent_layers
from textgen.samplers import GreedySampler, Sampler, make_sampler
from textgen.tokenizer import Tokenizer, tokenizer_from_config

FIRST_CHUNK = 16  # tokens in the first compiled call, so streamed output appears at once
CHUNK = 256  # tokens per later call; amortises the call overhead
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")


def load_keras_model(path: str | Path) -> keras.Model:
    """Load a textgen .keras file safely, with a one-line error for every way it can be wrong."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist; train one with `textgen train`")
    if path.is_dir():
        raise ModelFileError(f"model path {path} is a directory; give the model.keras file inside it")
    if path.suffix != ".keras":
        raise ModelFileError(f"model file {path} is not a .keras file; give the model.keras of a run")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"model file {path} is not a valid .keras archive (truncated or not a model); "
                             "retrain or copy it again")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for broken or foreign files
        raise ModelFileError(f"model file {path} cannot be loaded: {_first_line(exc)}") from None
    embedding = find_token_embedding(model)
    if embedding is None or not embedding.tokenizer:
        raise ModelFileError(f"model file {path} is a Keras model but not a textgen model "
                             "(it carries no tokenizer); train it with `textgen train`")
    version = embedding.model_card.get("format_version", 1)
    if version > FORMAT_VERSION:
        raise ModelFileError(f"model file {path} uses textgen format {version}, newer than this textgen "
                             f"understands ({FORMAT_VERSION}); upgrade with `pip install -U textgen`")
    return model


def load(path: str | Path) -> "Generator":
    """Load a textgen model file and return a `Generator` for it."""
    return Generator(load_keras_model(path))


@dataclass
class Sample:
    """One generated text and why it ended."""

    text: str
    tokens: int
    stopped_by: str = "length"  # length | stop | sentence


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
        if self.length < 0:
            raise UsageError(f"length must be 0 or more, got {self.length}")
        if self.min_length < 0:
            raise UsageError(f"min-length must be 0 or more, got {self.min_length}")
        if self.min_length > self.length:
            raise UsageError(f"min-length ({self.min_length}) cannot exceed length ({self.length})")
        if self.num_samples < 1:
            raise UsageError(f"num-samples must be at least 1, got {self.num_samples}")
        if self.repetition_penalty < 1.0:
            raise UsageError(f"repetition penalty must be 1 (off) or more, got {self.repetition_penalty}")
        if any(s == "" for s in self.stop):
            raise UsageError("a stop string cannot be empty")


class RecurrentStepper:
    """One token step through a sequence model's layers, with explicit recurrent states."""

    def __init__(self, model: keras.Model):
        self.embedding = find_token_embedding(model)
        self.cells = [layer.cell for layer in recurrent_layers(model)]
        if not self.cells:
            raise ModelFileError(f"model {model.name} has no recurrent layers to step through")
        self.head = model.get_layer("logits")

    def initial_states(self, batch_size):
        states = []
        for cell in self.cells:
            sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
            states.append([tf.zeros([batch_size, size], dtype=cell.compute_dtype) for size in sizes])
        return states

    def step(self, token_ids, states):
        """token_ids: (batch,) int32 -> logits (batch, vocab) float32, new states."""
        x = self.embedding(token_ids)
        new_states = []
        for cell, state in zip(self.cells, states):
            x, state_out = cell(x, state, training=False)
            new_states.append(list(tf.nest.flatten(state_out)))
        return tf.cast(self.head(x), tf.float32), new_states


class Generator:
    """Samples text from a loaded textgen model. Build it with `textgen.load(path)`."""

    def __init__(self, model: keras.Model):
        self.model = model
        embedding = find_token_embedding(model)
        self.tokenizer: Tokenizer = tokenizer_from_config(embedding.tokenizer)
        self.model_card = embedding.model_card
        self.stepper = RecurrentStepper(model)
        self._banned = self._banned_ids()
        self._prime_fn = tf.function(self._prime, reduce_retracing=True)
        self._loops: dict[type, tf.types.experimental.GenericFunction] = {}

    # ------------------------------------------------------------------ public API

    def generate(self, seed: str, length: int = 200, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, num_samples: int = 1, random_seed: int = 0,
                 repetition_penalty: float = 1.0, min_length: int = 0, stop=(), end_at_sentence: bool = False,
                 strict: bool = False, sampler: Sampler | None = None) -> list[str]:
        """Return `num_samples` continuations of `seed` (the seed itself not included)."""
        request = Request(seed=seed, length=length, sampler=sampler or make_sampler(temperature, top_k, top_p),
                          num_samples=num_samples, random_seed=random_seed,
                          repetition_penalty=repetition_penalty, min_length=min_length,
                          stop=tuple(stop), end_at_sentence=end_at_sentence, strict=strict)
        return [sample.text for sample in self.run(request)]

    def stream(self, request: Request) -> Iterator[str]:
        """Yield the text of a single sample piece by piece as chunks are generated."""
        if request.num_samples != 1:
            raise UsageError("streaming produces one sample; set num_samples to 1")
        emitted = 0
        for samples in self._chunks(request):
            text = samples[0].text
            if len(text) > emitted:
                yield text[emitted:]
                emitted = len(text)

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

    # ------------------------------------------------------------------ the engine

    def _chunks(self, request: Request) -> Iterator[list[Sample]]:
        """Run the compiled loop chunk by chunk; after each chunk yield the samples so far."""
        seed_ids, _ = self.encode_seed(request.seed, request.strict)
        batch = request.num_samples
        states, last = self._start(seed_ids, batch)
        loop = self._loop_for(request.sampler)
        values = {k: tf.constant(v, dtype=tf.int32 if isinstance(v, int) else tf.float32)
                  for k, v in request.sampler.values().items()}
        seen = np.zeros((batch, self.tokenizer.vocab_size), dtype=bool)
        seen[:, np.unique(seed_ids)] = True
        seen = tf.constant(seen)
        decoders = [self.tokenizer.decoder(seed_ids) for _ in range(batch)]
        texts = [""] * batch
        counts = [0] * batch
        done: list[str | None] = [None] * batch
        produced = 0
        while produced < request.length and not all(done):
            n = min(FIRST_CHUNK if produced == 0 else CHUNK, request.length - produced)
            tokens, states, last, seen = loop(states, last, seen, tf.constant(produced, tf.int32),
                                              tf.constant(n, tf.int32), tf.constant(request.random_seed, tf.int64),
                                              tf.constant(request.repetition_penalty, tf.float32), values)
            tokens = tokens.numpy()
            for i in range(batch):
                if done[i]:
                    continue
                before = len(texts[i])
                texts[i] += decoders[i].push(tokens[i])
                counts[i] += n
                min_chars = self._min_chars(texts[i], counts[i], request.min_length, decoders[i])
                cut = self._find_end(texts[i], max(before - 64, 0), min_chars, request)
                if cut is not None:
                    texts[i], done[i] = texts[i][:cut[0]], cut[1]
            produced += n
            yield [Sample(texts[i], counts[i], done[i] or "length") for i in range(batch)]

    def _start(self, seed_ids: np.ndarray, batch: int):
        """Run all but the last seed token through the network; the last one starts the loop."""
        states = self.stepper.initial_states(batch)
        prefix = np.broadcast_to(seed_ids[:-1], (batch, len(seed_ids) - 1)).astype(np.int32)
        if prefix.shape[1]:
            states = self._prime_fn(states, tf.constant(prefix))
        last = tf.fill([batch], tf.constant(int(seed_ids[-1]), tf.int32))
        return states, last

    def _prime(self, states, prefix):
        def body(t, states):
            _, states = self.stepper.step(prefix[:, t], states)
            return t + 1, states

        _, states = tf.while_loop(lambda t, s: t < tf.shape(prefix)[1], body, (tf.constant(0), states))
        return states

    def _loop_for(self, sampler: Sampler):
        """The compiled chunk loop for this sampler class (traced once per class)."""
        key = type(sampler)
        if key not in self._loops:
            self._loops[key] = tf.function(self._make_loop(sampler), reduce_retracing=True)
        return self._loops[key]

    def _make_loop(self, sampler: Sampler):
        stepper, banned = self.stepper, self._banned

        def loop(states, last, seen, offset, n, random_seed, penalty, values):
            batch = tf.shape(last)[0]
            out = tf.TensorArray(tf.int32, size=n)

            def body(t, states, last, seen, out):
                logits, states = stepper.step(last, states)
                logits = _apply_penalty(logits, seen, penalty)
                if banned is not None:
                    logits = tf.where(banned, tf.constant(-float("inf")), logits)
                seed = tf.stack([random_seed, tf.cast(offset + t, tf.int64)])
                token = sampler.next_token(logits, seed, values)
                seen = tf.logical_or(seen, tf.one_hot(token, tf.shape(seen)[1], on_value=True, off_value=False))
                return t + 1, states, token, seen, out.write(t, token)

            _, states, last, seen, out = tf.while_loop(
                lambda t, *_: t < n, body, (tf.constant(0), states, last, seen, out))
            tokens = tf.transpose(out.stack())  # (batch, n)
            return tf.reshape(tokens, [batch, n]), states, last, seen

        return loop

    # ------------------------------------------------------------------ helpers

    def _banned_ids(self):
        """Tokens never generated (the unknown-word token)."""
        if self.tokenizer.unk_id is None:
            return None
        mask = np.zeros(self.tokenizer.vocab_size, dtype=bool)
        mask[self.tokenizer.unk_id] = True
        return tf.constant(mask)

    @staticmethod
    def _min_chars(text: str, count: int, min_length: int, decoder) -> int:
        """Characters of `text` covered by the first `min_length` tokens."""
        if min_length == 0:
            return 0
        return decoder.chars_for_tokens(min_length) if count >= min_length else len(text) + 1

    @staticmethod
    def _find_end(text: str, start: int, min_chars: int, request: Request):
        """(cut position, reason) of the earliest stop after the minimum length, or None."""
        best = None
        for stop in request.stop:
            pos = text.find(stop, max(start, min_chars))
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, "stop")
        if request.end_at_sentence:
            match = _SENTENCE_END.search(text, max(start, min_chars))
            while match is not None and match.start() < min_chars:
                match = _SENTENCE_END.search(text, match.end())
            if match is not None and (best is None or match.end() < best[0]):
                best = (match.end(), "sentence")
        return best


def _apply_penalty(logits, seen, penalty):
    """Divide positive logits (multiply negative ones) of tokens already present by `penalty`."""
    penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalised, logits)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__

