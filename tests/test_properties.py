"""Property tests: invariants that must hold for any input, not just the examples we thought of."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from textgen.corpus import decode
from textgen.dataset import make_chunks, make_dataset
from textgen.tokenizer import CharTokenizer, tokenizer_from_config

# Any Unicode text except lone surrogates (which cannot be stored in a UTF-8 file).
unicode_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300)


@settings(max_examples=200, deadline=None)
@given(unicode_text)
def test_char_round_trip_for_any_unicode(text):
    tokenizer = CharTokenizer.fit(text)
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    again = tokenizer_from_config(tokenizer.get_config())
    assert again.decode(again.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(unicode_text)
def test_decoding_utf8_file_bytes_keeps_every_character(text):
    """What the corpus loader reads back from a UTF-8 file is the text, up to line-end normalisation."""
    expected = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    assert decode(text.encode("utf-8"), "utf-8") == expected


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=2, max_value=400), st.integers(min_value=1, max_value=40),
       st.integers(min_value=1, max_value=16))
def test_every_target_is_the_next_input(length, seq_length, batch_size):
    ids = np.arange(length, dtype=np.int32)
    if length < seq_length + 1:
        assert make_chunks(ids, seq_length).shape[0] == 0
        return
    total = 0
    for inputs, targets in make_dataset(ids, seq_length, batch_size, shuffle=True, seed=3):
        inputs, targets = inputs.numpy(), targets.numpy()
        assert inputs.shape[1] == seq_length
        assert np.array_equal(targets, inputs + 1)  # consecutive ids: the target is the next input
        assert np.array_equal(inputs[:, 1:], targets[:, :-1])
        total += len(inputs)
    windows = (length - 1) // seq_length
    assert total == (windows if windows < batch_size else windows - windows % batch_size)
