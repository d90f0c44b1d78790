"""Measure a saved model on held-out text: loss, perplexity and bits per character.

The text is scored the way validation scores it during training: cut into windows of
seq_length + 1 tokens that share one token, each window predicted from a fresh state, so
every token after the first is predicted exactly once (the last, shorter window included;
validation, which runs in whole batches, leaves out its last partial batch and that window).
The file is read, decoded and encoded in blocks and the windows are scored in batches as
they fill up, so memory stays flat however large the file is. Line ends are normalised as
in training (Gutenberg headers are not stripped: give the text you want measured).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from textgen.config import INT_LIMITS
from textgen.data.corpus import check_text_path, stream_corpus, stream_stdin
from textgen.data.dataset import make_chunks
from textgen.data.tokenizer import tokenizer_from_config
from textgen.data.unknown import UnknownTokens
from textgen.errors import CorpusError, UsageError
from textgen.evaluation.metrics import bits, bits_per_char, perplexity
from textgen.models.builder import model_kind
from textgen.models.layers import find_label_embedding, find_token_embedding

BLOCK_CHARS = 1 << 16  # characters read at a time: memory stays flat and progress moves smoothly
MAX_SEQ_LENGTH = INT_LIMITS["training.seq_length"]  # tokens per window, as in training


@dataclass
class Evaluation:
    text: str  # the file evaluated
    level: str  # char | word
    seq_length: int  # tokens of context per window
    characters: int  # characters read (after line ends are normalised)
    tokens: int  # tokens predicted and scored
    unknown_tokens: int  # tokens the vocabulary lacks (word level: scored as <unk>; skipped if asked)
    loss: float  # mean cross-entropy in nats per predicted token
    perplexity: float  # exp(loss)
    bits_per_token: float  # loss / ln 2
    bits_per_char: float  # total bits / characters predicted (equals bits_per_token at char level)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_file(model: keras.Model, path: str | Path, *, encoding: str = "utf-8", seq_length: int | None = None,
                  batch_size: int = 64, skip_unknown: bool = False, progress: Callable[[int], None] | None = None,
                  block_chars: int = BLOCK_CHARS) -> Evaluation:
    """Score the text in `path` ("-": stdin).

    progress(characters, total): called as batches are scored, with the characters of the text
        scored so far and the text's characters in all (None for stdin until it ends; for a
        file estimated from its size until the whole file is read).
    skip_unknown: leave out tokens the vocabulary lacks; otherwise an unknown character is
        an error (named at once, before more is scored) and an unknown word is scored as <unk>.
    """
    path = Path(path)
    check_text_path(path)
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    embedding = find_token_embedding(model)
    tokenizer = tokenizer_from_config(embedding.tokenizer)
    seq = seq_length if seq_length is not None else \
        embedding.model_card.get("config", {}).get("training", {}).get("seq_length", 100)
    if not 1 <= seq <= MAX_SEQ_LENGTH:
        raise UsageError(f"seq length must be between 1 and {MAX_SEQ_LENGTH:,}, got {seq:,}")
    if model_kind(model) == "transformer":
        context = model.get_layer("position_embedding").max_length
        if seq > context:
            raise UsageError(f"seq length {seq} exceeds the transformer's context of {context} tokens; "
                             f"give --seq-length {context} or less")
    text = _Reading(path, encoding, block_chars)
    kept = "unk" if tokenizer.unk_id is not None else "error"  # a character vocabulary has no <unk>
    unknown = UnknownTokens(tokenizer, "drop" if skip_unknown else kept, fail_fast=True,
                            hint="; pass --skip-unknown to leave them out")
    score = _scorer(model)
    total, scored = 0.0, 0
    for batch in _windows(text.counted(unknown.encode(text)), seq, batch_size):
        total += score(batch)
        scored += batch.shape[0] * (batch.shape[1] - 1)
        if progress is not None:
            progress(text.characters_scored(scored), text.total())
    if progress is not None:
        progress(text.characters, text.characters)
    if scored == 0:
        raise CorpusError(f"{path} has fewer than two tokens the model can read; give a longer text")
    loss = total / scored
    # The characters the scored tokens cover: at character level each scored token is one.
    predicted = text.characters if tokenizer.level == "word" else scored
    return Evaluation(text=str(path), level=tokenizer.level, seq_length=min(seq, scored),  # the context used
                      characters=text.characters, tokens=scored, unknown_tokens=unknown.count, loss=loss,
                      perplexity=perplexity(loss), bits_per_token=bits(loss),
                      bits_per_char=bits_per_char(total, predicted))


class _Reading:
    """The text's blocks as they are read, counting their characters and the tokens they encode to.

    Scoring is what takes the time, so progress is told in characters scored: the tokens
    scored so far, turned into characters at the ratio of the text read so far.
    """

    def __init__(self, path: Path, encoding: str, block_chars: int):
        self.path, self.encoding, self.block_chars = path, encoding, block_chars
        self.size = path.stat().st_size if str(path) != "-" else None
        self.characters = self.tokens = self.encoded_bytes = 0
        self.finished = False

    def __iter__(self) -> Iterator[str]:
        if str(self.path) == "-":
            blocks = stream_stdin(self.encoding, block_chars=self.block_chars)
        else:  # the file as it is: no Gutenberg stripping, no added final newline
            blocks = stream_corpus([str(self.path)], self.encoding, strip_gutenberg=False,
                                   block_chars=self.block_chars, final_newline=False)
        for block in blocks:
            self.characters += len(block)
            if self.size is not None:
                self.encoded_bytes += len(block.encode(self.encoding, "replace"))
            yield block
        self.finished = True

    def counted(self, id_blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for ids in id_blocks:
            self.tokens += len(ids)
            yield ids

    def characters_scored(self, tokens_scored: int) -> int:
        if not self.tokens:
            return 0
        return min(self.characters, round(tokens_scored * self.characters / self.tokens))

    def total(self) -> int | None:
        """The text's characters: exact once it is all read; until then estimated from the file's
        size at the bytes per character read so far (None for stdin)."""
        if self.finished:
            return self.characters
        if self.size is None or not self.encoded_bytes:
            return None
        return max(self.characters, round(self.size * self.characters / self.encoded_bytes))


def _windows(id_blocks: Iterator[np.ndarray], seq: int, batch_size: int) -> Iterator[np.ndarray]:
    """Batches of (batch, seq + 1) windows sharing one token, then the leftovers and the tail window."""
    pending = np.empty(0, dtype=np.int32)  # tokens not yet in a window; the first is shared with the last window
    waiting = np.empty((0, seq + 1), dtype=np.int32)  # windows not yet batched
    for ids in id_blocks:
        pending = np.concatenate([pending, ids.astype(np.int32)])
        n = max(len(pending) - 1, 0) // seq
        if not n:
            continue
        waiting = np.concatenate([waiting, make_chunks(pending, seq)])
        pending = pending[n * seq:]
        full = len(waiting) // batch_size * batch_size
        for start in range(0, full, batch_size):
            yield waiting[start:start + batch_size]
        waiting = waiting[full:]
    if len(waiting):
        yield waiting
    if len(pending) > 1:
        yield pending[None, :]


def _scorer(model: keras.Model) -> Callable[[np.ndarray], float]:
    """Summed cross-entropy (nats) of a batch of windows, compiled once for every shape."""

    layer = find_label_embedding(model)
    groups = len(layer.groups) if layer is not None else 0

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def summed_loss(windows):
        inputs = windows[:, :-1]
        if groups:  # a conditioned model reads plain text as text without a label (any)
            inputs = [inputs, tf.zeros([tf.shape(inputs)[0], tf.shape(inputs)[1], groups], tf.int32)]
        logits = tf.cast(model(inputs, training=False), tf.float32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=windows[:, 1:], logits=logits)
        return tf.reduce_sum(tf.cast(losses, tf.float64))

    return lambda windows: float(summed_loss(tf.constant(windows, dtype=tf.int32)))
