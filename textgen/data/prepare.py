"""Encode the corpus once into a token-id cache in the run directory, and reuse it.

RUN_DIR/cache/ holds
    ids.bin          the corpus as token ids: raw little-endian uint16 when the vocabulary
                     has at most 65,536 tokens, int32 otherwise; memory-mapped for training
    tokenizer.json   the tokenizer that made them
    meta.json        what the cache was made from, the id dtype and count, the corpus
                     facts training needs (fingerprint, vocabulary coverage) and the SHA-256
                     of ids.bin's bytes

A cache is reused when the corpus files (resolved paths, sizes, modification times) and the
reading options are the same and so is the tokenizer: the same settings when it is fitted,
the same vocabulary when one is given (a resumed or fine-tuned run) and the same handling
of tokens that vocabulary lacks, and ids.bin still has the checksum meta.json records
(a cache without one is rebuilt). Anything else rebuilds it.

Building never holds the corpus in memory: the vocabulary is fitted in one streaming pass
over `stream_corpus` and the ids are encoded and appended to the file in a second one.
meta.json is written last, so a build that dies half-way leaves no cache that looks valid;
the temporary files such a build leaves are removed by the next one.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from textgen.config import Config
from textgen.data.corpus import resolve_paths, stream_corpus
from textgen.data.progress import ReadProgress, size_text
from textgen.data.tokenizer import Tokenizer, fit_tokenizer_stream, tokenizer_from_config
from textgen.data.unknown import UnknownTokens
from textgen.errors import CorpusError, UsageError
from textgen.files import publish_file, remove_file, remove_temporaries, write_failed, write_text_atomic

CACHE_DIR = "cache"
IDS_FILE = "ids.bin"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"
CACHE_VERSION = 1
CHECKSUM = "ids_sha256"  # meta.json's key for the SHA-256 of ids.bin
# The temporary files of a build (name: suffix), which a killed build leaves behind.
TEMPORARIES = {IDS_FILE: ".tmp", META_FILE: ".tmp", TOKENIZER_FILE: ".tmp"}


@dataclass
class PreparedCorpus:
    """The encoded corpus, memory-mapped, and what training needs to know about it."""

    ids: np.ndarray  # read-only in effect: a copy-on-write map of ids.bin
    tokenizer: Tokenizer
    fingerprint: dict  # {"tokens", "sha1"} of the ids as int32, compared on --resume
    coverage: float  # share of the corpus tokens (spacing markers aside) that are not <unk>
    unknown_count: int  # tokens of the corpus the given tokenizer lacks (left out or mapped to <unk>)
    unknown_tokens: list[str]  # those tokens, distinct, in order of first appearance (at most MISSING_KEPT)
    directory: Path
    reused: bool  # the cache was current and nothing was encoded


MISSING_KEPT = 1000
BLOCK_CHARS = 1 << 22


def cache_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CACHE_DIR


def prepare_corpus(config: Config, directory: str | Path, *, tokenizer: Tokenizer | None = None,
                   on_unknown: str = "error", hint: str = "", progress: TextIO | bool | None = True,
                   block_chars: int = BLOCK_CHARS) -> PreparedCorpus:
    """The corpus of `config` encoded in `directory`, built or reused.

    tokenizer: encode with this one (fine-tuning, resume) instead of fitting one from
        `config.tokenizer`.
    on_unknown: the policy for the tokens that tokenizer lacks (`textgen.data.unknown`):
        "error" raises a UsageError naming them (followed by `hint`), "unk" maps them to
        <unk> (word level), "drop" leaves them out.
    progress: where to show bytes read and MB/s while building (True: stderr; None: nowhere).
    block_chars: characters read, tokenized and written at a time (memory use is a small
        multiple of this, whatever the corpus size).
    """
    directory = Path(directory)
    progress = sys.stderr if progress is True else progress or None
    files = resolve_paths(config.corpus.paths)
    source = source_key(config, files)
    settings = config.to_dict()["tokenizer"]
    remove_temporaries(directory, TEMPORARIES)
    cached = _open_cache(directory, source, settings, tokenizer, on_unknown, progress)
    if cached is not None:
        return cached
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).unlink(missing_ok=True)  # from here on the old cache is invalid
    total = sum(f.stat().st_size for f in files)
    fitted = tokenizer is None
    if fitted:
        with ReadProgress("preparing corpus: fitting vocabulary", total, progress) as report:
            tokenizer = fit_tokenizer_stream(_blocks(config, report, block_chars), config.tokenizer)
    try:
        with ReadProgress("preparing corpus: encoding", total, progress) as report:
            facts = _encode_to_file(config, tokenizer, directory, _blocks(config, report, block_chars),
                                    None if fitted else on_unknown, hint)
    except UsageError:  # tokens the vocabulary lacks: maybe text added after the vocabulary pass
        _check_unchanged(config, files, source)
        raise
    _check_unchanged(config, files, source)
    write_text_atomic(directory / TOKENIZER_FILE, json.dumps(tokenizer.get_config()))
    meta = {"version": CACHE_VERSION, "source": source, "fitted": settings if fitted else None,
            "policy": "unk" if fitted else on_unknown, "files": [str(f) for f in files], "bytes": total, **facts}
    write_text_atomic(directory / META_FILE, json.dumps(meta, indent=1))
    return _load(directory, meta, tokenizer, reused=False)


def _check_unchanged(config: Config, files: list[Path], source: str) -> None:
    """The corpus is read twice (the vocabulary, then the ids): both passes must see the same files."""
    try:
        same = source_key(config, files) == source
    except OSError:
        same = False
    if not same:
        names = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
        raise CorpusError(f"the corpus changed while it was being read ({names}); run again once its files "
                          "no longer change")


def source_key(config: Config, files: list[Path]) -> str:
    """Digest of the corpus files (paths, sizes, modification times) and how they are read."""
    corpus = config.corpus
    facts = {
        "version": CACHE_VERSION,
        "files": [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files],
        "encoding": corpus.encoding,
        "strip_gutenberg": corpus.strip_gutenberg,
    }
    return hashlib.sha1(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest id type for the vocabulary: uint16 up to 65,536 tokens."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<i4")


# --------------------------------------------------------------------------- reading


def _open_cache(directory: Path, source: str, settings: dict, tokenizer: Tokenizer | None,
                on_unknown: str, progress: TextIO | None = None) -> PreparedCorpus | None:
    """The cache, if it holds this corpus encoded as asked.

    Asked to fit: the cache was fitted with the same tokenizer settings. Given a tokenizer:
    the cache's tokenizer is the same and either the corpus has no tokens it lacks or they
    were handled the same way, so a resumed run reuses the cache its first session made.
    """
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if meta.get("version") != CACHE_VERSION or meta.get("source") != source:
            return None
        saved = json.loads((directory / TOKENIZER_FILE).read_text(encoding="utf-8"))
        if tokenizer is None:
            if meta["fitted"] != settings:
                return None
            tokenizer = tokenizer_from_config(saved)
        elif saved != json.loads(json.dumps(tokenizer.get_config())) or (meta["unknown"] and meta["policy"] != on_unknown):
            return None
        if (directory / IDS_FILE).stat().st_size != meta["tokens"] * np.dtype(meta["dtype"]).itemsize:
            return None
        if not isinstance(meta.get(CHECKSUM), str):
            return None  # made before caches kept a checksum
        if ids_checksum(directory / IDS_FILE) != meta[CHECKSUM]:
            if progress is not None:
                print(f"the token cache {directory / IDS_FILE} does not match its checksum (damaged); "
                      "rebuilding it", file=progress, flush=True)
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: rebuild
    return _load(directory, meta, tokenizer, reused=True)


def ids_checksum(path: Path) -> str:
    """SHA-256 of the file's bytes, read through a memory map (no copy in Python)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                digest.update(mapped)
    return digest.hexdigest()


def _load(directory: Path, meta: dict, tokenizer: Tokenizer, reused: bool) -> PreparedCorpus:
    # Copy-on-write ("c") so TensorFlow can share the mapping (it needs a writable buffer);
    # nothing is ever written back to the file.
    ids = np.memmap(directory / IDS_FILE, dtype=meta["dtype"], mode="c") if meta["tokens"] else \
        np.zeros(0, dtype=meta["dtype"])
    return PreparedCorpus(ids, tokenizer, {"tokens": meta["tokens"], "sha1": meta["sha1"]}, meta["coverage"],
                          meta["unknown"], meta["missing"], directory, reused)


# --------------------------------------------------------------------------- building


def _blocks(config: Config, report: Callable[[int], None], block_chars: int):
    corpus = config.corpus
    return stream_corpus(corpus.paths, corpus.encoding, corpus.strip_gutenberg, block_chars=block_chars,
                         on_bytes=report)


def _encode_to_file(config: Config, tokenizer: Tokenizer, directory: Path, blocks, on_unknown: str | None,
                    hint: str) -> dict:
    """Write the ids to ids.bin block by block; return their facts for meta.json.

    on_unknown: the policy for tokens a given tokenizer lacks (`textgen.data.unknown`); None when
    the tokenizer was fitted on this corpus (word tokens below min_count or past max_vocab
    become <unk>, as `encode` does).
    """
    dtype = id_dtype(tokenizer.vocab_size)
    digest, tokens, unk_count, marker_count = hashlib.sha1(), 0, 0, 0
    checksum = hashlib.sha256()  # of the bytes written, verified whenever the cache is reused
    text = _Text(blocks)
    policy = UnknownTokens(tokenizer, on_unknown, hint=hint) if on_unknown is not None else None
    fd, tmp = tempfile.mkstemp(prefix=f".{IDS_FILE}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            for ids in policy.encode(text) if policy else tokenizer.encode_stream(text):
                if tokenizer.unk_id is not None:
                    unk_count += int(np.count_nonzero(ids == tokenizer.unk_id))
                if tokenizer.marker_ids:
                    marker_count += int(np.count_nonzero(np.isin(ids, tokenizer.marker_ids)))
                digest.update(np.ascontiguousarray(ids, dtype="<i4"))  # the fingerprint --resume compares
                data = np.ascontiguousarray(ids, dtype=dtype)
                out.write(data)
                checksum.update(data)
                tokens += len(ids)
            out.flush()
            os.fsync(out.fileno())
        if not text.has_text:
            raise CorpusError(f"the corpus is empty ({', '.join(str(p) for p in config.corpus.paths[:3])}); "
                              "point corpus.paths at files with text")
        publish_file(tmp, directory / IDS_FILE)
    except OSError as exc:
        remove_file(tmp)
        raise write_failed(directory / IDS_FILE, exc) from None
    except BaseException:
        remove_file(tmp)
        raise
    words = tokens - marker_count  # spacing markers are no text of the corpus: not counted either way
    coverage = 1.0 - unk_count / words if words else 1.0
    return {"dtype": dtype.str, "tokens": tokens, "sha1": digest.hexdigest(), "coverage": coverage,
            "unknown": policy.count if policy else unk_count, "missing": policy.tokens[:MISSING_KEPT] if policy else [],
            CHECKSUM: checksum.hexdigest()}


class _Text:
    """The corpus blocks, noting whether any held more than whitespace."""

    def __init__(self, blocks):
        self.blocks, self.has_text = blocks, False

    def __iter__(self):
        for block in self.blocks:
            self.has_text = self.has_text or not block.isspace()
            yield block


def describe_cache(prepared: PreparedCorpus) -> str:
    """One line for the user: where the cache is and whether it was reused."""
    how = "reused" if prepared.reused else "written"
    return (f"token cache {how}: {prepared.directory / IDS_FILE} ({len(prepared.ids):,} tokens, "
            f"{prepared.ids.dtype.name}, {size_text(prepared.ids.nbytes)})")
