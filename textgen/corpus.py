"""Corpus loading: files, directories and globs -> one normalised text.

Text is decoded strictly (an undecodable byte is an error naming the file and offset, never
silently replaced), a UTF-8 byte-order mark is dropped, CRLF and lone CR become LF, and
Project Gutenberg's header and licence are removed when asked.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

from textgen.errors import CorpusError

_GLOB_CHARS = set("*?[")
_SNIFF_BYTES = 8192

# "*** START OF THE PROJECT GUTENBERG EBOOK MOBY-DICK ***" and its variants.
_PG_START = re.compile(r"^[ \t]*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG E-?BOOK.*?\*{3}[ \t]*$",
                       re.IGNORECASE | re.MULTILINE)
_PG_END = re.compile(r"^[ \t]*(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG E-?BOOK.*$"
                     r"|End of (the )?Project Gutenberg'?s?\b.*$)",
                     re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Document:
    path: Path
    text: str


def resolve_paths(patterns: tuple[str, ...] | list[str]) -> list[Path]:
    """Expand files, directories (recursively) and globs into a sorted list of text files."""
    files: list[Path] = []
    for pattern in patterns:
        if any(c in _GLOB_CHARS for c in pattern):
            matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
            if not matches:
                raise CorpusError(f"corpus glob {pattern!r} matches no files; check the pattern")
            candidates = [Path(m) for m in matches if Path(m).is_file()]
        else:
            path = Path(os.path.expanduser(pattern))
            if not path.exists():
                raise CorpusError(f"corpus path {pattern} does not exist; fix corpus.paths "
                                  f"(relative paths are read from {Path.cwd()})")
            if path.is_dir():
                candidates = sorted(p for p in path.rglob("*")
                                    if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
                candidates = [p for p in candidates if _looks_like_text(p)]
                if not candidates:
                    raise CorpusError(f"corpus directory {pattern} holds no text files")
            else:
                candidates = [path]
        files.extend(c for c in candidates if c not in files)
    return files


def read_document(path: Path, encoding: str = "utf-8", strip_gutenberg: bool = True) -> Document:
    """Read and normalise one file."""
    try:
        data = path.read_bytes()
    except PermissionError:
        raise CorpusError(f"corpus file {path} cannot be read (permission denied)") from None
    except OSError as exc:
        raise CorpusError(f"corpus file {path} cannot be read: {exc.strerror}") from None
    nul = data.find(b"\x00", 0, _SNIFF_BYTES)
    if nul >= 0 and not encoding.lower().startswith("utf-16") and not encoding.lower().startswith("utf-32"):
        raise CorpusError(f"corpus file {path} looks binary (NUL byte at offset {nul}); "
                          "give text files only")
    text = decode(data, encoding, path)
    if strip_gutenberg:
        text = strip_gutenberg_boilerplate(text)
    return Document(path, text)


def decode(data: bytes, encoding: str, path: Path | str = "<bytes>") -> str:
    """Strictly decode bytes; drop a BOM; normalise line ends to LF."""
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text = data.decode(codec)
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r} in corpus.encoding; use a Python codec "
                          "name such as utf-8 or latin-1") from None
    except UnicodeDecodeError as exc:
        raise CorpusError(f"corpus file {path} is not valid {encoding} at byte offset {exc.start} "
                          f"({exc.reason}); convert it or set corpus.encoding") from None
    text = text.lstrip("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def strip_gutenberg_boilerplate(text: str) -> str:
    """Keep only the book between Project Gutenberg's START and END markers, if present."""
    start = _PG_START.search(text)
    if start:
        text = text[start.end():]
    end = _PG_END.search(text)
    if end:
        text = text[:end.start()]
    return text.strip("\n") + "\n" if (start or end) else text


def load_corpus(patterns, encoding: str = "utf-8", strip_gutenberg: bool = True) -> str:
    """Read every file the patterns name and join them, each ending in a newline."""
    files = resolve_paths(patterns)
    parts = []
    for path in files:
        doc = read_document(path, encoding, strip_gutenberg)
        if doc.text and not doc.text.endswith("\n"):
            parts.append(doc.text + "\n")
        else:
            parts.append(doc.text)
    text = "".join(parts)
    if not text.strip():
        names = ", ".join(str(f) for f in files[:3])
        raise CorpusError(f"the corpus is empty ({names}); point corpus.paths at files with text")
    return text


def _looks_like_text(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        return False
    return b"\x00" not in head
