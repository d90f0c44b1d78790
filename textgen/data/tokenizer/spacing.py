"""The word level's rules for text: what a token is, which spaces are kept, and where a
space goes between two tokens when text is put back together (docs/word-level.md).

Plain regular expressions and character classes; `WordTokenizer` applies them.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Iterator

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

# Spacing classes. A token made only of characters of one class takes that class ("..." is
# closing, "--" joins); any other token is spaced on both sides.
_CLOSING = frozenset(",.;:!?)]}\u201d\u2019'\u2026%\u2122\u00ae")  # no space before
_OPENING = frozenset("([{\u201c\u2018\u201e\u00bf\u00a1$\u00a3\u20ac#")  # no space after
_JOINING = frozenset("-\u2013\u2014/" + _KEPT_SPACES)  # no space on either side
# Quotes that look the same when they open and close: opening and closing alternate,
# counted per group from the start of each paragraph (a blank line).
PAIRED = {'"': 0, "_": 1, "\u00ab": 2, "\u00bb": 2}  # ASCII quote, _italics_, guillemets
GROUPS = 3
# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, CJK ideographs,
# kana, CJK and full-width punctuation): their tokens join their neighbours.
_UNSPACED = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x2E80, 0x2FDF), (0x3000, 0x30FF),
             (0x3100, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF),
             (0x20000, 0x3FFFF))

BLOCK_CHARS = 1 << 20  # encode this much text at a time, split after a newline


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


def pattern_problem(pattern: str) -> tuple[str, str] | None:
    """(what is wrong, how to fix it) with `pattern` as `tokenizer.pattern`, or None.

    A token is the whole match and must hold at least one character; the pattern's own
    groups would shift the groups the tokenizer wraps around it.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"is not a valid regular expression ({exc})", "fix it"
    if compiled.groups:
        return (f"has {compiled.groups} capture group{'s' if compiled.groups != 1 else ''} ({pattern!r})",
                "a token is the whole match, so write each group as a non-capturing group (?:...)")
    if compiled.fullmatch(""):
        return "matches the empty string", "make every token at least one character (use + instead of *)"
    return None


def token_regex(pattern: str | None) -> re.Pattern:
    """(separators before the token, the token); any character the pattern does not cover
    becomes a one-character token, so no text is lost. `pattern` is assumed valid
    (`pattern_problem` says why one is not)."""
    body = pattern if pattern is not None else default_word_pattern()
    return re.compile(rf"({_SEPARATOR}*)((?:{body})|[{_KEPT_SPACES}]|\S)")


def spacing_class(token: str) -> tuple[bool, bool, int]:
    """(space before, space after, paired-quote group or -1) for a token in running text."""
    if token in PAIRED:
        return True, True, PAIRED[token]
    for chars, before, after in ((_JOINING, False, False), (_CLOSING, False, True), (_OPENING, True, False)):
        if all(c in chars for c in token):
            return before, after, -1
    if all(any(lo <= ord(c) <= hi for lo, hi in _UNSPACED) for c in token):
        return False, False, -1
    if len(token) > 1 and token[-1] in "'\u2019":  # an elision from a custom pattern: l' + homme
        return True, False, -1
    return True, True, -1


@dataclass(frozen=True)
class Spacing:
    """What spacing the next token needs to know about the tokens before it."""

    after_newline: bool = True  # the previous token is a newline, or there is none
    space_after: bool = False  # the previous token takes a space after it
    marker: int = 0  # a spacing marker waiting for the next token: 0 none, 1 space, 2 no space
    quote_parity: tuple[int, ...] = (0,) * GROUPS  # 1 = a paired quote of that group is open


def aligned(blocks: Iterable[str]) -> Iterator[str]:
    """The same text re-cut into pieces of at most about `BLOCK_CHARS` characters that end
    just after a newline (the last piece may not), so no token straddles two pieces."""
    carry = ""
    for block in blocks:
        text, carry = carry + block, ""
        start = 0
        while start < len(text):
            end = text.rfind("\n", start, start + BLOCK_CHARS) + 1
            if end <= start:  # no newline in reach: cut after the next one, or wait for more text
                end = text.find("\n", start + BLOCK_CHARS) + 1
                if end == 0:
                    carry = text[start:]
                    break
            yield text[start:end]
            start = end
    if carry:
        yield carry
