"""Sampling strategies: how the next token is picked from the model's logits.

A base `Sampler` draws from the temperature-scaled distribution; each strategy overrides
one method: `filter_logits` (top-k, top-p), `next_token` (greedy) or `next_beams` (beam
search). The engine in `textgen.generation.generate` owns the compiled loops and calls these methods
while tracing them, so every method here works on whole batches of TensorFlow tensors.

Hyper-parameters reach the compiled loop as tensors (`values()`), so changing a temperature
or k does not retrace or recompile it; only a different strategy class does. Randomness is
explicit: the engine hands `next_token` one uniform number in [0, 1) per row, drawn from
the user's random seed, and drawing is an inverse-CDF lookup. `make_sampler` turns the
command line's and the API's options into a strategy; each one's `get_config()` holds its
constructor arguments under the same names, so `type(s)(**s.get_config())` rebuilds it.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from textgen.errors import UsageError

_NEG_INF = -float("inf")
_BELOW_ONE = 1.0 - 2.0**-22  # u x total stays below total after rounding


def draw(logits, uniform):
    """One token per row from softmax(logits), by inverse CDF with `uniform` (batch,) in [0, 1).

    The token drawn is the first whose cumulative weight exceeds uniform x total weight.
    Tokens whose logit is -inf have weight 0 and are never drawn: that needs the threshold
    to stay strictly below the total, hence the cap on `uniform` (float32 rounding).
    """
    weights = tf.exp(logits - tf.reduce_max(logits, axis=-1, keepdims=True))
    cdf = tf.math.cumsum(weights, axis=-1)
    threshold = tf.minimum(uniform, _BELOW_ONE)[:, None] * cdf[:, -1:]
    return tf.searchsorted(cdf, threshold, side="right", out_type=tf.int32)[:, 0]  # how many cdf <= threshold


def top_k_filter(logits, k):
    """`logits` with all but the k largest of each row set to -inf (k is clipped to the vocabulary).

    k is one number for every row or one per row (batch,).
    """
    # A sort and a gather rather than tf.math.top_k: k stays a tensor, which XLA allows.
    k = tf.broadcast_to(tf.minimum(k, tf.shape(logits)[-1]), tf.shape(logits)[:1])
    kth = tf.gather(tf.sort(logits, axis=-1, direction="DESCENDING"), k - 1, axis=-1, batch_dims=1)[:, None]
    return tf.where(logits < kth, tf.constant(_NEG_INF, logits.dtype), logits)


def top_p_filter(logits, p):
    """`logits` with -inf outside each row's nucleus: the fewest tokens whose probabilities reach p.

    p is one number for every row or one per row (batch,); p = 1 keeps every token.
    """
    sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
    probs = tf.nn.softmax(sorted_logits, axis=-1)
    # Mass strictly before each token; a token is kept while that mass is below p,
    # so the most likely token is always kept. At p = 1 rounding could make that mass reach
    # 1 before the last tokens, so p = 1 keeps all explicitly: the whole vocabulary, as
    # plain sampling draws from.
    before = tf.math.cumsum(probs, axis=-1, exclusive=True)
    p = tf.reshape(tf.cast(p, probs.dtype), [-1, 1])
    keep = (before < p) | (p >= 1.0)
    n_keep = tf.maximum(tf.reduce_sum(tf.cast(keep, tf.int32), axis=-1), 1)
    threshold = tf.gather(sorted_logits, n_keep - 1, axis=-1, batch_dims=1)[:, None]
    return tf.where(logits < threshold, tf.constant(_NEG_INF, logits.dtype), logits)


# Temperatures a sampler accepts. Outside them logits / temperature in float32 overflows
# (1e-38 became infinity and drew token 0, a word model's <unk>) or rounds to zero (1e-50),
# while 1e-6 is already greedy and 1e6 already uniform.
TEMPERATURE_RANGE = (1e-6, 1e6)


class Sampler:
    """Draw the next token from softmax(logits / temperature)."""

    name = ""
    stochastic = True  # needs random numbers; the engine skips drawing them otherwise
    beam = False  # searches over beams instead of drawing one token per sample

    def __init__(self, temperature: float = 1.0):
        if not 0 < temperature < math.inf:  # NaN and infinity too
            raise UsageError(f"temperature must be greater than 0 for {self.name or 'random'} sampling, "
                             f"got {temperature}; use the greedy sampler (temperature 0) instead")
        low, high = TEMPERATURE_RANGE
        if not low <= temperature <= high:
            raise UsageError(f"temperature must be between {low:g} and {high:g} for {self.name or 'random'} "
                             f"sampling, got {temperature:g}; use 0 for greedy decoding")
        self.temperature = float(temperature)

    def values(self) -> dict:
        """Hyper-parameters as plain numbers; the engine turns them into loop tensors."""
        return {"temperature": self.temperature}

    def get_config(self) -> dict:
        """Constructor arguments, under the same names (`type(self)(**config)` rebuilds it)."""
        return self.values()

    def filter_logits(self, logits, values):
        """Mask tokens that may not be drawn (set their logits to -inf). Default: none."""
        return logits

    def next_token(self, logits, uniform, values):
        """Pick one token per row of `logits` (batch, vocab); `uniform` is (batch,) in [0, 1)."""
        return draw(self.filter_logits(logits / values["temperature"], values), uniform)

    def describe(self) -> dict:
        return {"sampler": self.name, **self.values()}


class GreedySampler(Sampler):
    """Always the most likely token (temperature 0)."""

    name = "greedy"
    stochastic = False

    def __init__(self):
        self.temperature = 0.0

    def values(self) -> dict:
        return {}

    def next_token(self, logits, uniform, values):
        return tf.argmax(logits, axis=-1, output_type=tf.int32)


class RandomSampler(Sampler):
    """Plain sampling from the whole temperature-scaled distribution."""

    name = "random"


class TopKSampler(Sampler):
    """Sample among the k most likely tokens only."""

    name = "top_k"

    def __init__(self, top_k: int = 40, temperature: float = 1.0):
        super().__init__(temperature)
        if int(top_k) < 1:
            raise UsageError(f"top-k must be at least 1, got {top_k}")
        # k is clipped to the vocabulary when sampling; clip it here to what an int32 tensor
        # holds, where 2**32 + 1 would wrap around to 1 (greedy).
        self.top_k = min(int(top_k), 2**31 - 1)

    def values(self) -> dict:
        return {**super().values(), "top_k": self.top_k}

    def filter_logits(self, logits, values):
        return top_k_filter(logits, values["top_k"])


class TopPSampler(Sampler):
    """Nucleus sampling: the smallest set of tokens whose probabilities sum to at least p."""

    name = "top_p"

    def __init__(self, top_p: float = 0.9, temperature: float = 1.0):
        super().__init__(temperature)
        if not 0.0 < float(top_p) <= 1.0:
            raise UsageError(f"top-p must be in (0, 1], got {top_p}")
        self.top_p = float(top_p)

    def values(self) -> dict:
        return {**super().values(), "top_p": self.top_p}

    def filter_logits(self, logits, values):
        return top_p_filter(logits, values["top_p"])


class BeamSampler(Sampler):
    """Beam search: keep the `beam_width` most likely sequences, return the most likely one.

    The engine runs the beams as one batch; at each step every beam's log-probabilities are
    added to its score and `next_beams` keeps the best `beam_width` of all extensions.
    Width 1 is greedy decoding.
    """

    name = "beam"
    stochastic = False
    beam = True

    def __init__(self, beam_width: int = 4):
        if int(beam_width) < 1:
            raise UsageError(f"beam width must be at least 1, got {beam_width}")
        self.beam_width = int(beam_width)
        self.temperature = 0.0

    def values(self) -> dict:
        return {"beam_width": self.beam_width}

    def next_token(self, logits, uniform, values):
        raise TypeError("beam search picks whole beams; the engine calls next_beams")

    def next_beams(self, scores, log_probs):
        """scores (beams,), log_probs (beams, vocab) -> (parent beam, token, new score), each (beams,)."""
        beams, vocab = tf.shape(log_probs)[0], tf.shape(log_probs)[1]
        totals = tf.reshape(scores[:, None] + log_probs, [-1])
        best, index = tf.math.top_k(totals, k=beams, sorted=True)
        return index // vocab, index % vocab, best


class TensorSampler(Sampler):
    """Every strategy but beam search in one compiled loop, chosen per call by tensor values.

    For graphs whose options arrive as tensors (an exported model's signature, a server's
    batch of requests): temperature 0 or below is greedy; top_k above 0 keeps the k most
    likely tokens; top_p below 1 keeps the nucleus (after top-k when both are given). Each
    value is one number for the whole batch, or one per row (shape (batch,)) so every row
    keeps its own strategy. Each branch is computed exactly as the matching strategy class
    computes it, so the same logits and uniform numbers pick the same token as
    `make_sampler`'s sampler for those options.
    """

    name = "tensor"

    def __init__(self):
        self.temperature = 1.0

    def values(self) -> dict:
        return {"temperature": 1.0, "top_k": 0, "top_p": 1.0}

    def filter_logits(self, logits, values):
        k, p = tf.convert_to_tensor(values["top_k"]), tf.convert_to_tensor(values["top_p"])
        if k.shape.rank == 0:  # one strategy for all rows: skip the filters it does not use
            logits = tf.cond(k > 0, lambda: top_k_filter(logits, tf.maximum(k, 1)), lambda: logits)
            return tf.cond(p < 1.0, lambda: top_p_filter(logits, p), lambda: logits)
        # Per row: a filter runs when any row uses it; rows that do not keep their logits.
        logits = tf.cond(tf.reduce_any(k > 0),
                         lambda: tf.where(k[:, None] > 0, top_k_filter(logits, tf.maximum(k, 1)), logits),
                         lambda: logits)
        return tf.cond(tf.reduce_any(p < 1.0),
                       lambda: tf.where(p[:, None] < 1.0, top_p_filter(logits, p), logits), lambda: logits)

    def next_token(self, logits, uniform, values):
        temperature = tf.cast(values["temperature"], logits.dtype)
        greedy = temperature <= 0.0
        divisor = tf.where(greedy, tf.constant(1.0, logits.dtype), temperature)
        scaled = logits / (divisor[:, None] if divisor.shape.rank == 1 else divisor)
        drawn = draw(self.filter_logits(scaled, values), uniform)
        return tf.where(greedy, tf.argmax(logits, axis=-1, output_type=tf.int32), drawn)


def require_whole(value, name: str) -> None:
    """API callers can pass anything; a count must be an int (not a bool or 2.5)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UsageError(f"{name} must be a whole number, got {value!r}")


def make_sampler(temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 beam_width: int | None = None) -> Sampler:
    """The sampler a set of CLI/API options means. Temperature 0 is greedy; None means 1.0.

    Beam search picks the most likely continuation, so it does not combine with sampling
    options.
    """
    for name, value in (("top-k", top_k), ("beam width", beam_width)):
        if value is not None:
            require_whole(value, name)
    if beam_width is not None:
        given = [flag for flag, value in (("--temperature", temperature), ("--top-k", top_k), ("--top-p", top_p))
                 if value is not None]
        if given:
            raise UsageError(f"beam search returns the most likely text and does not sample; "
                             f"drop {'/'.join(given)} or --beam-width")
        return BeamSampler(beam_width=beam_width)
    temperature = 1.0 if temperature is None else temperature
    if not math.isfinite(temperature):
        raise UsageError(f"temperature must be a finite number, got {temperature}")
    if temperature < 0:
        raise UsageError(f"temperature must be 0 (greedy) or more, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"top-k must be at least 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UsageError(f"top-p must be in (0, 1], got {top_p}")
    if temperature == 0:
        if top_k not in (None, 1) or top_p is not None:
            raise UsageError("temperature 0 is greedy decoding; drop --top-k/--top-p or use a temperature above 0")
        return GreedySampler()
    if top_k is not None and top_p is not None:
        raise UsageError("give either --top-k or --top-p, not both")
    if top_k is not None:
        return TopKSampler(top_k=top_k, temperature=temperature)
    if top_p is not None:
        return TopPSampler(top_p=top_p, temperature=temperature)
    return RandomSampler(temperature=temperature)
