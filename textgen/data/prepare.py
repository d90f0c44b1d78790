"""Encode the corpus once into a token-id cache in the run directory, and reuse it.

RUN_DIR/cache/ holds
    ids.bin          the corpus as token ids: raw little-endian uint16 when the vocabulary
                     has at most 65,536 tokens, int32 otherwise; memory-mapped for training
    tokenizer.json   the tokenizer that made them
    meta.json        what the cache was made from, the id dtype and count, the corpus
                     facts training needs (fingerprint, vocabulary coverage) and the SHA-256
                     of ids.bin's bytes
    labels.bin       a labelled corpus only (corpus.labels): each token's label in every
                     group, uint16 (tokens x groups); meta.json adds the label space, the
                     segments and labels.bin's SHA-256

A labelled corpus is written one label combination after another (sorted, `any` first), so
each combination is one contiguous segment of ids.bin; validation holds out the tail of
each (textgen.data.dataset.split_labelled). An unlabelled corpus has no labels.bin and its
files are what they were before labels existed.

A cache is reused when the corpus files (resolved paths, sizes, modification times) and the
reading options (the label keys among them) are the same and so is the tokenizer: the same
settings when it is fitted, the same vocabulary when one is given (a resumed or fine-tuned run) and the same handling
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
from textgen.data.labels import read_labelled
from textgen.data.progress import ReadProgress, size_text
from textgen.data.tokenizer import Tokenizer, fit_tokenizer_stream, tokenizer_from_config
from textgen.data.unknown import UnknownTokens
from textgen.errors import CorpusError, UsageError
from textgen.files import publish_file, remove_file, remove_temporaries, write_failed, write_text_atomic
from textgen.labels import LabelSpace

CACHE_DIR = "cache"
IDS_FILE = "ids.bin"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"
LABELS_FILE = "labels.bin"
LABEL_DTYPE = np.dtype("<u2")
CACHE_VERSION = 1
CHECKSUM = "ids_sha256"  # meta.json's key for the SHA-256 of ids.bin
# The temporary files of a build (name: suffix), which a killed build leaves behind.
TEMPORARIES = {IDS_FILE: ".tmp", META_FILE: ".tmp", TOKENIZER_FILE: ".tmp", LABELS_FILE: ".tmp"}


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
    labels: np.ndarray | None = None  # labelled corpus: (tokens, groups) label ids per token (0 = any)
    label_space: LabelSpace | None = None  # labelled corpus: its groups and labels
    segments: list[tuple[int, int]] | None = None  # labelled corpus: (start, length) of each label combination


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
    labelled = read_labelled(config.corpus) if config.corpus.labels != "none" else None
    shown = total  # a labelled corpus is read in full already: progress counts its characters
    if labelled is not None:
        shown = sum(len(text) for _, texts in labelled.segments for text in texts)
    if fitted:
        with ReadProgress("preparing corpus: fitting vocabulary", shown, progress) as report:
            blocks = (block for _, segment in _segments(config, labelled, report, block_chars) for block in segment)
            tokenizer = fit_tokenizer_stream(blocks, config.tokenizer)
    try:
        with ReadProgress("preparing corpus: encoding", shown, progress) as report:
            facts = _encode_to_file(config, tokenizer, directory, _segments(config, labelled, report, block_chars),
                                    None if fitted else on_unknown, hint)
    except UsageError:  # tokens the vocabulary lacks: maybe text added after the vocabulary pass
        _check_unchanged(config, files, source)
        raise
    _check_unchanged(config, files, source)
    write_text_atomic(directory / TOKENIZER_FILE, json.dumps(tokenizer.get_config()))
    meta = {"version": CACHE_VERSION, "source": source, "fitted": settings if fitted else None,
            "policy": "unk" if fitted else on_unknown, "files": [str(f) for f in files], "bytes": total, **facts}
    if labelled is not None:
        meta["labels"] = {**meta["labels"], "space": labelled.space.to_card()}
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
    if corpus.labels != "none":  # an unlabelled corpus keeps the key its caches were made with
        facts.update(labels=corpus.labels, label_columns=list(corpus.label_columns), text_column=corpus.text_column,
                     file_labels=list(corpus.file_labels))
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
        checked = [(IDS_FILE, meta[CHECKSUM])]
        if "labels" in meta:
            checked.append((LABELS_FILE, meta["labels"][CHECKSUM]))
        for name, checksum in checked:
            if ids_checksum(directory / name) != checksum:
                if progress is not None:
                    print(f"the token cache {directory / name} does not match its checksum (damaged); "
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
    prepared = PreparedCorpus(ids, tokenizer, {"tokens": meta["tokens"], "sha1": meta["sha1"]}, meta["coverage"],
                              meta["unknown"], meta["missing"], directory, reused)
    if "labels" in meta:
        space = LabelSpace.from_card(meta["labels"]["space"])
        shape = (meta["tokens"], len(space.groups))
        prepared.labels = np.memmap(directory / LABELS_FILE, dtype=LABEL_DTYPE, mode="c", shape=shape) \
            if meta["tokens"] else np.zeros(shape, dtype=LABEL_DTYPE)
        prepared.label_space = space
        prepared.segments = [tuple(segment) for segment in meta["labels"]["segments"]]
    return prepared


# --------------------------------------------------------------------------- building


def _segments(config: Config, labelled, report: Callable[[int], None], block_chars: int):
    """The corpus as (label ids, text blocks) segments: one (None, blocks) for an unlabelled corpus,
    one per label combination for a labelled one (`textgen.data.labels`)."""
    if labelled is None:
        corpus = config.corpus
        return [(None, stream_corpus(corpus.paths, corpus.encoding, corpus.strip_gutenberg, block_chars=block_chars,
                                     on_bytes=report))]
    done = [0]

    def texts(documents):
        for text in documents:
            done[0] += len(text)
            report(done[0])
            yield text

    return [(combination, texts(documents)) for combination, documents in labelled.segments]


def _encode_to_file(config: Config, tokenizer: Tokenizer, directory: Path, segments, on_unknown: str | None,
                    hint: str) -> dict:
    """Write the ids to ids.bin block by block (and a labelled corpus's labels to labels.bin);
    return their facts for meta.json.

    on_unknown: the policy for tokens a given tokenizer lacks (`textgen.data.unknown`); None when
    the tokenizer was fitted on this corpus (word tokens below min_count or past max_vocab
    become <unk>, as `encode` does).
    """
    policy = UnknownTokens(tokenizer, on_unknown, hint=hint) if on_unknown is not None else None
    fd, tmp = tempfile.mkstemp(prefix=f".{IDS_FILE}.", suffix=".tmp", dir=directory)
    ids_file = _IdWriter(os.fdopen(fd, "wb"), tokenizer)
    labels = _LabelWriter(directory) if segments[0][0] is not None else None
    try:
        with ids_file.out:
            for combination, blocks in segments:
                text, start = _Text(blocks), ids_file.tokens
                # Each segment is encoded on its own, so a word never joins two label combinations.
                for ids in policy.encode(text) if policy else tokenizer.encode_stream(text):
                    ids_file.write(ids)
                    if labels is not None:
                        labels.write(combination, len(ids))
                ids_file.has_text = ids_file.has_text or text.has_text
                if labels is not None:
                    labels.segments.append((start, ids_file.tokens - start))
            ids_file.out.flush()
            os.fsync(ids_file.out.fileno())
        if not ids_file.has_text:
            raise CorpusError(f"the corpus is empty ({', '.join(str(p) for p in config.corpus.paths[:3])}); "
                              "point corpus.paths at files with text")
        if labels is not None:
            labels.publish()
        publish_file(tmp, directory / IDS_FILE)
    except BaseException as exc:
        remove_file(tmp)
        if labels is not None:
            labels.discard()
        if isinstance(exc, OSError):
            raise write_failed(directory / IDS_FILE, exc) from None
        raise
    facts = ids_file.facts(policy)
    if labels is not None:
        facts["labels"] = {"segments": labels.segments, CHECKSUM: labels.checksum.hexdigest()}
    return facts


class _IdWriter:
    """ids.bin as it is written, with the facts meta.json keeps about the ids."""

    def __init__(self, out, tokenizer: Tokenizer):
        self.out, self.tokenizer = out, tokenizer
        self.dtype = id_dtype(tokenizer.vocab_size)
        self.digest, self.tokens, self.unk_count, self.marker_count = hashlib.sha1(), 0, 0, 0
        self.checksum = hashlib.sha256()  # of the bytes written, verified whenever the cache is reused
        self.has_text = False

    def write(self, ids: np.ndarray) -> None:
        tokenizer = self.tokenizer
        if tokenizer.unk_id is not None:
            self.unk_count += int(np.count_nonzero(ids == tokenizer.unk_id))
        if tokenizer.marker_ids:
            self.marker_count += int(np.count_nonzero(np.isin(ids, tokenizer.marker_ids)))
        self.digest.update(np.ascontiguousarray(ids, dtype="<i4"))  # the fingerprint --resume compares
        data = np.ascontiguousarray(ids, dtype=self.dtype)
        self.out.write(data)
        self.checksum.update(data)
        self.tokens += len(ids)

    def facts(self, policy: UnknownTokens | None) -> dict:
        words = self.tokens - self.marker_count  # spacing markers are no text of the corpus: not counted either way
        coverage = 1.0 - self.unk_count / words if words else 1.0
        return {"dtype": self.dtype.str, "tokens": self.tokens, "sha1": self.digest.hexdigest(), "coverage": coverage,
                "unknown": policy.count if policy else self.unk_count,
                "missing": policy.tokens[:MISSING_KEPT] if policy else [], CHECKSUM: self.checksum.hexdigest()}


class _LabelWriter:
    """labels.bin, written beside ids.bin: each token's label ids, one row per token."""

    def __init__(self, directory: Path):
        self.path = directory / LABELS_FILE
        fd, self.tmp = tempfile.mkstemp(prefix=f".{LABELS_FILE}.", suffix=".tmp", dir=directory)
        self.out = os.fdopen(fd, "wb")
        self.checksum = hashlib.sha256()
        self.segments: list[tuple[int, int]] = []

    def write(self, combination: tuple[int, ...], count: int) -> None:
        data = np.tile(np.asarray(combination, dtype=LABEL_DTYPE), (count, 1)).tobytes()
        self.out.write(data)
        self.checksum.update(data)

    def publish(self) -> None:
        self.out.flush()
        os.fsync(self.out.fileno())
        self.out.close()
        publish_file(self.tmp, self.path)

    def discard(self) -> None:
        self.out.close()
        remove_file(self.tmp)


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
