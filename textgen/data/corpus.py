"""Corpus loading: files, directories and globs -> one normalised text.

Text is decoded strictly (an undecodable byte is an error naming the file and offset, never
silently replaced), a UTF-8 byte-order mark is dropped, CRLF and lone CR become LF, and
Project Gutenberg's header and licence are removed when asked.
"""

from __future__ import annotations

import codecs
import glob
import io
import os
import re
import stat
import sys
from pathlib import Path
from typing import Iterator

from textgen.config import file_kind
from textgen.errors import CorpusError, UsageError

_GLOB_CHARS = set("*?[")
_SNIFF_BYTES = 8192

# "*** START OF THE PROJECT GUTENBERG EBOOK MOBY-DICK ***" and its variants.
_PG_START = re.compile(r"^[ \t]*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG E-?BOOK.*?\*{3}[ \t]*$",
                       re.IGNORECASE | re.MULTILINE)
_PG_END = re.compile(r"^[ \t]*(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG E-?BOOK.*$"
                     r"|End of (the )?Project Gutenberg'?s?\b.*$)",
                     re.IGNORECASE | re.MULTILINE)


def resolve_paths(patterns: tuple[str, ...] | list[str]) -> list[Path]:
    """Expand files, directories (recursively) and globs into a sorted list of text files.

    Only regular files are read: a FIFO or device named directly is refused (reading one
    would block or never end), and one met in a directory or by a glob is skipped unopened.
    """
    files: list[Path] = []
    for pattern in patterns:
        if not pattern.strip():
            raise UsageError("corpus.paths holds an empty path, which would read the whole working directory; "
                             "name the files, a directory or a glob")
        if any(c in _GLOB_CHARS for c in pattern):
            matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
            if not matches:
                raise CorpusError(f"corpus glob {pattern!r} matches no files; check the pattern")
            candidates = [Path(m) for m in matches if _is_regular(Path(m))]
            if not candidates:
                folders = [m for m in matches if os.path.isdir(m)]
                if len(folders) == len(matches):
                    raise CorpusError(f"corpus glob {pattern!r} matches only directories ({_some(folders)}); "
                                      "name the files in them, e.g. with /*.txt at the end, or the directory itself")
                raise CorpusError(f"corpus glob {pattern!r} matches no regular files ({_some(matches)}); "
                                  "check the pattern")
        else:
            path = Path(os.path.expanduser(pattern))
            try:
                info = path.stat()
            except FileNotFoundError:
                where = "" if path.is_absolute() else f" (relative paths are read from {Path.cwd()})"
                raise UsageError(f"corpus path {pattern} does not exist; fix corpus.paths{where}") from None
            except OSError as exc:
                raise CorpusError(f"corpus path {pattern} cannot be read: {exc.strerror}") from None
            if stat.S_ISDIR(info.st_mode):
                candidates = sorted(p for p in path.rglob("*")
                                    if _is_regular(p) and not any(part.startswith(".")
                                                                  for part in p.relative_to(path).parts))
                candidates = [p for p in candidates if _looks_like_text(p)]
                if not candidates:
                    raise CorpusError(f"corpus directory {pattern} holds no text files")
            else:
                check_regular_file(path, "corpus path", info)
                candidates = [path]
        files.extend(c for c in candidates if c not in files)
    return files


def check_regular_file(path: Path, what: str, info: os.stat_result | None = None) -> None:
    """A UsageError unless `path` is a regular file: a FIFO would block the read and a device
    such as /dev/zero never ends. Only stat is used; nothing is opened."""
    if info is None:
        try:
            info = path.stat()
        except FileNotFoundError:
            raise UsageError(f"{what} {path} does not exist; check the path") from None
        except OSError as exc:
            raise CorpusError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{what} {path} is not a regular file ({file_kind(info.st_mode)}); give a text file")


def check_text_path(path: str | Path) -> None:
    """A UsageError unless `path` is "-" (stdin) or a regular file: a missing text is a wrong
    request (exit 2), as a missing config is; a FIFO would block and /dev/zero never ends."""
    if str(path) == "-":
        return
    path = Path(path)
    if not path.exists():
        raise UsageError(f"text file {path} does not exist; check the path")
    check_regular_file(path, "text file")


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def stream_corpus(patterns, encoding: str = "utf-8", strip_gutenberg: bool = True, *,
                  block_chars: int = 1 << 22, on_bytes=None, final_newline: bool = True) -> Iterator[str]:
    """Yield the normalised corpus in blocks of about `block_chars` characters.

    The whole corpus is never held in memory: each file is decoded incrementally (universal
    newlines turn CRLF and CR into LF across block boundaries) and Gutenberg stripping works
    on the stream. Every file ends with a newline (so files join at line breaks) unless
    `final_newline` is False, which yields the text as the file has it. `on_bytes(n)` is
    called with the bytes read so far, for progress display.
    """
    files = resolve_paths(patterns)
    done = 0
    for path in files:
        size = path.stat().st_size
        report = (lambda n, base=done: on_bytes(base + n)) if on_bytes else None
        yield from _stream_file(path, encoding, strip_gutenberg, block_chars, report, final_newline)
        done += size
        if on_bytes:
            on_bytes(done)


def normalise_text(text: str) -> str:
    """Text as every corpus is read: no byte-order mark, LF line ends."""
    text = text.lstrip("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


class GutenbergFilter:
    """Removes Project Gutenberg's header and licence from text fed in blocks.

    The START marker is looked for in the first `HEAD_CHARS` characters (the header is a few
    dozen lines); the END marker anywhere. Blank lines next to a removed part are dropped
    and the kept text ends with one newline. Text without markers passes through unchanged.
    """

    HEAD_CHARS = 1 << 16

    def __init__(self):
        self._head: list[str] | None = []  # buffered until the START marker is ruled in or out
        self._head_len = 0
        self._carry = ""  # an incomplete last line, kept until its end is seen
        self._blank = ""  # trailing newlines held back until more text follows
        self._found = False
        self._ended = False

    def feed(self, block: str) -> str:
        if self._ended:
            return ""
        if self._head is not None:
            self._head.append(block)
            self._head_len += len(block)
            if self._head_len < self.HEAD_CHARS:
                return ""
            return self._release_head()
        return self._body(block)

    def finish(self) -> str:
        out = self._release_head() if self._head is not None else ""
        if not self._ended:
            out += self._body("", final=True)
        if self._found:
            return out + "\n"
        return out + self._blank

    def _release_head(self) -> str:
        head, self._head = "".join(self._head), None
        start = _PG_START.search(head[: self.HEAD_CHARS + 4096])
        if start:
            self._found = True
            head = head[start.end():].lstrip("\n")
        return self._body(head)

    def _body(self, block: str, final: bool = False) -> str:
        text = self._carry + block
        cut = len(text) if final else text.rfind("\n") + 1
        text, self._carry = text[:cut], text[cut:]
        end = _PG_END.search(text)
        if end:
            self._found = self._ended = True
            text = text[: end.start()]
            self._carry = ""
        if not text:
            return ""
        out = self._blank + text
        kept = out.rstrip("\n")
        self._blank = out[len(kept):]
        if self._ended:
            self._blank = ""
        return kept


def _stream_file(path: Path, encoding: str, strip_gutenberg: bool, block_chars: int, on_bytes,
                 final_newline: bool = True) -> Iterator[str]:
    check_regular_file(path, "corpus file")
    try:
        codec = _codec(encoding)
    except LookupError:
        raise _unknown_encoding(encoding) from None
    _refuse_binary(path, encoding)
    try:
        handle = open(path, encoding=codec, errors="strict", newline=None)
    except PermissionError:
        raise CorpusError(f"corpus file {path} cannot be read (permission denied)") from None
    except OSError as exc:
        raise CorpusError(f"corpus file {path} cannot be read: {exc.strerror}") from None
    with handle:
        before = os.fstat(handle.fileno())
        yield from _stream_text(handle, path, encoding, strip_gutenberg, block_chars, on_bytes, final_newline)
        after = os.fstat(handle.fileno())
        # Every pass over the corpus (the vocabulary, then the ids) must see the same text.
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) \
                or handle.buffer.tell() != after.st_size:
            raise CorpusError(f"corpus file {path} changed while it was being read ({before.st_size:,} bytes at "
                              f"the start, {after.st_size:,} at the end); wait until it is written in full, or "
                              "train on a copy")


def stream_stdin(encoding: str = "utf-8", *, block_chars: int = 1 << 22, on_bytes=None,
                 stdin: io.BufferedIOBase | None = None) -> Iterator[str]:
    """Yield the text on stdin as it is (no Gutenberg stripping, no added final newline),
    normalised like a corpus file: for `evaluate --text -`."""
    try:
        codec = _codec(encoding)
    except LookupError:
        raise _unknown_encoding(encoding) from None
    raw = stdin if stdin is not None else sys.stdin.buffer
    handle = io.TextIOWrapper(raw, encoding=codec, errors="strict", newline=None)
    binary_sniff = not _canonical(encoding).startswith(("utf-16", "utf-32"))
    try:
        for i, block in enumerate(_stream_text(handle, Path("<stdin>"), encoding, False, block_chars, on_bytes,
                                               final_newline=False)):
            if i == 0 and binary_sniff and "\x00" in block[:_SNIFF_BYTES]:
                raise CorpusError(f"the text on stdin looks binary (NUL character at offset "
                                  f"{block.index(chr(0))}); give text only")
            yield block
    finally:
        try:
            handle.detach()  # stdin stays open for whoever owns it
        except ValueError:  # closed already: the generator was closed at interpreter exit
            pass


def _stream_text(handle, path: Path, encoding: str, strip_gutenberg: bool, block_chars: int, on_bytes,
                 final_newline: bool) -> Iterator[str]:
    gutenberg = GutenbergFilter() if strip_gutenberg else None
    last = ""
    first = True
    read = 0
    try:
        while True:
            block = handle.read(block_chars)
            if on_bytes:
                read = handle.buffer.tell() if handle.buffer.seekable() else read + len(block)
                on_bytes(read)
            if first:
                block, first = block.lstrip("\ufeff"), False
            out = (gutenberg.feed(block) if block else gutenberg.finish()) if gutenberg else block
            if out:
                last = out[-1]
                yield out
            if not block:
                break
    except UnicodeDecodeError as exc:
        offset = _first_bad_byte(path, encoding) if path.is_file() else None
        raise _not_decodable(path, encoding, offset if offset is not None else exc.start, exc.reason) from None
    except UnicodeError as exc:  # a codec's own complaint, e.g. UTF-16 without a byte-order mark
        raise CorpusError(f"corpus file {path} cannot be read as {encoding}: {exc}; name the byte order "
                          f"(utf-16-le, utf-16-be: {_ENCODING_SETTING}) or convert the file") from None
    if final_newline and last and last != "\n":
        yield "\n"


def _canonical(encoding: str) -> str:
    """Python's own name for an encoding (utf_16_le, U16 and UTF16 are utf-16-le, utf-16, utf-16);
    a LookupError for a name it does not know."""
    return codecs.lookup(encoding).name


def _codec(encoding: str) -> str:
    return "utf-8-sig" if _canonical(encoding) == "utf-8" else encoding


# Byte-order marks of the encodings that need one named, longest first (UTF-32-LE's begins with UTF-16-LE's).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _refuse_binary(path: Path, encoding: str) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise CorpusError(f"corpus file {path} cannot be read: {exc.strerror}") from None
    canonical = _canonical(encoding)
    for bom, family in _BOMS:
        if head.startswith(bom):
            if not canonical.startswith(family):
                raise CorpusError(f"corpus file {path} starts with a {family.upper()} byte-order mark but is read "
                                  f"as {encoding}; set corpus.encoding: {family} (--encoding {family} for "
                                  "textgen evaluate)")
            break
    if canonical.startswith(("utf-16", "utf-32")):
        return  # NUL bytes are normal there
    nul = head.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"corpus file {path} looks binary (NUL byte at offset {nul}); give text files only")


def _first_bad_byte(path: Path, encoding: str) -> int | None:
    """Byte offset of the first undecodable byte, found by decoding the file in steps."""
    decoder = codecs.getincrementaldecoder(_codec(encoding))(errors="strict")
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            pending = len(decoder.getstate()[0])  # bytes of an incomplete character carried over
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return offset - pending + exc.start
            offset += len(chunk)
    pending = len(decoder.getstate()[0])
    try:
        decoder.decode(b"", final=True)  # a file that ends part-way through a character
    except UnicodeDecodeError:
        return offset - pending
    return None


_ENCODING_SETTING = "corpus.encoding; --encoding for textgen evaluate"  # where the errors below are fixed


def _unknown_encoding(encoding: str) -> CorpusError:
    return CorpusError(f"unknown encoding {encoding!r}; use a text encoding Python knows, such as utf-8 or "
                       f"latin-1 ({_ENCODING_SETTING})")


def _not_decodable(path, encoding: str, offset: int, reason: str) -> CorpusError:
    return CorpusError(f"corpus file {path} is not valid {encoding} at byte offset {offset} ({reason}); "
                       f"convert it or give its encoding ({_ENCODING_SETTING})")


def _looks_like_text(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        return False
    return b"\x00" not in head
