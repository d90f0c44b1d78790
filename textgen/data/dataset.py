"""Encoded ids -> tf.data pipelines of (input, target) windows shifted by one token.

A labelled corpus (textgen.data.labels) also has each token's label ids, (tokens, groups);
given them, the pipelines yield ((input, input labels), target): the labels of the input
tokens, which a conditioned model adds to their embeddings.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from textgen.errors import CorpusError, UsageError


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


def split_labelled(ids: np.ndarray, labels: np.ndarray, segments: list[tuple[int, int]], validation_fraction: float,
                   seq_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train ids, validation ids, train labels, validation labels): the tail `validation_fraction`
    of each segment (a label combination's tokens) is held out, so every label is validated.

    Nothing is held out when the tails together are too short to form one window.
    """
    if len(ids) < seq_length + 1:
        split_ids(ids, validation_fraction, seq_length)  # its error
    held = np.zeros(len(ids), dtype=bool)
    for start, length in segments:
        n_val = int(length * validation_fraction)
        held[start + length - n_val:start + length] = True
    if held.sum() < seq_length + 1:
        held[:] = False
    if (~held).sum() < seq_length + 1:
        raise CorpusError(f"the training split has {(~held).sum()} tokens, fewer than seq_length + 1; "
                          "lower corpus.validation_fraction or training.seq_length")
    return ids[~held], ids[held], labels[~held], labels[held]


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
                 seed: int | None = None, input_context: tf.distribute.InputContext | None = None,
                 labels: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches of (input, target) int32 windows of shape (batch, seq_length); with `labels`
    (tokens, groups), ((input, input labels), target), the labels (batch, seq_length, groups).

    Windows are read from `ids` inside the pipeline (a memory-mapped file is not copied). With
    `input_context` (tf.distribute), this input pipeline's replicas get their slices of each batch.
    """
    n = _window_count(len(ids), seq_length)
    index = tf.data.Dataset.range(n)
    if shuffle:
        index = index.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
    # Keep every step the same shape when there is enough data; a tiny corpus still yields one batch.
    size = batch_size if n >= batch_size else n
    if input_context is not None:
        size -= size % input_context.num_replicas_in_sync
        index = index.take(n if size else 0)  # fewer windows than replicas: nothing to split
    index = index.batch(max(size, 1), drop_remainder=n >= batch_size or input_context is not None)
    if labels is None:
        unshifted = index.map(lambda batch: (batch, tf.constant(0, tf.int64)))
    else:  # every window keeps its labels
        unshifted = index.map(lambda batch: (batch, tf.constant(0, tf.int64), tf.ones_like(batch, tf.bool)))
    return _gather_windows(unshifted, ids, seq_length, input_context, labels)


def validation_steps(n_ids: int, seq_length: int, batch_size: int, replicas: int = 1) -> int:
    """Batches in one pass of `make_dataset` over `n_ids` tokens (split over `replicas`)."""
    n = _window_count(n_ids, seq_length)
    if n >= batch_size:
        return n // batch_size
    return 1 if n - n % replicas else 0


def steps_per_pass(n_ids: int, seq_length: int, batch_size: int) -> int:
    """Batches in one pass over `n_ids` tokens, as `make_training_stream` forms them."""
    n_chunks = (n_ids - 1) // seq_length
    return max(n_chunks // batch_size, 1)


def make_training_stream(ids: np.ndarray, seq_length: int, batch_size: int, *, seed: int, start_step: int = 0,
                         shift_windows: bool = False, input_context: tf.distribute.InputContext | None = None,
                         labels: np.ndarray | None = None, label_balance: float = 1.0,
                         label_dropout: float = 0.0) -> tf.data.Dataset:
    """An endless stream of (input, target) batches that can be restarted at any step.

    Pass p visits the windows in an order drawn from (seed, p) alone, so the batch at global
    step g is the same whether training ran straight through or was resumed at step g: a
    resumed run starts at pass g // steps_per_pass and skips the batches already seen.
    Skipping works on window indices, so no text is gathered for the skipped batches, and
    windows are gathered from `ids` inside the pipeline, so a memory-mapped corpus is read
    where it lies. With `input_context` (tf.distribute), each global batch is the same as
    without and this input pipeline yields its replicas' slices of it, one after the other.

    With `shift_windows`, pass p also moves every window boundary by a shift in
    [0, seq_length) drawn from (seed, p), so each pass cuts the text differently (a window
    the shift would push past the end keeps the end instead). Without it every pass cuts
    the same windows and only their order changes.

    With `labels` (tokens, groups) the batches are ((input, input labels), target). A window
    belongs to the label combination of its first token; with `label_balance` below 1, pass
    p draws its windows (with replacement) so that each combination's share is its window
    count to that power, normalised (0: every combination equally). `label_dropout` is the
    chance that a window's labels all become 0 (`any`). Both are drawn from (seed, p) too.
    """
    n = _window_count(len(ids), seq_length)
    per_pass = steps_per_pass(len(ids), seq_length, batch_size)
    size = min(batch_size, n)  # a tiny corpus still yields one (smaller) batch per pass
    first_pass, skip = divmod(start_step, per_pass)

    cdf = window_cdf(labels, n, seq_length, label_balance) if labels is not None and label_balance != 1 else None

    def pass_batches(p):
        pass_seed = tf.stack([tf.constant(seed, tf.int64), p])
        if cdf is None:
            order = tf.argsort(tf.random.stateless_uniform([n], seed=pass_seed))
        else:
            draws = tf.random.stateless_uniform([per_pass * size], seed=tf.random.experimental.stateless_fold_in(
                pass_seed, 3), dtype=tf.float64)
            order = tf.minimum(tf.searchsorted(cdf, draws, side="right"), n - 1)
        shift = tf.constant(0, tf.int64)
        if shift_windows:
            shift = tf.random.stateless_uniform([], seed=tf.random.experimental.stateless_fold_in(pass_seed, 1),
                                                minval=0, maxval=seq_length, dtype=tf.int64)
        batches = tf.reshape(order[: per_pass * size], [per_pass, size])
        if labels is None:
            return tf.data.Dataset.from_tensor_slices((batches, tf.fill([per_pass], shift)))
        keep = tf.random.stateless_uniform([per_pass, size], seed=tf.random.experimental.stateless_fold_in(
            pass_seed, 2)) >= label_dropout
        return tf.data.Dataset.from_tensor_slices((batches, tf.fill([per_pass], shift), keep))

    index = tf.data.Dataset.range(first_pass, np.iinfo(np.int64).max).flat_map(pass_batches).skip(skip)
    return _gather_windows(index, ids, seq_length, input_context, labels)


def window_cdf(labels: np.ndarray, n: int, seq_length: int, balance: float) -> tf.Tensor:
    """The cumulative chance of drawing each of `n` windows when each label combination (of a
    window's first token) gets a share of its window count ** balance."""
    firsts = np.asarray(labels[np.arange(n) * seq_length])
    _, combination = np.unique(firsts, axis=0, return_inverse=True)
    combination = combination.reshape(-1)
    counts = np.bincount(combination).astype(np.float64)
    chance = (counts ** balance / counts)[combination]
    cdf = np.cumsum(chance)
    return tf.constant(cdf / cdf[-1], tf.float64)


def replica_batch_size(batch_size: int, replicas: int) -> int:
    """Windows each replica trains on per step; the global batch must split evenly."""
    if batch_size % replicas:
        raise UsageError(f"training.batch_size ({batch_size}) must be a multiple of the {replicas} replicas "
                         f"training in sync, e.g. {max(batch_size // replicas, 1) * replicas}")
    return batch_size // replicas


def _window_count(n_ids: int, seq_length: int) -> int:
    return max(n_ids - 1, 0) // seq_length


def _gather_windows(index: tf.data.Dataset, ids: np.ndarray, seq_length: int,
                    input_context: tf.distribute.InputContext | None, labels: np.ndarray | None = None
                    ) -> tf.data.Dataset:
    """Batches of (window indices, shift) -> (input, target) batches gathered from the token ids;
    with `labels`, (window indices, shift, keep labels) -> ((input, input labels), target).

    Window i starts at token i * seq_length + shift, or at the last full window's start if
    that is earlier.
    """
    if input_context is not None:
        replicas, pipelines = input_context.num_replicas_in_sync, input_context.num_input_pipelines
        local = replicas // pipelines
        first = input_context.input_pipeline_id * local

        def this_pipeline(batch, shift, *keep):
            def mine(values):
                return tf.reshape(values, [replicas, -1])[first:first + local]

            return tf.data.Dataset.from_tensor_slices((mine(batch), tf.fill([local], shift), *map(mine, keep)))

        index = index.flat_map(this_pipeline)
    table, offset = id_table(ids)
    span = tf.range(seq_length + 1, dtype=tf.int64)
    last_start = max(len(ids) - seq_length - 1, 0)

    # A labelled corpus is small next to its ids (a few groups of uint16): held as one tensor.
    label_table = tf.constant(np.ascontiguousarray(labels)) if labels is not None else None

    def windows(batch, shift, keep=None):
        starts = tf.minimum(tf.cast(batch, tf.int64) * seq_length + shift, last_start)
        positions = starts[:, tf.newaxis] + span
        inputs, targets = split_input_target(tf.cast(tf.gather(table, offset + positions), tf.int32))
        if label_table is None:
            return inputs, targets
        input_labels = tf.cast(tf.gather(label_table, positions[:, :-1]), tf.int32)
        return (inputs, input_labels * tf.cast(keep, tf.int32)[:, tf.newaxis, tf.newaxis]), targets

    ds = index.map(windows, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # tf.data's default graph rewrites serialise the pipeline, which would copy the captured
    # id table (the whole corpus) into memory; the pipeline is already parallel and prefetched.
    options.experimental_optimization.apply_default_optimizations = False
    # Without autotuning, AUTOTUNE means one worker per core and a small prefetch buffer. With
    # it, freeing an iterator waits on the autotuner's background thread: Keras frees the
    # validation iterator before every validation, and on 2 cores that wait measured 5-8 s
    # in about half the epochs (a third of a 10-minute run), with no faster steps to show for it.
    options.autotune.enabled = False
    return ds.with_options(options)


def id_table(ids: np.ndarray) -> tuple[tf.Tensor, int]:
    """A tensor holding `ids` and the position of ids[0] in it.

    A memory-mapped array (or a slice of one) is shared with TensorFlow without copying: the
    tensor is the whole mapped file, read from disk as windows are gathered. Anything else is
    copied into a tensor.
    """
    root = ids
    while isinstance(root.base, np.ndarray):
        root = root.base
    if isinstance(root, np.memmap) and root.dtype == ids.dtype and ids.flags.c_contiguous and root.flags.writeable:
        try:
            table = tf.experimental.dlpack.from_dlpack(root.__dlpack__())
            return table, (ids.ctypes.data - root.ctypes.data) // ids.itemsize if len(ids) else 0
        except (BufferError, TypeError, ValueError):
            pass
    return tf.constant(np.ascontiguousarray(ids)), 0
