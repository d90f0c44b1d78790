"""Unknown tokens: the tokens of a text that a tokenizer's vocabulary lacks.

At character level they are characters, at word level words (which encoding has already
turned into `<unk>`, the word vocabulary's stand-in). What happens to them is the *policy*,
one of `UNKNOWN_POLICIES`, from `training.unknown_tokens` when a model is fine-tuned on new
text and from `--skip-unknown` when one is evaluated:

    error   stop with a message naming them
    unk     keep them as <unk> (word level; a character vocabulary has no stand-in)
    drop    leave them out

This module is the one place that applies the policy, counts unknown tokens and names them
in messages; the tokenizers only say which tokens are unknown.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from textgen.config import UNKNOWN_POLICIES
from textgen.errors import UsageError

SHOWN = 10  # unknown tokens a message names; the rest are counted


def name_tokens(tokens: Iterable[str], limit: int = SHOWN) -> str:
    """"'x', 'y' and 3 more": the first `limit` tokens quoted, the others counted."""
    tokens = list(tokens)
    shown = ", ".join(repr(t) for t in tokens[:limit])
    return shown + (f" and {len(tokens) - limit:,} more" if len(tokens) > limit else "")


def lacking(count: int, tokens: list[str], noun: str) -> str:
    """"the text has 8 characters the model's vocabulary lacks (2 distinct: 'é', 'ñ')"."""
    return (f"the text has {count:,} {noun}{'s' if count != 1 else ''} the model's vocabulary lacks "
            f"({len(tokens)} distinct: {name_tokens(tokens)})")


def handled(count: int, tokens: list[str], on_unknown: str) -> str:
    """What fine-tuning did with the unknown tokens of its corpus, for the run's log."""
    action = "left out" if on_unknown == "drop" else "mapped to <unk>"
    return (f"{count:,} tokens of the corpus are not in the model's vocabulary and were {action}: "
            f"{name_tokens(tokens)}")


class UnknownTokens:
    """Encodes a text block by block with one policy for its unknown tokens, counting them.

    on_unknown: "error", "unk" or "drop" (see the module docstring). "unk" with a character
        tokenizer is refused like "error", saying why.
    hint: appended to the error message, to say how to choose another policy.
    fail_fast: raise at the first block that holds an unknown token (a command that would
        otherwise do its work in vain); without it the whole text is read first, so the
        message counts every unknown token.

    After `encode` has run, `count` is how many unknown tokens the text held and `tokens`
    the distinct ones in order of first appearance.
    """

    def __init__(self, tokenizer, on_unknown: str, *, hint: str = "", fail_fast: bool = False):
        if on_unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown-token policy must be one of {', '.join(UNKNOWN_POLICIES)}, got {on_unknown!r}")
        self.tokenizer, self.on_unknown, self.hint, self.fail_fast = tokenizer, on_unknown, hint, fail_fast
        self.count = 0
        self._tokens: dict[str, None] = {}  # an ordered set

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

    @property
    def allowed(self) -> bool:
        """Whether the policy lets the text hold unknown tokens."""
        return self.on_unknown == "drop" or (self.on_unknown == "unk" and self.tokenizer.unk_id is not None)

    def encode(self, blocks: Iterable[str]) -> Iterator[np.ndarray]:
        """The ids of consecutive pieces of one text, the policy applied; raises the
        UsageError the policy calls for (at the end, or at once with `fail_fast`)."""
        if self.tokenizer.unk_id is None:
            for block in blocks:
                yield self._characters(block)
        else:
            latest = _Latest(blocks)
            for ids in self.tokenizer.encode_stream(latest):  # word spacing state carries across blocks
                yield self._words(ids, latest)
        self.check()

    def encode_text(self, text: str) -> np.ndarray:
        """The ids of one whole text, the policy applied."""
        parts = list(self.encode([text]))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def check(self) -> None:
        """A UsageError naming the unknown tokens seen so far, unless the policy allows them."""
        if self.count and not self.allowed:
            noun = "character" if self.tokenizer.unk_id is None else "word"
            why = "; character models have no unknown token" if self.on_unknown == "unk" else ""
            raise UsageError(f"{lacking(self.count, self.tokens, noun)}{why}{self.hint}")

    def _characters(self, block: str) -> np.ndarray:
        ids = self.tokenizer.lookup(block)  # -1 for a character the vocabulary lacks
        unknown = ids < 0
        if not unknown.any():
            return ids
        self.count += int(np.count_nonzero(unknown))
        self._tokens.update(dict.fromkeys(self.tokenizer.unknown_tokens(block)))
        if self.fail_fast:
            self.check()
        return ids[~unknown]

    def _words(self, ids: np.ndarray, latest: "_Latest") -> np.ndarray:
        unknown = ids == self.tokenizer.unk_id
        count = int(np.count_nonzero(unknown))
        if not count:
            return ids
        self.count += count
        if latest.named is not latest.block:  # the words themselves, from the text they came from
            latest.named = latest.block
            self._tokens.update(dict.fromkeys(self.tokenizer.unknown_tokens(latest.block)))
        if self.fail_fast:
            self.check()
        return ids[~unknown] if self.on_unknown == "drop" else ids


def encode_known(tokenizer, text: str, unknown: str = "error", hint: str = "") -> tuple[np.ndarray, int, list[str]]:
    """Encode a whole text with the policy `unknown` for its unknown tokens; returns the ids,
    how many tokens were unknown, and the distinct unknown tokens."""
    policy = UnknownTokens(tokenizer, unknown, hint=hint)
    ids = policy.encode_text(text)
    return ids, policy.count, policy.tokens


class _Latest:
    """The blocks of a text, remembering the one read last (its unknown words are named from
    it) and the last one whose unknown words were named."""

    def __init__(self, blocks: Iterable[str]):
        self.blocks, self.block, self.named = blocks, "", None

    def __iter__(self) -> Iterator[str]:
        for block in self.blocks:
            self.block = block
            yield block
