"""Cross-entropy in the units people read: bits per character and perplexity.

Every loss textgen reports is a mean cross-entropy in nats per predicted token. Training's
history, `textgen info` and `textgen evaluate` all turn it into bits or perplexity here, so
the three always agree.
"""

from __future__ import annotations

import math

LN2 = math.log(2)
# exp() overflows a float past about 709.8 nats. A loss that high only comes from a broken
# model; capping it keeps the perplexity a finite number, which JSON and CSV can hold.
PERPLEXITY_CAP_NATS = 700.0


def bits(nats: float) -> float:
    """A cross-entropy in bits: per token for a mean loss, in all for a summed one."""
    return nats / LN2


def perplexity(nats: float) -> float:
    """exp(mean cross-entropy): the number of equally likely tokens the model is choosing among."""
    return math.exp(min(nats, PERPLEXITY_CAP_NATS))


def bits_per_char(total_nats: float, characters: int) -> float:
    """Summed cross-entropy spread over the characters it predicted, so models with different
    tokens (characters, words) compare on the same text."""
    return bits(total_nats) / max(characters, 1)


def per_token_metrics(loss: float, level: str) -> dict[str, float]:
    """The figure training reports beside a loss: bits per character for character models,
    perplexity for word models (a word's bits say little about characters)."""
    if level == "char":
        return {"bpc": bits(loss)}
    return {"perplexity": perplexity(loss)}
