"""What every tokenizer provides: text <-> ids, unknown tokens, a config, incremental decoding."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np


class Tokenizer:
    """Base class. Subclasses set `level` (and `options`) and implement the methods below.

    A tokenizer is plain data: `get_config()` is a JSON-able dict holding the vocabulary
    and the constructor's other arguments, so it travels inside the saved model.
    """

    level = ""
    unk_token: str | None = None  # the token that stands for unknown tokens, if the level has one
    options: dict[str, tuple[type, ...]] = {}  # constructor arguments besides the vocabulary -> their types

    def __init__(self, vocabulary):
        self.vocabulary = list(vocabulary)
        self._index = {token: i for i, token in enumerate(self.vocabulary)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def marker_ids(self) -> tuple[int, ...]:
        """Ids of tokens that stand for no text of the corpus (a word model's spacing markers)."""
        return ()

    @property
    def unk_id(self) -> int | None:
        return self._index.get(self.unk_token) if self.unk_token else None

    @classmethod
    def fit(cls, text: str, config=None) -> "Tokenizer":
        return cls.fit_stream([text], config)

    @classmethod
    def fit_stream(cls, blocks: Iterable[str], config=None) -> "Tokenizer":
        """Build the vocabulary from consecutive pieces of the corpus, never holding it whole."""
        raise NotImplementedError

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def encode_stream(self, blocks: Iterable[str]) -> Iterator[np.ndarray]:
        """Encode consecutive pieces of one text; the arrays joined are `encode("".join(blocks))`."""
        for block in blocks:
            yield self.encode(block)

    def decode(self, ids) -> str:
        raise NotImplementedError

    def unknown_tokens(self, text: str) -> list[str]:
        """Tokens of `text` that are not in the vocabulary, in order of first appearance."""
        raise NotImplementedError

    def encode_lenient(self, text: str) -> tuple[np.ndarray, list[str]]:
        """Encode, mapping unknown tokens to `unk_token`; also return the unknown tokens.

        Tokenizers without an unknown token raise a UsageError naming the unknown tokens.
        """
        if self.unk_id is None:
            return self.encode(text), []
        return self.encode(text), self.unknown_tokens(text)

    def decoder(self, context_ids=(), context_text: str = "") -> "IncrementalDecoder":
        """A decoder for text generated after `context_ids` (the seed), fed chunk by chunk.

        context_text: the seed as typed, for tokenizers whose spacing depends on it.
        """
        return IncrementalDecoder(self)

    def get_config(self) -> dict:
        return {"level": self.level, "vocabulary": list(self.vocabulary)}

    @classmethod
    def from_config(cls, config: dict) -> "Tokenizer":
        config = dict(config)
        config.pop("level", None)
        return cls(**config)


class IncrementalDecoder:
    """Turns generated ids into text chunk by chunk and remembers where each token ended.

    Tokenizers whose spacing depends on neighbouring tokens return their own subclass.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._ends: list[int] = []  # text length after each token
        self._length = 0

    def push(self, ids) -> str:
        pieces = [self.tokenizer.decode([i]) for i in np.asarray(ids).tolist()]
        return self._record(pieces)

    def _record(self, pieces: list[str]) -> str:
        for piece in pieces:
            self._length += len(piece)
            self._ends.append(self._length)
        return "".join(pieces)

    def chars_for_tokens(self, n: int) -> int:
        """Length of the text made by the first `n` tokens."""
        return self._ends[n - 1] if n else 0
