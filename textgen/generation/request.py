"""What a generation call asks for (`Request`), what it returns (`Sample`), and where a sample ends."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from textgen.errors import UsageError
from textgen.generation.loops import MAX_RANDOM_SEED
from textgen.generation.samplers import GreedySampler, Sampler, require_whole

MAX_NUM_SAMPLES = 100_000
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
_STOP_LOOKBACK = 64  # characters before a new chunk searched again for a sentence end


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
    labels: tuple[str, ...] = ()  # --label specs of a conditioned model (textgen.labels); () is `any`

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
        if isinstance(self.labels, str):
            raise UsageError(f"labels is a sequence of --label specs; write labels=({self.labels!r},)")
        if any(s == "" for s in self.stop):
            raise UsageError("a stop string cannot be empty")
        if self.random_seed < 0:
            raise UsageError(f"random seed must be 0 or more, got {self.random_seed}")
        if self.random_seed > MAX_RANDOM_SEED:
            raise UsageError(f"random seed must be at most 2**63-1, got {self.random_seed}")
        if self.sampler.beam and self.num_samples != 1:
            raise UsageError("beam search returns the single most likely text; drop --num-samples or --beam-width")
        if self.sampler.beam and self.repetition_penalty != 1.0:
            raise UsageError("beam search scores the model's own probabilities; "
                             "drop --repetition-penalty or --beam-width")


def find_end(text: str, before: int, count: int, decoder, request: Request):
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


def tokens_within(decoder, chars: int, upper: int) -> int:
    """How many of the first `upper` decoded tokens end within the first `chars` characters."""
    low, high = 0, upper
    while low < high:
        middle = (low + high + 1) // 2
        if decoder.chars_for_tokens(middle) <= chars:
            low = middle
        else:
            high = middle - 1
    return low
