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

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from textgen.data.dataset import encode_known, make_chunks
from textgen.data.corpus import check_regular_file, stream_corpus, stream_stdin
from textgen.errors import CorpusError, UsageError
from textgen.models.layers import find_token_embedding
from textgen.models.builder import model_kind
from textgen.data.tokenizer import tokenizer_from_config

BLOCK_CHARS = 1 << 20
MAX_SEQ_LENGTH = 1 << 20  # tokens per window; a text shorter than the window is scored as one


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
    """Score the text in `path` ("-": stdin); `progress(bytes_read)` is called as it is read."""
    from_stdin = str(path) == "-"
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
    counter = {"characters": 0, "unknown": 0}
    if from_stdin:
        source = stream_stdin(encoding, block_chars=block_chars, on_bytes=progress)
    else:  # score the file as it is
        source = stream_corpus([str(path)], encoding, strip_gutenberg=False, block_chars=block_chars,
                               on_bytes=progress, final_newline=False)
    blocks = _counted(source, counter)
    windows = _windows(_encoded(tokenizer, blocks, skip_unknown, counter), seq, batch_size)
    score = _scorer(model)
    total, scored = 0.0, 0
    for batch in windows:
        total += score(batch)
        scored += batch.shape[0] * (batch.shape[1] - 1)
    if scored == 0:
        raise CorpusError(f"{path} has fewer than two tokens the model can read; give a longer text")
    loss = total / scored
    word_level = tokenizer.unk_id is not None
    per_char = max(counter["characters"], 1) if word_level else scored
    return Evaluation(text=str(path), level=tokenizer.level, seq_length=min(seq, scored),  # the context used
                      characters=counter["characters"],
                      tokens=scored, unknown_tokens=counter["unknown"], loss=loss,
                      perplexity=math.exp(min(loss, 700.0)), bits_per_token=loss / math.log(2),
                      bits_per_char=total / math.log(2) / per_char)


def check_text_path(path: str | Path) -> None:
    """A UsageError unless `path` is "-" (stdin) or a regular file: a missing text is a wrong
    request (exit 2), as a missing config is; a FIFO would block and /dev/zero never ends."""
    if str(path) == "-":
        return
    path = Path(path)
    if not path.exists():
        raise UsageError(f"text file {path} does not exist; check the path")
    check_regular_file(path, "text file")


def _counted(blocks: Iterator[str], counter: dict) -> Iterator[str]:
    for block in blocks:
        counter["characters"] += len(block)
        yield block


def _encoded(tokenizer, blocks: Iterator[str], skip_unknown: bool, counter: dict) -> Iterator[np.ndarray]:
    """Ids block by block. Unknown characters are an error unless skipped; unknown words are
    scored as <unk> (or skipped). Word tokenizers carry their spacing state across blocks."""
    if tokenizer.unk_id is None:
        for block in blocks:
            ids, count, _ = encode_known(tokenizer, block, "drop" if skip_unknown else "error",
                                         hint="; pass --skip-unknown to leave them out")
            counter["unknown"] += count
            yield ids
        return
    for ids in tokenizer.encode_stream(blocks):
        unknown = ids == tokenizer.unk_id
        counter["unknown"] += int(np.count_nonzero(unknown))
        yield ids[~unknown] if skip_unknown else ids


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

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def summed_loss(windows):
        logits = tf.cast(model(windows[:, :-1], training=False), tf.float32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=windows[:, 1:], logits=logits)
        return tf.reduce_sum(tf.cast(losses, tf.float64))

    return lambda windows: float(summed_loss(tf.constant(windows, dtype=tf.int32)))
