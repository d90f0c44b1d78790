"""Measure a model on labelled held-out text: loss and bits per character for each label.

The text is a labelled corpus (a folder of sub-folders, JSON Lines, CSV or TSV; see
textgen.data.labels), read and encoded as training reads it: one label combination after
another. It is scored as `textgen evaluate` scores plain text (windows of seq_length + 1
tokens sharing one token, each from a fresh state), a conditioned model reading each
token's labels, and each predicted token's loss is counted under its own label in every
group. With `validation_only`, only the tail of each label combination that training held
out (the model's corpus.validation_fraction) is scored, which on the training corpus is
exactly the run's validation split.

A model without labels is scored the same way (it reads no labels), so a conditioned model
and separate models can be compared label by label.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from textgen.config import CorpusConfig, config_from_dict
from textgen.data.dataset import split_labelled
from textgen.data.labels import labels_for_model, read_labelled
from textgen.data.tokenizer import tokenizer_from_config
from textgen.data.unknown import UnknownTokens
from textgen.errors import CorpusError, UsageError
from textgen.evaluation.metrics import bits_per_char, perplexity
from textgen.labels import LabelSpace
from textgen.models.layers import find_label_embedding, find_token_embedding


@dataclass
class LabelScore:
    group: str  # the label group
    label: str  # the label (any: text without one in this group)
    tokens: int  # predicted tokens with this label
    characters: int  # characters those tokens cover
    loss: float  # mean cross-entropy in nats per token
    perplexity: float
    bits_per_char: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LabelledEvaluation:
    text: str  # the labelled corpus evaluated
    level: str  # char | word
    seq_length: int  # tokens of context per window
    split: str  # all | validation
    tokens: int  # tokens predicted and scored
    characters: int  # characters they cover
    loss: float  # over every scored token
    perplexity: float
    bits_per_char: float
    labels: list[LabelScore]  # one per label of every group that has scored tokens

    def to_dict(self) -> dict:
        return {**asdict(self), "labels": [score.to_dict() for score in self.labels]}


def labelled_corpus_config(model: keras.Model, path: str | Path, *, labels: str | None, label_columns=None,
                           text_column: str | None = None, encoding: str = "utf-8") -> CorpusConfig:
    """How to read `path`: the given label options, the rest as the model's training read its corpus."""
    card = find_token_embedding(model).model_card
    trained = config_from_dict(card["config"]).corpus if isinstance(card.get("config"), dict) else CorpusConfig()
    given = {"labels": labels, "label_columns": tuple(label_columns or ()) or None, "text_column": text_column}
    chosen = {key: value for key, value in given.items() if value is not None}
    if chosen.get("labels", trained.labels) == "none":
        raise UsageError("per-label evaluation needs a labelled text; give --labels folders, jsonl, csv or tsv")
    return dataclasses.replace(trained, paths=(str(path),), encoding=encoding, **chosen)


def evaluate_labelled(model: keras.Model, corpus: CorpusConfig, *, seq_length: int | None = None,
                      batch_size: int = 64, validation_only: bool = False, skip_unknown: bool = False
                      ) -> LabelledEvaluation:
    """Score the labelled corpus `corpus` describes, label by label."""
    embedding = find_token_embedding(model)
    tokenizer = tokenizer_from_config(embedding.tokenizer)
    training = embedding.model_card.get("config", {}).get("training", {})
    seq = seq_length or training.get("seq_length", 100)
    labelled = read_labelled(corpus)
    ids, labels, segments = _encode(labelled, tokenizer, skip_unknown)
    if validation_only:
        _, ids, _, labels = split_labelled(ids, labels, segments, corpus.validation_fraction, seq)
        if not len(ids):
            raise CorpusError(f"the held-out tails of {corpus.paths[0]} are shorter than one window of "
                              f"{seq + 1} tokens; score the whole text (leave out --validation-split)")
    layer = find_label_embedding(model)
    model_space = LabelSpace.from_card(layer.groups) if layer is not None else None
    inputs = labels_for_model(labels, labelled.space, model_space, len(ids), "the model") \
        if model_space is not None else None
    losses = _token_losses(model, ids, inputs, seq, batch_size)  # loss of ids[i + 1] at position i
    if not len(losses):
        raise CorpusError(f"{corpus.paths[0]} has fewer than two tokens the model can read; give a longer text")
    targets, target_labels = ids[1:len(losses) + 1], labels[1:len(losses) + 1]
    scores = []
    for g, group in enumerate(labelled.space.groups):
        for index, label in enumerate(group.labels):
            mine = target_labels[:, g] == index
            if mine.any():
                scores.append(_score(group.name, label, losses[mine], targets[mine], tokenizer))
    overall = _score("", "", losses, targets, tokenizer)
    return LabelledEvaluation(text=str(corpus.paths[0]), level=tokenizer.level, seq_length=min(seq, len(losses)),
                              split="validation" if validation_only else "all", tokens=overall.tokens,
                              characters=overall.characters, loss=overall.loss, perplexity=overall.perplexity,
                              bits_per_char=overall.bits_per_char, labels=scores)


def _encode(labelled, tokenizer, skip_unknown: bool) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """The ids of every segment in order, each token's label ids (tokens, groups) and the
    segments' (start, length), as the training cache has them."""
    kept = "unk" if tokenizer.unk_id is not None else "error"
    unknown = UnknownTokens(tokenizer, "drop" if skip_unknown else kept, fail_fast=True,
                            hint="; pass --skip-unknown to leave them out")
    parts, rows, segments, start = [], [], [], 0
    for combination, texts in labelled.segments:
        ids = np.concatenate([np.zeros(0, np.int32), *unknown.encode(texts)])
        parts.append(ids)
        rows.append(np.tile(np.asarray(combination, dtype=np.uint16), (len(ids), 1)))
        segments.append((start, len(ids)))
        start += len(ids)
    return np.concatenate(parts).astype(np.int32), np.concatenate(rows), segments


def _token_losses(model: keras.Model, ids: np.ndarray, labels: np.ndarray | None, seq: int,
                  batch_size: int) -> np.ndarray:
    """Each predicted token's cross-entropy (nats), in text order: windows of seq + 1 tokens
    sharing one token, the last one shorter."""
    conditioned = labels is not None

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)]
                 + ([tf.TensorSpec([None, None, labels.shape[1]], tf.int32)] if conditioned else []))
    def window_losses(windows, *window_labels):
        inputs = [windows[:, :-1], window_labels[0][:, :-1]] if conditioned else windows[:, :-1]
        logits = tf.cast(model(inputs, training=False), tf.float32)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=windows[:, 1:], logits=logits)

    starts = np.arange(0, max(len(ids) - 1, 0), seq)
    out = []
    for first in range(0, len(starts), batch_size):
        group = starts[first:first + batch_size]
        full = group[group + seq + 1 <= len(ids)]
        for chosen in (full, group[len(full):]):  # whole windows batched; the tail window on its own
            if not len(chosen):
                continue
            span = np.arange(min(seq + 1, len(ids) - chosen[0]))
            positions = chosen[:, None] + span
            args = [tf.constant(ids[positions])]
            if conditioned:
                args.append(tf.constant(labels[positions].astype(np.int32)))
            out.append(window_losses(*args).numpy().reshape(-1))
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def _score(group: str, label: str, losses: np.ndarray, targets: np.ndarray, tokenizer) -> LabelScore:
    total = float(losses.sum())
    characters = len(tokenizer.decode(targets)) if tokenizer.level == "word" else len(targets)
    loss = total / len(losses)
    return LabelScore(group=group, label=label, tokens=int(len(losses)), characters=characters, loss=loss,
                      perplexity=perplexity(loss), bits_per_char=bits_per_char(total, characters))
