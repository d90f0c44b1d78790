"""Generation one token at a time, driven by the caller: the interactive CLI's engine."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from textgen.data.unknown import name_tokens
from textgen.errors import UsageError
from textgen.generation.loops import LoopMode


class StepSession:
    """Generation one token at a time, driven by the caller: the interactive CLI's engine.

    After the seed, `candidates()` lists the most likely next tokens; `choose` appends one,
    `append_text` appends the caller's own text, `back` undoes the last appended tokens.
    Nothing here reads from the terminal.
    """

    def __init__(self, generator: Generator, seed: str, strict: bool = False, labels=()):
        self.generator = generator
        self.seed = seed
        self.seed_ids, _ = generator.encode_seed(seed, strict)
        vectors = generator.one_label(labels, "a session")  # `--label` specs of a conditioned model
        self._step = generator._function("step", LoopMode())
        states, last = generator._start(self.seed_ids, 1, labels=vectors)
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
            raise UsageError(f"{name_tokens(unknown)} not in the model's vocabulary")
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
