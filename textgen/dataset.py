"""Encoded ids -> tf.data pipelines of (input, target) windows shifted by one token."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from textgen.errors import CorpusError, UsageError


def encode_known(tokenizer, text: str, unknown: str = "error", hint: str = "") -> tuple[np.ndarray, int, list[str]]:
    """Encode text with an existing tokenizer, deciding what happens to tokens it lacks.

    unknown: "error" raises a UsageError naming them (followed by `hint`); "unk" maps them to
    the tokenizer's unknown token (word level only); "drop" leaves them out.
    Returns the ids, how many tokens were unknown, and the distinct unknown tokens.
    """
    if tokenizer.unk_id is None:  # character level: no unknown token to map to
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        vocab = np.array(sorted(ord(c) for c in tokenizer.vocabulary), dtype=np.uint32)
        where = np.minimum(np.searchsorted(vocab, codes), len(vocab) - 1)
        known = vocab[where] == codes
        count = int(len(codes) - np.count_nonzero(known))
        if count == 0:
            return tokenizer.encode(text), 0, []
        first = np.unique(codes[~known], return_index=True)
        missing = [chr(c) for c in first[0][np.argsort(first[1])]]
        if unknown != "drop":
            why = "; character models have no unknown token" if unknown == "unk" else ""
            raise UsageError(f"{_describe(missing, count, 'character')}{why}{hint}")
        kept = codes[known].astype("<u4").tobytes().decode("utf-32-le")
        return tokenizer.encode(kept), count, missing
    ids = tokenizer.encode(text)
    is_unknown = ids == tokenizer.unk_id
    count = int(np.count_nonzero(is_unknown))
    if count == 0:
        return ids, 0, []
    missing = tokenizer.unknown_tokens(text)
    if unknown == "error":
        raise UsageError(f"{_describe(missing, count, 'word')}{hint}")
    return (ids[~is_unknown] if unknown == "drop" else ids), count, missing


def _describe(missing: list[str], count: int, noun: str, limit: int = 10) -> str:
    shown = ", ".join(repr(t) for t in missing[:limit]) + (f" and {len(missing) - limit} more"
                                                            if len(missing) > limit else "")
    return (f"the text has {count:,} {noun}{'s' if count != 1 else ''} the model's vocabulary lacks "
            f"({len(missing)} distinct: {shown})")


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
    """The shift: input is the chunk without its last token, target without its first.

    Works on one chunk or a batch of them (the shift is along the last axis).
    """
    return chunk[..., :-1], chunk[..., 1:]


def make_chunks(ids: np.ndarray, seq_length: int) -> np.ndarray:
    """Non-overlapping windows of seq_length + 1 tokens, consecutive windows sharing one token."""
    n = max(len(ids) - 1, 0) // seq_length
    if n == 0:
        return np.zeros((0, seq_length + 1), dtype=np.int32)
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


def steps_per_pass(n_ids: int, seq_length: int, batch_size: int) -> int:
    """Batches in one pass over `n_ids` tokens, as `make_training_stream` forms them."""
    n_chunks = (n_ids - 1) // seq_length
    return max(n_chunks // batch_size, 1)


def make_training_stream(ids: np.ndarray, seq_length: int, batch_size: int, *, seed: int,
                         start_step: int = 0) -> tf.data.Dataset:
    """An endless stream of (input, target) batches that can be restarted at any step.

    Pass p visits the windows in an order drawn from (seed, p) alone, so the batch at global
    step g is the same whether training ran straight through or was resumed at step g: a
    resumed run starts at pass g // steps_per_pass and skips the batches already seen.
    Skipping works on window indices, so no text is gathered for the skipped batches.
    """
    chunks = make_chunks(ids, seq_length)
    n = len(chunks)
    per_pass = steps_per_pass(len(ids), seq_length, batch_size)
    size = min(batch_size, n)  # a tiny corpus still yields one (smaller) batch per pass
    first_pass, skip = divmod(start_step, per_pass)
    table = tf.constant(chunks)

    def pass_batches(p):
        order = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), p])))
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order[: per_pass * size], [per_pass, size]))

    ds = tf.data.Dataset.range(first_pass, np.iinfo(np.int64).max).flat_map(pass_batches).skip(skip)
    ds = ds.map(lambda index: split_input_target(tf.gather(table, index)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
