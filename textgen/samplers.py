"""Sampling strategies: how the next token is picked from the model's logits.

A base `Sampler` draws from the temperature-scaled distribution; each strategy overrides
`next_token` (or the `filter_logits` step before it). Hyper-parameters are handed to the
compiled generation loop as tensors (`values()`), so changing a temperature or k does not
retrace the loop; only a different strategy class does. Strategies are registered by name
so a flag or config can select one.
"""

from __future__ import annotations

import tensorflow as tf

from textgen.errors import UsageError

_SAMPLERS: dict[str, type["Sampler"]] = {}


def register_sampler(cls):
    _SAMPLERS[cls.name] = cls
    return cls


def get_sampler(name: str, **kwargs) -> "Sampler":
    if name not in _SAMPLERS:
        raise UsageError(f"unknown sampler {name!r}; choose one of {', '.join(sorted(_SAMPLERS))}")
    return _SAMPLERS[name](**kwargs)


def sampler_names() -> list[str]:
    return sorted(_SAMPLERS)


class Sampler:
    """Draw the next token from softmax(logits / temperature)."""

    name = ""

    def __init__(self, temperature: float = 1.0):
        if temperature <= 0:
            raise UsageError(f"temperature must be greater than 0 for {self.name or 'random'} sampling, "
                             f"got {temperature}; use the greedy sampler (temperature 0) instead")
        self.temperature = float(temperature)

    def values(self) -> dict:
        """Hyper-parameters as plain numbers; the engine turns them into loop tensors."""
        return {"temperature": self.temperature}

    def filter_logits(self, logits, values):
        """Mask tokens that may not be drawn (set their logits to -inf). Default: none."""
        return logits

    def next_token(self, logits, seed, values):
        """Pick one token per row. `seed` is a shape-[2] int tensor for stateless ops."""
        logits = self.filter_logits(logits / values["temperature"], values)
        return tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[:, 0]

    def describe(self) -> dict:
        return {"sampler": self.name, **self.values()}


@register_sampler
class GreedySampler(Sampler):
    """Always the most likely token (temperature 0)."""

    name = "greedy"

    def __init__(self, temperature: float = 0.0):
        self.temperature = 0.0

    def values(self) -> dict:
        return {}

    def next_token(self, logits, seed, values):
        return tf.argmax(logits, axis=-1, output_type=tf.int32)


@register_sampler
class RandomSampler(Sampler):
    """Plain sampling from the whole temperature-scaled distribution."""

    name = "random"


@register_sampler
class TopKSampler(Sampler):
    """Sample among the k most likely tokens only."""

    name = "top_k"

    def __init__(self, top_k: int = 40, temperature: float = 1.0):
        super().__init__(temperature)
        if int(top_k) < 1:
            raise UsageError(f"top-k must be at least 1, got {top_k}")
        self.top_k = int(top_k)

    def values(self) -> dict:
        return {**super().values(), "top_k": self.top_k}

    def filter_logits(self, logits, values):
        k = tf.minimum(values["top_k"], tf.shape(logits)[-1])
        kth = tf.math.top_k(logits, k=k).values[:, -1:]
        return tf.where(logits < kth, tf.constant(-float("inf"), logits.dtype), logits)


@register_sampler
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
        sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
        probs = tf.nn.softmax(sorted_logits, axis=-1)
        # Mass strictly before each token; a token is kept while that mass is below p,
        # so the most likely token is always kept.
        before = tf.math.cumsum(probs, axis=-1, exclusive=True)
        keep = before < tf.cast(values["top_p"], probs.dtype)
        n_keep = tf.maximum(tf.reduce_sum(tf.cast(keep, tf.int32), axis=-1), 1)
        threshold = tf.gather(sorted_logits, n_keep - 1, axis=-1, batch_dims=1)[:, None]
        return tf.where(logits < threshold, tf.constant(-float("inf"), logits.dtype), logits)


def make_sampler(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> Sampler:
    """The sampler a set of CLI/API options means. Temperature 0 is greedy."""
    if temperature < 0:
        raise UsageError(f"temperature must be 0 (greedy) or more, got {temperature}")
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
