"""The character tokenizer: one token per Unicode code point."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from textgen.data.tokenizer.base import IncrementalDecoder, Tokenizer
from textgen.data.unknown import name_tokens
from textgen.errors import UsageError


class CharTokenizer(Tokenizer):
    """One token per Unicode code point; the vocabulary is sorted by code point.

    There is no unknown token: a character the vocabulary lacks cannot be encoded.
    """

    level = "char"

    def __init__(self, vocabulary):
        super().__init__(vocabulary)
        if any(len(token) != 1 for token in self.vocabulary):
            raise ValueError("a character vocabulary holds single characters only")
        self._codepoints = np.array([ord(c) for c in self.vocabulary], dtype=np.uint32)
        if np.any(np.diff(self._codepoints.astype(np.int64)) <= 0):
            raise ValueError("a character vocabulary must be sorted by code point without repeats")

    @classmethod
    def fit_stream(cls, blocks: Iterable[str], config=None) -> "CharTokenizer":
        """Every distinct character of the corpus (one vectorised pass per block)."""
        present = np.zeros(0, dtype=bool)
        for block in blocks:
            counts = np.bincount(codepoints(block))
            if len(counts) > len(present):
                present = np.pad(present, (0, len(counts) - len(present)))
            present[:len(counts)] |= counts > 0
        return cls([chr(c) for c in np.flatnonzero(present)])

    def lookup(self, text: str) -> np.ndarray:
        """The id of every character of `text`, -1 for one the vocabulary lacks."""
        # A dense table over code points (at most 4.4 MB) maps every character with one
        # gather, several times faster than a binary search over the vocabulary; code points
        # past the last character are clipped onto the table's final -1 (unknown).
        table = self.__dict__.get("_id_table")
        if table is None:
            size = int(self._codepoints[-1]) + 2 if len(self._codepoints) else 1
            table = np.full(size, -1, dtype=np.int32)
            table[self._codepoints] = np.arange(len(self._codepoints), dtype=np.int32)
            self._id_table = table
        return table.take(codepoints(text), mode="clip")

    def encode(self, text: str) -> np.ndarray:
        ids = self.lookup(text)
        if np.any(ids < 0):
            missing = self.unknown_tokens(text)
            many = len(missing) > 1
            raise UsageError(f"character{'s' if many else ''} {name_tokens(missing)} {'are' if many else 'is'} "
                             f"not in the model's vocabulary; remove or replace {'them' if many else 'it'}")
        return ids

    def decode(self, ids) -> str:
        table = np.asarray(self._codepoints)
        return table[np.asarray(ids, dtype=np.int64)].astype("<u4").tobytes().decode("utf-32-le")

    def unknown_tokens(self, text: str) -> list[str]:
        codes = codepoints(text)[self.lookup(text) < 0]
        unique, first = np.unique(codes, return_index=True)
        return [chr(c) for c in unique[np.argsort(first)]]

    def decoder(self, context_ids=(), context_text: str = "") -> IncrementalDecoder:
        return CharDecoder(self)  # the seed's characters, spaces included, are tokens of their own


class CharDecoder(IncrementalDecoder):
    def push(self, ids) -> str:
        text = self.tokenizer.decode(ids)
        self._ends.extend(range(self._length + 1, self._length + len(text) + 1))
        self._length += len(text)
        return text


def codepoints(text: str) -> np.ndarray:
    """The code point of every character, as one array (no Python loop per character)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
