"""Tokenizers: text <-> integer ids, with the vocabulary stored inside the saved model.

A tokenizer is plain data (its `get_config()` is a JSON-able dict) so it can travel in the
.keras file inside the model's `TokenEmbedding` layer. Encoding is vectorised with numpy:
no Python loop per character.
"""

from __future__ import annotations

import numpy as np

from textgen.errors import UsageError

_TOKENIZERS: dict[str, type["Tokenizer"]] = {}


def register_tokenizer(cls):
    """Class decorator: make a tokenizer constructible from its `level` name."""
    _TOKENIZERS[cls.level] = cls
    return cls


class Tokenizer:
    """Base class. Subclasses set `level` and implement the methods below."""

    level = ""
    unk_token: str | None = None

    def __init__(self, vocabulary):
        self.vocabulary = list(vocabulary)
        self._index = {token: i for i, token in enumerate(self.vocabulary)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def unk_id(self) -> int | None:
        return self._index.get(self.unk_token) if self.unk_token else None

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

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

    def decoder(self, context_ids=()) -> "IncrementalDecoder":
        """A decoder for text generated after `context_ids` (the seed), fed chunk by chunk."""
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


class CharDecoder(IncrementalDecoder):
    def push(self, ids) -> str:
        text = self.tokenizer.decode(ids)
        self._ends.extend(range(self._length + 1, self._length + len(text) + 1))
        self._length += len(text)
        return text


@register_tokenizer
class CharTokenizer(Tokenizer):
    """One token per Unicode code point; the vocabulary is sorted by code point."""

    level = "char"

    def __init__(self, vocabulary):
        super().__init__(vocabulary)
        if any(len(token) != 1 for token in self.vocabulary):
            raise ValueError("a character vocabulary holds single characters only")
        self._codepoints = np.array([ord(c) for c in self.vocabulary], dtype=np.uint32)
        if np.any(np.diff(self._codepoints.astype(np.int64)) <= 0):
            raise ValueError("a character vocabulary must be sorted by code point without repeats")

    @classmethod
    def fit(cls, text: str, config=None) -> "CharTokenizer":
        """Every distinct character of `text` (one vectorised counting pass)."""
        counts = np.bincount(_codepoints(text))
        return cls([chr(c) for c in np.flatnonzero(counts)])

    def encode(self, text: str) -> np.ndarray:
        codes = _codepoints(text)
        ids = np.searchsorted(self._codepoints, codes)
        ids = np.minimum(ids, len(self._codepoints) - 1)
        bad = self._codepoints[ids] != codes
        if np.any(bad):
            missing = self.unknown_tokens(text)
            raise UsageError(f"{_describe(missing)} not in the model's vocabulary; "
                             f"remove or replace {'them' if len(missing) > 1 else 'it'}")
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        table = np.asarray(self._codepoints)
        return table[np.asarray(ids, dtype=np.int64)].astype("<u4").tobytes().decode("utf-32-le")

    def unknown_tokens(self, text: str) -> list[str]:
        seen = dict.fromkeys(c for c in text if c not in self._index)
        return list(seen)

    def decoder(self, context_ids=()) -> IncrementalDecoder:
        return CharDecoder(self)


def tokenizer_from_config(config: dict) -> Tokenizer:
    level = config.get("level")
    if level not in _TOKENIZERS:
        raise ValueError(f"unknown tokenizer level {level!r}")
    return _TOKENIZERS[level].from_config(config)


def fit_tokenizer(text: str, config) -> Tokenizer:
    """Build the vocabulary for `config.level` from the corpus text."""
    return _TOKENIZERS[config.level].fit(text, config)


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _describe(tokens: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(t) for t in tokens[:limit])
    more = f" and {len(tokens) - limit} more" if len(tokens) > limit else ""
    noun = "character" if all(len(t) == 1 for t in tokens) else "token"
    return f"{noun}{'s' if len(tokens) > 1 else ''} {shown}{more} {'are' if len(tokens) > 1 else 'is'}"
