"""Reading pairs files: source and target strings, one pair a line.

Two formats, chosen by each file's extension:

    .jsonl, .json   JSON Lines: one object a line with string fields `source` and `target`
                    (other fields are ignored)
    anything else   tab-separated `source<TAB>target[<TAB>anything]`: the Tatoeba/manythings
                    sentence-pair files read as they are (their third column, the attribution,
                    is ignored)

Files are read line by line, never whole, and decoded one line at a time so a bad byte is
reported with its line number. A UTF-8 byte-order mark is dropped, CRLF read as LF and blank
lines skipped. Every problem is one CorpusError naming the file, the line, what is wrong and
the fix.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Iterator

from textgen.data.corpus import check_regular_file, resolve_paths
from textgen.errors import CorpusError, UsageError
from textgen.files import write_text_atomic

JSON_SUFFIXES = (".jsonl", ".json")
_SHOWN_CHARS = 40  # characters of a bad line quoted in its error


def read_pairs(patterns, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """Every (source, target) pair of the files, folders and globs `patterns` name, in file order."""
    if isinstance(patterns, (str, Path)):
        patterns = [str(patterns)]
    pairs: list[tuple[str, str]] = []
    for path in resolve_paths([str(p) for p in patterns]):
        before = len(pairs)
        pairs.extend(stream_pairs(path, encoding))
        if len(pairs) == before:
            raise CorpusError(f"pairs file {path} holds no pairs; give lines of source<TAB>target "
                              f"(or JSON Lines with source and target in a .jsonl file)")
    return pairs


def stream_pairs(path: Path, encoding: str = "utf-8") -> Iterator[tuple[str, str]]:
    """The pairs of one file, as they are read."""
    check_regular_file(path, "pairs file")
    parse = _json_pair if path.suffix.lower() in JSON_SUFFIXES else _tsv_pair
    for number, line in _lines(path, encoding):
        if line.strip():
            yield parse(line, path, number)


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, text without its line end) for every line of the file."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}; set corpus.encoding to one Python knows, "
                          "such as utf-8 or latin-1") from None
    # Encodings in which a newline is the byte 10 (UTF-8, Latin-1, ...) are split into lines as
    # bytes and each line decoded on its own, which names the line of a bad byte exactly;
    # UTF-16 and UTF-32 are decoded as a stream and their errors name the line after the last good one.
    ascii_lines = "\n".encode(encoding) == b"\n"
    try:
        handle = open(path, "rb") if ascii_lines else open(path, encoding=encoding, errors="strict", newline="")
    except OSError as exc:
        raise CorpusError(f"pairs file {path} cannot be read: {exc.strerror}") from None
    number = 0
    with handle:
        try:
            for raw in handle:
                number += 1
                text = raw.decode(encoding) if ascii_lines else raw
                if number == 1:
                    text = text.lstrip("\ufeff")
                if "\x00" in text:
                    raise CorpusError(f"pairs file {path}, line {number}: a NUL character (the file looks "
                                      "binary); give a text file of pairs")
                # CRLF ends a line like LF; a lone CR (old Mac files) does too, as in a corpus.
                *earlier, last = text.rstrip("\n").removesuffix("\r").split("\r")
                for line in earlier:
                    yield number, line
                    number += 1
                yield number, last
        except UnicodeDecodeError as exc:
            where = number + (0 if ascii_lines else 1)
            raise CorpusError(f"pairs file {path}, line {where}: bytes that are not {encoding} ({exc.reason}); "
                              "convert the file or set corpus.encoding to its encoding") from None
        except UnicodeError as exc:
            raise CorpusError(f"pairs file {path} cannot be read as {encoding}: {exc}; set corpus.encoding "
                              "to its encoding (utf-16-le, utf-16-be, ...)") from None


def write_pairs(path: str | Path, pairs: list[tuple[str, str]], *, overwrite: bool = False) -> None:
    """Write `pairs` as a tab-separated pairs file, all of it or nothing.

    An existing file is replaced only with `overwrite` (the scripts' --overwrite): the writer
    cannot tell a file it made earlier from one it did not, so it asks.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UsageError(f"{path} already exists; pass --overwrite to replace it or give another --output")
    for number, (source, target) in enumerate(pairs, start=1):
        if any(c in text for text in (source, target) for c in "\t\r\n") or not (source.strip() and target.strip()):
            raise ValueError(f"pair {number} cannot be one tab-separated line: {(source, target)!r}")
    write_text_atomic(path, "".join(f"{source}\t{target}\n" for source, target in pairs))


def _tsv_pair(line: str, path: Path, number: int) -> tuple[str, str]:
    fields = line.split("\t", 2)
    if len(fields) < 2:
        _bad(path, number, f"no tab in {_quoted(line)}", "write source<TAB>target on each line")
    source, target = fields[0], fields[1]
    _check_sides(source, target, path, number, "write text on both sides of the tab or remove the line")
    return source, target


def _json_pair(line: str, path: Path, number: int) -> tuple[str, str]:
    fix = 'write one JSON object a line (JSON Lines) such as {"source": "...", "target": "..."}'
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        _bad(path, number, f"not JSON ({exc.msg} at column {exc.colno})", fix)
    if not isinstance(record, dict):
        _bad(path, number, f"a JSON {type(record).__name__}, not an object", fix)
    for side in ("source", "target"):
        if not isinstance(record.get(side), str):
            what = "no" if side not in record else f"a {type(record[side]).__name__} as its"
            _bad(path, number, f"{what} string field {side!r}", fix)
    _check_sides(record["source"], record["target"], path, number, "give text on both sides or remove the line")
    return record["source"], record["target"]


def _check_sides(source: str, target: str, path: Path, number: int, fix: str) -> None:
    for side, text in (("source", source), ("target", target)):
        if not text.strip():
            _bad(path, number, f"an empty {side}", fix)


def _bad(path: Path, number: int, problem: str, fix: str):
    raise CorpusError(f"pairs file {path}, line {number}: {problem}; {fix}")


def _quoted(line: str) -> str:
    """The start of a line, quoted on one line (repr escapes any control character)."""
    return repr(line[:_SHOWN_CHARS] + ("..." if len(line) > _SHOWN_CHARS else ""))
