"""Encoded ids -> tf.data pipelines of (input, target) windows shifted by one token."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from textgen.errors import CorpusError


def split_ids(ids: np.ndarray, validation_fraction: float, seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out the contiguous tail as validation data.

    The tail is dropped (empty validation) when it would be too short to form one window.
    """
    if len(ids) < seq_length + 1:
        raise CorpusError(f"the corpus has {len(ids)} tokens, fewer than seq_length + 1 = {seq_length + 1}; "
                          "use a longer corpus or a smaller training.seq_length")
    n_val = int(len(ids) * validation_fraction)
    if validation_fraction > 0 and n_val < seq_length + 1:
        n_val = 0
    train = ids[: len(ids) - n_val]
    if len(train) < seq_length + 1:
        raise CorpusError(f"the training split has {len(train)} tokens, fewer than seq_length + 1; "
                          "lower corpus.validation_fraction or training.seq_length")
    return train, ids[len(ids) - n_val:]


def split_input_target(chunk):
    """The shift: input is the chunk without its last token, target without its first."""
    return chunk[:-1], chunk[1:]


def make_chunks(ids: np.ndarray, seq_length: int) -> np.ndarray:
    """Non-overlapping windows of seq_length + 1 tokens, consecutive windows sharing one token."""
    n = (len(ids) - 1) // seq_length
    view = np.lib.stride_tricks.sliding_window_view(ids, seq_length + 1)[::seq_length][:n]
    return np.ascontiguousarray(view, dtype=np.int32)


def make_dataset(ids: np.ndarray, seq_length: int, batch_size: int, *, shuffle: bool = True,
                 seed: int | None = None) -> tf.data.Dataset:
    """Batches of (input, target) int32 windows of shape (batch, seq_length)."""
    chunks = make_chunks(ids, seq_length)
    ds = tf.data.Dataset.from_tensor_slices(chunks)
    if shuffle:
        ds = ds.shuffle(len(chunks), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(split_input_target, num_parallel_calls=tf.data.AUTOTUNE)
    # Keep every step the same shape when there is enough data; a tiny corpus still yields one batch.
    ds = ds.batch(batch_size, drop_remainder=len(chunks) >= batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
