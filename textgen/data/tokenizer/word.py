"""The word tokenizer: words, numbers, punctuation marks and newlines, each a token.

Spaces are not tokens; the rules in `textgen.data.tokenizer.spacing` put them back, and
markers record where the text breaks those rules (docs/word-level.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Iterable, Iterator

import numpy as np

from textgen.data.tokenizer.base import IncrementalDecoder, Tokenizer
from textgen.data.tokenizer.spacing import (GROUPS, NOSPACE, SPACE, SPECIAL_TOKENS, UNK, Spacing, aligned,
                                            pattern_problem, spacing_class, token_regex)
from textgen.errors import UsageError


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
    options = {"lowercase": (bool,), "pattern": (str, type(None)), "max_vocab": (int, type(None)),
               "min_count": (int,)}

    def __init__(self, vocabulary, lowercase: bool = False, pattern: str | None = None,
                 max_vocab: int | None = None, min_count: int = 1):
        super().__init__(vocabulary)
        if len(self._index) != len(self.vocabulary) or any(t not in self._index for t in SPECIAL_TOKENS):
            raise ValueError(f"a word vocabulary holds unique tokens including {', '.join(SPECIAL_TOKENS)}")
        self.lowercase, self.pattern = bool(lowercase), pattern
        self.max_vocab, self.min_count = max_vocab, min_count
        self._regex = _checked_regex(pattern)
        classes = [spacing_class(t) for t in self.vocabulary]
        self._before = np.array([c[0] for c in classes], dtype=bool)
        self._after = np.array([c[1] for c in classes], dtype=bool)
        self._group = np.array([c[2] for c in classes], dtype=np.int8)
        self._newline = np.array([t == "\n" for t in self.vocabulary], dtype=bool)
        self._marker = np.zeros(len(self.vocabulary), dtype=np.int8)
        self._marker[[self._index[SPACE], self._index[NOSPACE]]] = [1, 2]
        self._text = [("" if t in (SPACE, NOSPACE) else t) for t in self.vocabulary]

    @classmethod
    def fit_stream(cls, blocks: Iterable[str], config=None) -> "WordTokenizer":
        """Count every token in one streaming pass and keep the frequent ones.

        config: the `TokenizerConfig` (whose checks its values have passed), or None for the defaults.
        """
        lowercase = bool(getattr(config, "lowercase", False))
        pattern = getattr(config, "pattern", None)
        max_vocab = getattr(config, "max_vocab", None)
        min_count = getattr(config, "min_count", 1)
        regex = _checked_regex(pattern)
        counts: Counter = Counter()
        for block in aligned(blocks):
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
        state = Spacing()
        for block in aligned(blocks):
            ids, state = self._encode_block(block, state)
            yield ids

    def _encode_block(self, block: str, state: Spacing) -> tuple[np.ndarray, Spacing]:
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

    def spacing_table(self) -> dict[str, np.ndarray]:
        """What decoding reads per token id: "text" (empty for a marker), "before" and "after"
        (a space by rule), "group" (its paired-quote group, -1 for none), "newline", and
        "marker" (0 none, 1 `<space>`, 2 `<nospace>`). For twins of this tokenizer elsewhere
        (textgen.export.word_graph), so the rules stay defined here alone."""
        return {"text": np.array(self._text, dtype=object), "before": self._before, "after": self._after,
                "group": self._group, "newline": self._newline, "marker": self._marker}

    @property
    def marker_ids(self) -> tuple[int, ...]:
        return (self._index[SPACE], self._index[NOSPACE])

    def unknown_tokens(self, text: str) -> list[str]:
        found = self._regex.findall(text.lower() if self.lowercase else text)
        return list(dict.fromkeys(token for _, token in found if token not in self._index))

    # ------------------------------------------------------------------ ids -> text

    def decode(self, ids) -> str:
        return "".join(self._pieces(ids, Spacing())[0])

    def detokenize(self, tokens) -> str:
        """Text from token strings; strings not in the vocabulary read as `<unk>`."""
        unk = self._index[UNK]
        return self.decode([self._index.get(t, unk) for t in tokens])

    def decoder(self, context_ids=(), context_text: str = "") -> "WordDecoder":
        # Encoding drops the seed's trailing whitespace, so the ids alone would space the
        # first word again after a seed such as "the king ".
        return WordDecoder(self, context_ids, after_whitespace=context_text[-1:].isspace())

    def _pieces(self, ids, state: Spacing) -> tuple[list[str], Spacing]:
        """The text of each token (with the space before it, if any) and the state after them."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        spaced, state = self._layout(ids, state)
        text = self._text
        return [(" " + text[i] if s else text[i]) for i, s in zip(ids.tolist(), spaced.tolist())], state

    def _layout(self, ids: np.ndarray, state: Spacing) -> tuple[np.ndarray, Spacing]:
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
        return spaced, Spacing(bool(newline[-1]), bool(after[-1]), int(marker[-1]), parity)

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
        for g in range(GROUPS):
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
        self._state = tokenizer._layout(np.asarray(context_ids, dtype=np.int64).reshape(-1), Spacing())[1]
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



def _checked_regex(pattern: str | None):
    problem = pattern_problem(pattern) if pattern is not None else None
    if problem:
        raise UsageError(f"tokenizer.pattern {problem[0]}; {problem[1]}")
    return token_regex(pattern)
