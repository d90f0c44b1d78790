"""Tokenizers: text <-> integer ids, with the vocabulary stored inside the saved model.

A tokenizer is plain data (its `get_config()` is a JSON-able dict) so it can travel in the
.keras file inside the model's `TokenEmbedding` layer. Encoding is vectorised with numpy:
no Python loop per character.

Two levels: `CharTokenizer` (one token per code point) and `WordTokenizer` (words,
punctuation and newlines, detokenized with natural spacing; see docs/word-level.md).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

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
    def fit_stream(cls, blocks: Iterable[str], config=None) -> "CharTokenizer":
        """Every distinct character of the corpus (one vectorised pass per block)."""
        present = np.zeros(0, dtype=bool)
        for block in blocks:
            counts = np.bincount(_codepoints(block))
            if len(counts) > len(present):
                present = np.pad(present, (0, len(counts) - len(present)))
            present[:len(counts)] |= counts > 0
        return cls([chr(c) for c in np.flatnonzero(present)])

    def encode(self, text: str) -> np.ndarray:
        codes = _codepoints(text)
        # A dense table over code points (at most 4.4 MB) maps every character with one
        # gather, several times faster than a binary search over the vocabulary; code points
        # past the last character are clipped onto the table's final -1 (unknown).
        table = self.__dict__.get("_id_table")
        if table is None:
            size = int(self._codepoints[-1]) + 2 if len(self._codepoints) else 1
            table = np.full(size, -1, dtype=np.int32)
            table[self._codepoints] = np.arange(len(self._codepoints), dtype=np.int32)
            self._id_table = table
        ids = table.take(codes, mode="clip")
        if np.any(ids < 0):
            missing = self.unknown_tokens(text)
            raise UsageError(f"{_describe(missing)} not in the model's vocabulary; "
                             f"remove or replace {'them' if len(missing) > 1 else 'it'}")
        return ids

    def decode(self, ids) -> str:
        table = np.asarray(self._codepoints)
        return table[np.asarray(ids, dtype=np.int64)].astype("<u4").tobytes().decode("utf-32-le")

    def unknown_tokens(self, text: str) -> list[str]:
        seen = dict.fromkeys(c for c in text if c not in self._index)
        return list(seen)

    def decoder(self, context_ids=(), context_text: str = "") -> IncrementalDecoder:
        return CharDecoder(self)  # the seed's characters, spaces included, are tokens of their own


# --------------------------------------------------------------------------- word level

UNK = "<unk>"
SPACE = "<space>"  # marker: a space here, where the spacing rules would put none
NOSPACE = "<nospace>"  # marker: no space here, where the spacing rules would put one
SPECIAL_TOKENS = (UNK, SPACE, NOSPACE)  # always the first ids of a word vocabulary

# Whitespace that separates tokens and is normalised: everything `\s` matches except the
# newline and the two no-break spaces, which are tokens of their own.
_KEPT_SPACES = "\n\u00a0\u202f"
_SEPARATOR = r"[^\S\n\u00a0\u202f]"
_LINE_EDGE_SPACE = re.compile(rf"^{_SEPARATOR}+|{_SEPARATOR}+$", re.MULTILINE)
_SPACE_RUN = re.compile(rf"{_SEPARATOR}+")

# Spacing classes (see docs/word-level.md). A token made only of characters of one class
# takes that class ("..." is closing, "--" joins); any other token is spaced on both sides.
_CLOSING = frozenset(",.;:!?)]}\u201d\u2019'\u2026%\u2122\u00ae")  # no space before
_OPENING = frozenset("([{\u201c\u2018\u201e\u00bf\u00a1$\u00a3\u20ac#")  # no space after
_JOINING = frozenset("-\u2013\u2014/" + _KEPT_SPACES)  # no space on either side
# Quotes that look the same when they open and close: opening and closing alternate,
# counted per group from the start of each paragraph (a blank line).
_PAIRED = {'"': 0, "_": 1, "\u00ab": 2, "\u00bb": 2}  # ASCII quote, _italics_, guillemets
_GROUPS = 3
# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, CJK ideographs,
# kana, CJK and full-width punctuation): their tokens join their neighbours.
_UNSPACED = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x2E80, 0x2FDF), (0x3000, 0x30FF),
             (0x3100, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF),
             (0x20000, 0x3FFFF))

_BLOCK_CHARS = 1 << 20  # encode this much text at a time, split after a newline


def normalize_whitespace(text: str) -> str:
    """The text a word tokenizer reproduces: `decode(encode(text)) == normalize_whitespace(text)`.

    Spaces, tabs and other separators (every whitespace character except the newline and
    the no-break spaces U+00A0 and U+202F) are removed at the start and end of each line,
    and every remaining run of them becomes one space.
    """
    return _SPACE_RUN.sub(" ", _LINE_EDGE_SPACE.sub("", text))


@functools.cache
def _combining_marks() -> str:
    """A regex class body of every combining mark (category M), which `\\w` leaves out."""
    ranges, start = [], None
    for cp in [*range(0x20000), *range(0xE0000, 0xE1000)]:  # the planes that hold marks
        is_mark = unicodedata.category(chr(cp)).startswith("M")
        if is_mark and start is None:
            start = cp
        elif not is_mark and start is not None:
            ranges.append(f"\\U{start:08x}-\\U{cp - 1:08x}")
            start = None
    return "".join(ranges)


@functools.cache
def default_word_pattern() -> str:
    """Numbers with inner separators (3.14, 1,000), words with inner apostrophes (don't,
    whale's) and combining accents, runs of dots or hyphens (..., --)."""
    letter = rf"(?:[^\W_]|[{_combining_marks()}])"
    return rf"\d+(?:[.,]\d+)+|{letter}+(?:['\u2019]{letter}+)*|\.{{2,}}|-{{2,}}"


def _token_regex(pattern: str | None) -> re.Pattern:
    """(separators before the token, the token); any character the pattern does not cover
    becomes a one-character token, so no text is lost."""
    if pattern is not None:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"tokenizer.pattern is not a valid regular expression ({exc}); fix it") from None
        if compiled.fullmatch(""):
            raise UsageError("tokenizer.pattern matches the empty string; make every token at least "
                             "one character (use + instead of *)")
    body = pattern if pattern is not None else default_word_pattern()
    return re.compile(rf"({_SEPARATOR}*)((?:{body})|[{_KEPT_SPACES}]|\S)")


def _spacing_class(token: str) -> tuple[bool, bool, int]:
    """(space before, space after, paired-quote group or -1) for a token in running text."""
    if token in _PAIRED:
        return True, True, _PAIRED[token]
    for chars, before, after in ((_JOINING, False, False), (_CLOSING, False, True), (_OPENING, True, False)):
        if all(c in chars for c in token):
            return before, after, -1
    if all(any(lo <= ord(c) <= hi for lo, hi in _UNSPACED) for c in token):
        return False, False, -1
    if len(token) > 1 and token[-1] in "'\u2019":  # an elision from a custom pattern: l' + homme
        return True, False, -1
    return True, True, -1


@dataclass(frozen=True)
class _Spacing:
    """What spacing the next token needs to know about the tokens before it."""

    after_newline: bool = True  # the previous token is a newline, or there is none
    space_after: bool = False  # the previous token takes a space after it
    marker: int = 0  # a spacing marker waiting for the next token: 0 none, 1 space, 2 no space
    quote_parity: tuple[int, ...] = (0,) * _GROUPS  # 1 = a paired quote of that group is open


def _aligned(blocks: Iterable[str]) -> Iterator[str]:
    """The same text re-cut into pieces of at most about `_BLOCK_CHARS` characters that end
    just after a newline (the last piece may not), so no token straddles two pieces."""
    carry = ""
    for block in blocks:
        text, carry = carry + block, ""
        start = 0
        while start < len(text):
            end = text.rfind("\n", start, start + _BLOCK_CHARS) + 1
            if end <= start:  # no newline in reach: cut after the next one, or wait for more text
                end = text.find("\n", start + _BLOCK_CHARS) + 1
                if end == 0:
                    carry = text[start:]
                    break
            yield text[start:end]
            start = end
    if carry:
        yield carry


@register_tokenizer
class WordTokenizer(Tokenizer):
    """Words, numbers, punctuation marks and newlines, each a token.

    Spaces are not tokens: decoding puts them back by rule (none before a comma, none after
    an opening bracket, ...). Where the text breaks the rules, encoding inserts a `<space>`
    or `<nospace>` marker, so `decode(encode(text)) == normalize_whitespace(text)` whenever
    every token is in the vocabulary. The vocabulary starts with `SPECIAL_TOKENS`, then the
    corpus tokens by falling count (ties by code point).

    Args:
        vocabulary: the tokens, `SPECIAL_TOKENS` included.
        lowercase: fold text to lower case before tokenizing.
        pattern: regular expression for one token, or None for `default_word_pattern()`.
        max_vocab: the cap `fit` applied (vocabulary size, special tokens included), kept for reference.
        min_count: the minimum count `fit` applied, kept for reference.
    """

    level = "word"
    unk_token = UNK

    def __init__(self, vocabulary, lowercase: bool = False, pattern: str | None = None,
                 max_vocab: int | None = None, min_count: int = 1):
        super().__init__(vocabulary)
        if len(self._index) != len(self.vocabulary) or any(t not in self._index for t in SPECIAL_TOKENS):
            raise ValueError(f"a word vocabulary holds unique tokens including {', '.join(SPECIAL_TOKENS)}")
        self.lowercase, self.pattern = bool(lowercase), pattern
        self.max_vocab, self.min_count = max_vocab, min_count
        self._regex = _token_regex(pattern)
        classes = [_spacing_class(t) for t in self.vocabulary]
        self._before = np.array([c[0] for c in classes], dtype=bool)
        self._after = np.array([c[1] for c in classes], dtype=bool)
        self._group = np.array([c[2] for c in classes], dtype=np.int8)
        self._newline = np.array([t == "\n" for t in self.vocabulary], dtype=bool)
        self._marker = np.zeros(len(self.vocabulary), dtype=np.int8)
        self._marker[[self._index[SPACE], self._index[NOSPACE]]] = [1, 2]
        self._text = [("" if t in (SPACE, NOSPACE) else t) for t in self.vocabulary]

    @classmethod
    def fit_stream(cls, blocks: Iterable[str], config=None) -> "WordTokenizer":
        """Count every token in one streaming pass and keep the frequent ones."""
        lowercase = bool(getattr(config, "lowercase", False))
        pattern = getattr(config, "pattern", None)
        max_vocab = getattr(config, "max_vocab", None)
        min_count = getattr(config, "min_count", 1)
        if max_vocab is not None and max_vocab <= len(SPECIAL_TOKENS):
            raise UsageError(f"tokenizer.max_vocab must be more than {len(SPECIAL_TOKENS)} at word level "
                             f"({', '.join(SPECIAL_TOKENS)} are always in the vocabulary), got {max_vocab}")
        regex = _token_regex(pattern)
        counts: Counter = Counter()
        for block in _aligned(blocks):
            counts.update(m.group(2) for m in regex.finditer(block.lower() if lowercase else block))
        for token in SPECIAL_TOKENS:
            counts.pop(token, None)
        ranked = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda kv: (-kv[1], kv[0]))
        if max_vocab is not None:
            ranked = ranked[:max_vocab - len(SPECIAL_TOKENS)]
        return cls([*SPECIAL_TOKENS, *(token for token, _ in ranked)], lowercase=lowercase, pattern=pattern,
                   max_vocab=max_vocab, min_count=min_count)

    # ------------------------------------------------------------------ text -> ids

    def encode(self, text: str) -> np.ndarray:
        """Token ids, out-of-vocabulary tokens as `<unk>`, spacing markers where needed."""
        parts = list(self.encode_stream([text]))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def encode_stream(self, blocks: Iterable[str]) -> Iterator[np.ndarray]:
        state = _Spacing()
        for block in _aligned(blocks):
            ids, state = self._encode_block(block, state)
            yield ids

    def _encode_block(self, block: str, state: _Spacing) -> tuple[np.ndarray, _Spacing]:
        pairs = self._regex.findall(block.lower() if self.lowercase else block)
        if not pairs:
            return np.zeros(0, dtype=np.int32), state
        unk, index = self._index[UNK], self._index
        ids = np.fromiter((index.get(token, unk) for _, token in pairs), dtype=np.int32, count=len(pairs))
        spaced = np.fromiter((gap != "" for gap, _ in pairs), dtype=bool, count=len(pairs))
        newline = self._newline[ids]
        spaced &= ~newline & ~np.concatenate([[state.after_newline], newline[:-1]])  # line edges
        ruled, state = self._layout(ids, state)
        wrong = np.flatnonzero(spaced != ruled)
        markers = np.where(spaced[wrong], index[SPACE], index[NOSPACE]).astype(np.int32)
        return np.insert(ids, wrong, markers), state

    def tokenize(self, text: str) -> list[str]:
        """The tokens the model sees, as strings (unknown tokens as `<unk>`)."""
        return [self.vocabulary[i] for i in self.encode(text).tolist()]

    @property
    def marker_ids(self) -> tuple[int, ...]:
        return (self._index[SPACE], self._index[NOSPACE])

    def unknown_tokens(self, text: str) -> list[str]:
        found = self._regex.findall(text.lower() if self.lowercase else text)
        return list(dict.fromkeys(token for _, token in found if token not in self._index))

    # ------------------------------------------------------------------ ids -> text

    def decode(self, ids) -> str:
        return "".join(self._pieces(ids, _Spacing())[0])

    def detokenize(self, tokens) -> str:
        """Text from token strings; strings not in the vocabulary read as `<unk>`."""
        unk = self._index[UNK]
        return self.decode([self._index.get(t, unk) for t in tokens])

    def decoder(self, context_ids=(), context_text: str = "") -> "WordDecoder":
        # Encoding drops the seed's trailing whitespace, so the ids alone would space the
        # first word again after a seed such as "the king ".
        return WordDecoder(self, context_ids, after_whitespace=context_text[-1:].isspace())

    def _pieces(self, ids, state: _Spacing) -> tuple[list[str], _Spacing]:
        """The text of each token (with the space before it, if any) and the state after them."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        spaced, state = self._layout(ids, state)
        text = self._text
        return [(" " + text[i] if s else text[i]) for i, s in zip(ids.tolist(), spaced.tolist())], state

    def _layout(self, ids: np.ndarray, state: _Spacing) -> tuple[np.ndarray, _Spacing]:
        """Whether a space goes before each token, by the spacing rules and the markers.

        Vectorised over the tokens; `state` carries the context across calls, so laying out a
        sequence in pieces gives the same result as laying it out whole.
        """
        spaced = np.zeros(len(ids), dtype=bool)
        if len(ids) == 0:
            return spaced, state
        real = np.flatnonzero(self._marker[ids] == 0)
        marker = self._pending_markers(ids, real, state.marker)
        if len(real) == 0:
            return spaced, replace(state, marker=int(marker[-1]))
        tokens = ids[real]
        newline = self._newline[tokens]
        after_newline = np.concatenate([[state.after_newline], newline[:-1]])
        before, after, parity = self._quote_sides(tokens, newline & after_newline, state.quote_parity)
        space = np.concatenate([[state.space_after], after[:-1]]) & before
        space = np.where(marker[:-1] == 1, True, np.where(marker[:-1] == 2, False, space))
        spaced[real] = space & ~newline & ~after_newline
        return spaced, _Spacing(bool(newline[-1]), bool(after[-1]), int(marker[-1]), parity)

    def _pending_markers(self, ids: np.ndarray, real: np.ndarray, waiting: int) -> np.ndarray:
        """The marker in force before each real token, then the one left after the last."""
        kinds = self._marker[ids]
        where = np.where(kinds > 0, np.arange(len(ids)), -1)
        last = np.maximum.accumulate(np.concatenate([[-1], where]))  # last[p]: last marker before p
        bounds = np.concatenate([real, [len(ids)]])
        previous = np.concatenate([[-1], real])
        found = last[bounds]
        marker = np.where(found > previous, kinds[np.maximum(found, 0)], 0)
        if found[0] < 0:
            marker[0] = waiting
        return marker.astype(np.int8)

    def _quote_sides(self, tokens: np.ndarray, paragraph: np.ndarray, parity: tuple[int, ...]):
        """Space before/after each token, with paired quotes resolved to opening or closing."""
        before, after, group = self._before[tokens].copy(), self._after[tokens].copy(), self._group[tokens]
        positions = np.arange(len(tokens))
        last_break = np.maximum.accumulate(np.where(paragraph, positions, -1))
        new_parity = []
        for g in range(_GROUPS):
            is_quote = group == g
            if not is_quote.any() and last_break[-1] < 0:
                new_parity.append(parity[g])
                continue
            earlier = np.cumsum(is_quote) - is_quote  # quotes of this group before each token
            since = np.where(last_break >= 0, earlier - earlier[np.maximum(last_break, 0)], earlier + parity[g])
            opening = since % 2 == 0
            before[is_quote], after[is_quote] = opening[is_quote], ~opening[is_quote]
            new_parity.append(int((since[-1] + is_quote[-1]) % 2))
        return before, after, tuple(new_parity)

    def get_config(self) -> dict:
        return {**super().get_config(), "lowercase": self.lowercase, "pattern": self.pattern,
                "max_vocab": self.max_vocab, "min_count": self.min_count}


class WordDecoder(IncrementalDecoder):
    """Decodes generated word ids chunk by chunk, spacing the first one against the seed."""

    def __init__(self, tokenizer: WordTokenizer, context_ids=(), after_whitespace: bool = False):
        super().__init__(tokenizer)
        self._state = tokenizer._layout(np.asarray(context_ids, dtype=np.int64).reshape(-1), _Spacing())[1]
        self._unspace_first = after_whitespace  # the seed already ends in whitespace

    def push(self, ids) -> str:
        pieces, self._state = self.tokenizer._pieces(ids, self._state)
        if self._unspace_first:
            for k, piece in enumerate(pieces):
                if piece:
                    pieces[k] = piece[1:] if piece.startswith(" ") else piece
                    self._unspace_first = False
                    break
        return self._record(pieces)


_WORD_OPTIONS = {"lowercase": (bool,), "pattern": (str, type(None)), "max_vocab": (int, type(None)),
                 "min_count": (int,)}


def tokenizer_from_config(config: dict) -> Tokenizer:
    """The tokenizer a saved `get_config()` describes.

    The config comes from a file (a .keras model, a cache, a checkpoint), so its shape is
    checked before any of it is used: a ValueError names what is wrong.
    """
    if not isinstance(config, dict):
        raise ValueError(f"the tokenizer config must be a mapping, got {type(config).__name__}")
    level = config.get("level")
    if not isinstance(level, str) or level not in _TOKENIZERS:
        raise ValueError(f"unknown tokenizer level {level!r}")
    vocabulary = config.get("vocabulary")
    if not isinstance(vocabulary, list) or not vocabulary or not all(isinstance(t, str) and t for t in vocabulary):
        raise ValueError("the tokenizer vocabulary must be a non-empty list of non-empty strings")
    allowed = {"level", "vocabulary", *(_WORD_OPTIONS if level == "word" else ())}
    unknown = sorted(str(k) for k in config if k not in allowed)
    if unknown:
        raise ValueError(f"the {level} tokenizer config has unknown keys {', '.join(unknown)}")
    if level == "word":
        for key, types in _WORD_OPTIONS.items():
            value = config.get(key)
            if key in config and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
                raise ValueError(f"the tokenizer's {key} has the wrong type ({value!r})")
        pattern = config.get("pattern")
        if pattern is not None:
            try:
                groups = re.compile(pattern).groups
            except re.error as exc:
                raise ValueError(f"the tokenizer pattern is not a valid regular expression ({exc})") from None
            if groups:  # the token is read from a group of textgen's own around the pattern
                raise ValueError("the tokenizer pattern has capture groups; use (?:...) groups")
    try:
        return _TOKENIZERS[level].from_config(config)
    except UsageError as exc:  # the pattern checks that also guard a config file
        raise ValueError(str(exc)) from None


def fit_tokenizer(text: str, config) -> Tokenizer:
    """Build the vocabulary for `config.level` from the corpus text."""
    return _TOKENIZERS[config.level].fit(text, config)


def fit_tokenizer_stream(blocks: Iterable[str], config) -> Tokenizer:
    """Build the vocabulary for `config.level` from the corpus given in consecutive pieces."""
    return _TOKENIZERS[config.level].fit_stream(blocks, config)


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _describe(tokens: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(t) for t in tokens[:limit])
    more = f" and {len(tokens) - limit} more" if len(tokens) > limit else ""
    noun = "character" if all(len(t) == 1 for t in tokens) else "token"
    return f"{noun}{'s' if len(tokens) > 1 else ''} {shown}{more} {'are' if len(tokens) > 1 else 'is'}"
