import numpy as np
import pytest

from textgen.data.dataset import make_chunks, make_dataset, make_training_stream, split_ids
from textgen.errors import CorpusError


def test_every_target_is_the_next_input():
    ids = np.arange(1000, dtype=np.int32)
    seen = 0
    for inputs, targets in make_dataset(ids, seq_length=10, batch_size=8, shuffle=True, seed=1):
        inputs, targets = inputs.numpy(), targets.numpy()
        assert inputs.shape == targets.shape == (8, 10)
        assert np.array_equal(targets[:, :-1], inputs[:, 1:])
        assert np.array_equal(targets, inputs + 1)  # ids are consecutive, so the shift is +1
        seen += len(inputs)
    assert seen == 96  # 99 windows of 11 tokens, 12 full batches of 8


def test_chunks_share_one_token_and_cover_the_text():
    ids = np.arange(23, dtype=np.int32)
    chunks = make_chunks(ids, 5)
    assert chunks.shape == (4, 6)
    assert np.array_equal(chunks[1], np.arange(5, 11))
    assert all(chunks[i, -1] == chunks[i + 1, 0] for i in range(3))


def test_contiguous_validation_tail():
    ids = np.arange(1000)
    train, val = split_ids(ids, 0.1, 10)
    assert np.array_equal(train, np.arange(900)) and np.array_equal(val, np.arange(900, 1000))


def test_short_corpus_is_an_error():
    with pytest.raises(CorpusError, match="fewer than seq_length \\+ 1 = 101"):
        split_ids(np.arange(50), 0.1, 100)


def test_tiny_corpus_still_gives_a_partial_batch():
    batches = list(make_dataset(np.arange(50, dtype=np.int32), 10, 64, shuffle=False))
    assert len(batches) == 1 and batches[0][0].shape == (4, 10)


def test_pipelines_run_without_the_autotuner():
    # Freeing an autotuned iterator waits on the autotuner's thread, which Keras does before every
    # validation; both pipelines also skip tf.data's rewrites, which would copy the corpus.
    ids = np.arange(1000, dtype=np.int32)
    for ds in (make_dataset(ids, 10, 8, shuffle=False).repeat(), make_training_stream(ids, 10, 8, seed=1)):
        options = ds.options()
        assert options.autotune.enabled is False
        assert options.experimental_optimization.apply_default_optimizations is False
        inputs, targets = next(iter(ds))
        assert inputs.shape == (8, 10) and np.array_equal(targets, inputs + 1)
