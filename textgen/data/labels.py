"""Labelled corpora: files -> documents, each with a label in every label group.

`corpus.labels` says where labels come from:
    files    corpus.file_labels gives one label per entry of corpus.paths, for every file the
             entry names (a file, a directory or a glob)
    folders  a file under a sub-folder of a directory in corpus.paths gets the sub-folder's
             name (data/austen/*.txt -> austen); files directly in the directory, and files
             named directly or by a glob, have none
    jsonl    one JSON object a line: the text field and one field per label group
    csv/tsv  a header row names the columns: the text column and one column per label group

A document without a label in a group (a missing or null field, an empty CSV cell, a file
directly in a folder) has `any` there, the label of unlabelled text. Each group's labels are
sorted after `any`, and documents are numbered by the index of each of their labels, so a
combination of labels is a tuple of small ints (0 = any).

Files are decoded as every corpus is (textgen.data.corpus: strict decoding, no byte-order
mark, LF line ends); Gutenberg stripping applies to the files of a labelled folder, not to
the documents of a JSON Lines or CSV file. The documents are held in memory: the cache is
written grouped by label combination, which needs them all read first.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textgen.data.corpus import normalise_text, resolve_paths, stream_corpus
from textgen.errors import CorpusError, UsageError
from textgen.labels import ANY, LabelGroup, LabelSpace

# Characters that `--label` specs use to separate names and weights; a label holding one
# could never be asked for at generation.
_SPEC_CHARS = ("=", ",", ":")


@dataclass(frozen=True)
class Document:
    text: str  # ends with a newline, so documents join at line breaks as corpus files do
    labels: dict[str, str]  # group -> label; a group left out is `any`


@dataclass(frozen=True)
class LabelledCorpus:
    space: LabelSpace
    segments: list[tuple[tuple[int, ...], list[str]]]  # (label ids per group, the texts), combinations sorted


def read_labelled(corpus) -> LabelledCorpus:
    """The documents of `corpus` (a CorpusConfig with labels) grouped by label combination."""
    documents = read_documents(corpus)
    groups = label_groups(corpus)
    space = _space(groups, documents, corpus)
    index = [{label: i for i, label in enumerate(group.labels)} for group in space.groups]
    by_combination: dict[tuple[int, ...], list[str]] = {}
    for doc in documents:
        key = tuple(index[g][doc.labels.get(group.name, ANY)] for g, group in enumerate(space.groups))
        by_combination.setdefault(key, []).append(doc.text)
    return LabelledCorpus(space, sorted(by_combination.items()))


def label_groups(corpus) -> tuple[str, ...]:
    """The label groups' names, in the order of corpus.label_columns."""
    return tuple(corpus.label_columns)


def read_documents(corpus) -> list[Document]:
    kind = corpus.labels
    if kind == "folders":
        return _folder_documents(corpus)
    if kind == "files":
        return _file_documents(corpus)
    reader = {"jsonl": _jsonl_documents, "csv": _table_documents, "tsv": _table_documents}.get(kind)
    if reader is None:
        raise ValueError(f"corpus.labels={kind!r} reads no labels")  # callers check for "none" first
    documents = []
    for path in resolve_paths(corpus.paths):
        documents += reader(path, _file_text(path, corpus.encoding), corpus)
    return documents


def _space(groups: tuple[str, ...], documents: list[Document], corpus) -> LabelSpace:
    out = []
    for name in groups:
        found = sorted({doc.labels[name] for doc in documents if name in doc.labels})
        if not found:
            where = {"folders": "sub-folder", "files": "corpus.file_labels entry"}.get(corpus.labels, f"{name!r} field")
            raise CorpusError(f"no document of the corpus has a label in its {where} "
                              f"({', '.join(corpus.paths[:3])}); check corpus.label_columns and corpus.labels")
        out.append(LabelGroup(name, (ANY, *found)))
    return LabelSpace(tuple(out))


def _file_text(path: Path, encoding: str) -> str:
    """The whole file, read as every corpus file is, with no Gutenberg stripping."""
    return "".join(stream_corpus([str(path)], encoding, strip_gutenberg=False, final_newline=False))


def _document_text(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _folder_documents(corpus) -> list[Document]:
    group = label_groups(corpus)[0]
    documents, seen = [], set()
    for pattern in corpus.paths:
        root = Path(pattern).expanduser()
        for path in resolve_paths([pattern]):
            if path in seen:
                continue
            seen.add(path)
            labels = {}
            if root.is_dir() and len(path.relative_to(root).parts) > 1:
                name = path.relative_to(root).parts[0]
                labels[group] = _checked_label(name, f"folder {root / name}")
            text = "".join(stream_corpus([str(path)], corpus.encoding, corpus.strip_gutenberg))
            if text:
                documents.append(Document(_document_text(text), labels))
    return documents


def _file_documents(corpus) -> list[Document]:
    group = label_groups(corpus)[0]
    documents, labelled = [], {}
    for pattern, label in zip(corpus.paths, corpus.file_labels):
        label = _checked_label(label, f"corpus.file_labels entry for {pattern}")
        for path in resolve_paths([pattern]):
            if path in labelled:  # named again, by another entry: read once, under one label
                if labelled[path] != label:
                    raise CorpusError(f"{path} is named for two labels ({labelled[path]} and {label}); "
                                      "name each file under one entry of corpus.paths")
                continue
            labelled[path] = label
            text = "".join(stream_corpus([str(path)], corpus.encoding, corpus.strip_gutenberg))
            if text:
                documents.append(Document(_document_text(text), {group: label}))
    return documents


def _jsonl_documents(path: Path, text: str, corpus) -> list[Document]:
    documents = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{where} is not valid JSON ({exc.msg}, column {exc.colno}); "
                              "a JSON Lines corpus holds one JSON object a line") from None
        if not isinstance(record, dict):
            raise CorpusError(f"{where} is a JSON {type(record).__name__}, not an object; write one "
                              f'{{"{corpus.text_column}": ..., "{label_groups(corpus)[0]}": ...}} object a line')
        body = record.get(corpus.text_column)
        if not isinstance(body, str):
            what = "has no" if body is None else f"has a {type(body).__name__} in its"
            raise CorpusError(f"{where} {what} text field {corpus.text_column!r}; give each line one "
                              "(or set corpus.text_column to the field holding the text)")
        labels = {}
        for group in label_groups(corpus):
            value = record.get(group)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise CorpusError(f"{where}: label field {group!r} holds a {type(value).__name__}; "
                                  "a label is a string or a number")
            labels[group] = _checked_label(str(value), where)
        documents.append(Document(_document_text(normalise_text(body)), labels))
    return documents


def _table_documents(path: Path, text: str, corpus) -> list[Document]:
    delimiter = "\t" if corpus.labels == "tsv" else ","
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(rows)
    except StopIteration:
        raise CorpusError(f"{path} is empty; a {corpus.labels.upper()} corpus starts with a header row") from None
    except csv.Error as exc:
        raise CorpusError(f"{path} line 1 is not valid {corpus.labels.upper()} ({exc})") from None
    header = [name.strip() for name in header]
    for name in (corpus.text_column, *label_groups(corpus)):
        if name not in header:
            raise CorpusError(f"{path} line 1: the header has no column {name!r} (it has {', '.join(header)}); "
                              "fix corpus.text_column and corpus.label_columns or the header")
    text_at = header.index(corpus.text_column)
    label_at = {group: header.index(group) for group in label_groups(corpus)}
    documents = []
    try:
        for row in rows:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            where = f"{path} line {rows.line_num}"
            if len(row) != len(header):
                raise CorpusError(f"{where} has {len(row)} fields but the header {len(header)}; quote fields "
                                  f"that hold the separator")
            labels = {group: _checked_label(row[at].strip(), where)
                      for group, at in label_at.items() if row[at].strip()}
            documents.append(Document(_document_text(row[text_at]), labels))
    except csv.Error as exc:
        raise CorpusError(f"{path} line {rows.line_num} is not valid {corpus.labels.upper()} ({exc})") from None
    return documents


def _checked_label(label: str, where: str) -> str:
    label = label.strip()
    if not label:
        raise CorpusError(f"{where}: a label is empty; leave the field out (or null) for text without a label")
    if label == ANY:
        raise CorpusError(f"{where}: the label {ANY!r} is reserved for text without a label; rename it, or leave "
                          "the field out")
    bad = [c for c in _SPEC_CHARS if c in label]
    if bad:
        raise CorpusError(f"{where}: the label {label!r} holds {bad[0]!r}, which --label uses to separate names; "
                          "rename it")
    return label


def labels_for_model(labels: np.ndarray | None, corpus_space: LabelSpace | None, model_space: LabelSpace | None,
                     tokens: int, model: str) -> np.ndarray | None:
    """The corpus's per-token label ids numbered as `model_space` numbers them, for training the
    model `model` names (a fine-tuned or resumed one) on this corpus.

    An unlabelled corpus trains a conditioned model as text without labels (`any`). A
    labelled corpus needs a conditioned model with the same groups and every label of the
    corpus among the model's: the label embedding cannot grow.
    """
    if model_space is None:
        if corpus_space is not None:
            raise UsageError(f"{model} has no labels, so it cannot learn the labelled corpus's "
                             f"({corpus_space.describe().replace(chr(10), '; ')}); set corpus.labels=none, or "
                             "train a new model")
        return None
    if corpus_space is None:
        return np.zeros((tokens, len(model_space.groups)), dtype=np.uint16)
    if corpus_space == model_space:
        return labels
    names = [group.name for group in model_space.groups]
    if [group.name for group in corpus_space.groups] != names:
        raise UsageError(f"{model} has the label groups {', '.join(names)} but the corpus "
                         f"{', '.join(g.name for g in corpus_space.groups)}; set corpus.label_columns to "
                         f"{names}, or train a new model")
    out = np.empty(labels.shape, dtype=np.uint16)
    for g, (mine, theirs) in enumerate(zip(corpus_space.groups, model_space.groups)):
        missing = [label for label in mine.labels if label not in theirs.labels]
        if missing:
            raise UsageError(f"{model} has no label {missing[0]!r} in group {mine.name} (it has "
                             f"{', '.join(theirs.labels[1:])}); relabel that text, or train a new model")
        lookup = np.array([theirs.labels.index(label) for label in mine.labels], dtype=np.uint16)
        out[:, g] = lookup[labels[:, g]]
    return out
