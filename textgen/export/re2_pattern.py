"""Python regular expressions rewritten for RE2, the engine of TensorFlow's `tf.strings` ops.

RE2 and Python's `re` pick the same match for the same expression (leftmost, alternatives
tried in order, greedy or lazy repeats), but their character classes differ: RE2's `\\w`, `\\d`
and `\\s` are ASCII-only and its `\\p{...}` tables follow its own Unicode version. So every
class is rewritten as explicit code-point ranges computed from the predicates Python's `re`
itself uses (`str.isalnum` or `_` for `\\w`, `str.isdecimal` for `\\d`, `str.isspace` for
`\\s`): the translation matches what the running Python matches, code point for code point.
What RE2 cannot do (lookarounds, backreferences, anchors, case-insensitive matching, atomic
groups) raises `Unsupported`.
"""

from __future__ import annotations

import functools
import re
from re import _constants as C  # the parse tree's opcodes
from re import _parser

import numpy as np

CODE_POINTS = 0x110000
SURROGATES = (0xD800, 0xE000)  # not characters of UTF-8 text, which RE2 reads


class Unsupported(Exception):
    """The tokenizer cannot be expressed in graph ops; str(exc) says why, in one line."""


@functools.cache
def _unicode_category(name: str) -> np.ndarray:
    """Membership of every code point in Python's `\\d`, `\\s` or `\\w` (Unicode mode)."""
    test = {"digit": str.isdecimal, "space": str.isspace, "word": lambda c: c.isalnum() or c == "_"}[name]
    member = np.fromiter((test(chr(cp)) for cp in range(CODE_POINTS)), dtype=bool, count=CODE_POINTS)
    member.flags.writeable = False
    return member


@functools.cache
def _ascii_category(name: str) -> np.ndarray:
    chars = {"digit": "0123456789", "space": " \t\n\r\f\v",
             "word": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"}[name]
    member = np.zeros(CODE_POINTS, dtype=bool)
    member[[ord(c) for c in chars]] = True
    member.flags.writeable = False
    return member


_CATEGORIES = {C.CATEGORY_DIGIT: ("digit", False), C.CATEGORY_NOT_DIGIT: ("digit", True),
               C.CATEGORY_SPACE: ("space", False), C.CATEGORY_NOT_SPACE: ("space", True),
               C.CATEGORY_WORD: ("word", False), C.CATEGORY_NOT_WORD: ("word", True)}


def category(code, ascii_only: bool = False) -> np.ndarray:
    """Membership of every code point in one of `\\d \\D \\s \\S \\w \\W`, as Python's `re` reads it."""
    if code not in _CATEGORIES:
        raise Unsupported(f"the class {code} has no RE2 equivalent")
    name, negated = _CATEGORIES[code]
    member = (_ascii_category if ascii_only else _unicode_category)(name)
    return ~member if negated else member


def class_of(member: np.ndarray) -> str:
    """An RE2 character class matching exactly the code points marked in `member`."""
    member = member.copy()
    member[SURROGATES[0]:SURROGATES[1]] = False
    edges = np.flatnonzero(np.diff(np.concatenate([[False], member, [False]]).astype(np.int8)))
    if len(edges) == 0:
        return r"[^\x{0}-\x{10ffff}]"  # matches nothing
    parts = []
    for lo, end in zip(edges[0::2].tolist(), edges[1::2].tolist()):
        parts.append(rf"\x{{{lo:x}}}" if end - 1 == lo else rf"\x{{{lo:x}}}-\x{{{end - 1:x}}}")
    return "[" + "".join(parts) + "]"


def space_class() -> str:
    """An RE2 class of the characters for which `str.isspace()` is true."""
    return class_of(category(C.CATEGORY_SPACE))


def to_re2(pattern: str) -> str:
    """`pattern` (Python syntax, Unicode mode) as an RE2 expression with the same groups and matches."""
    try:
        parsed = _parser.parse(pattern, 0)
    except re.error as exc:
        raise Unsupported(f"the pattern is not a valid regular expression ({exc})") from None
    return _emit(parsed, parsed.state.flags)


def _emit(items, flags: int) -> str:
    return "".join(_emit_one(op, av, flags) for op, av in items)


def _emit_one(op, av, flags: int) -> str:  # noqa: C901 - one branch per opcode of the parse tree
    if flags & C.SRE_FLAG_IGNORECASE:
        raise Unsupported("case-insensitive matching ((?i)) folds some characters differently in RE2")
    ascii_only = bool(flags & C.SRE_FLAG_ASCII)
    if op is C.LITERAL:
        return rf"\x{{{av:x}}}"
    if op in (C.NOT_LITERAL, C.ANY, C.IN):
        return class_of(_members(op, av, flags, ascii_only))
    if op is C.BRANCH:
        return "(?:" + "|".join(_emit(branch, flags) for branch in av[1]) + ")"
    if op is C.SUBPATTERN:
        group, add, remove, body = av
        inner = _emit(body, (flags | add) & ~remove)
        return f"({inner})" if group is not None else f"(?:{inner})"
    if op in (C.MAX_REPEAT, C.MIN_REPEAT):
        low, high, body = av
        if high == C.MAXREPEAT:
            count = {0: "*", 1: "+"}.get(low, f"{{{low},}}")
        else:
            count = "?" if (low, high) == (0, 1) else f"{{{low}}}" if low == high else f"{{{low},{high}}}"
        return f"(?:{_emit(body, flags)}){count}" + ("?" if op is C.MIN_REPEAT else "")
    reasons = {C.ASSERT: "a lookahead or lookbehind", C.ASSERT_NOT: "a negative lookahead or lookbehind",
               C.GROUPREF: "a backreference", C.GROUPREF_EXISTS: "a conditional group (?(...)...)",
               C.AT: "an anchor or word boundary (^ $ \\b \\B \\A \\Z), whose meaning RE2 does not share",
               C.ATOMIC_GROUP: "an atomic group (?>...)",
               getattr(C, "POSSESSIVE_REPEAT", C.ATOMIC_GROUP): "a possessive repeat (*+ ++ ?+)"}
    raise Unsupported(f"the pattern uses {reasons.get(op, op)}, which RE2 cannot run")


def _members(op, av, flags: int, ascii_only: bool) -> np.ndarray:
    member = np.zeros(CODE_POINTS, dtype=bool)
    if op is C.NOT_LITERAL:
        member[:] = True
        member[av] = False
    elif op is C.ANY:
        member[:] = True
        member[ord("\n")] = bool(flags & C.SRE_FLAG_DOTALL)
    else:
        negate = False
        for item, value in av:
            if item is C.NEGATE:
                negate = True
            elif item is C.LITERAL:
                member[value] = True
            elif item is C.RANGE:
                member[value[0]:value[1] + 1] = True
            elif item is C.CATEGORY:
                member |= category(value, ascii_only)
            else:
                raise Unsupported(f"the pattern uses {item} in a character class, which RE2 cannot run")
        if negate:
            member = ~member
    return member
