"""Property tests: invariants that must hold for any input, not just the examples we thought of."""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from textgen.data.corpus import stream_corpus
from textgen.data.dataset import make_chunks, make_dataset
from textgen.data.tokenizer import CharTokenizer, tokenizer_from_config

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
@given(unicode_text.filter(lambda t: "\x00" not in t))  # a NUL byte marks a binary file, which is refused
def test_reading_utf8_file_bytes_keeps_every_character(text):
    """What the corpus reader reads back from a UTF-8 file is the text, up to line-end normalisation."""
    expected = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "text.txt"
        path.write_bytes(text.encode("utf-8"))
        read = "".join(stream_corpus([str(path)], strip_gutenberg=False, final_newline=False))
    assert read == expected


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


# ---------------------------------------------------------------- word level

from textgen.config import TokenizerConfig  # noqa: E402
from textgen.data.dataset import make_training_stream  # noqa: E402
from textgen.data.tokenizer import NOSPACE, SPACE, UNK, fit_tokenizer_stream, normalize_whitespace  # noqa: E402

# Words of any script (letters, marks, digits), punctuation of many kinds, every sort of space.
words = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd", "Mn")), min_size=1, max_size=8)
punctuation = st.sampled_from(list(",.;:!?\"'()[]{}-\u2014\u2013\u2026\u00ab\u00bb\u201c\u201d\u2018\u2019/&%$#*@")
                              + ["...", "--", "?!"])
spaces = st.sampled_from([" ", "  ", "\t", "\n", "\n\n", " \n ", "\u00a0", "\u2009", "\u3000", "\r\n"])
word_text = st.lists(st.one_of(words, punctuation, spaces), min_size=1, max_size=60).map("".join)


def word_tokenizer_for(text: str, **options):
    return fit_tokenizer_stream([text + " x"], TokenizerConfig(level="word", **options))  # never an empty corpus


@settings(max_examples=300, deadline=None)
@given(word_text)
def test_word_decode_of_encode_is_the_normalised_text(text):
    text = text.replace("\r\n", "\n")  # the corpus loader has already turned CRLF into LF
    tokenizer = word_tokenizer_for(text)
    ids = tokenizer.encode(text)
    assert tokenizer.unk_id not in ids  # a vocabulary fitted on the text knows all its words
    assert tokenizer.decode(ids) == normalize_whitespace(text)


@settings(max_examples=200, deadline=None)
@given(word_text)
def test_word_encoding_is_stable_under_a_round_trip(text):
    """Decoded text encodes to the same ids again, and normalising twice changes nothing."""
    text = text.replace("\r\n", "\n")
    tokenizer = word_tokenizer_for(text)
    ids = tokenizer.encode(text)
    once = normalize_whitespace(text)
    assert normalize_whitespace(once) == once
    assert np.array_equal(tokenizer.encode(tokenizer.decode(ids)), ids)


@settings(max_examples=200, deadline=None)
@given(word_text, st.lists(st.integers(0, 200), max_size=5))
def test_word_decoding_in_any_pieces_matches_decoding_whole(text, cuts):
    """What streaming generation prints piece by piece is what decoding all at once gives."""
    text = text.replace("\r\n", "\n")
    tokenizer = word_tokenizer_for(text)
    ids = tokenizer.encode(text)
    bounds = sorted({min(c, len(ids)) for c in cuts} | {0, len(ids)})
    decoder = tokenizer.decoder()
    assert "".join(decoder.push(ids[a:b]) for a, b in zip(bounds, bounds[1:])) == tokenizer.decode(ids)


@settings(max_examples=150, deadline=None)
@given(word_text, st.integers(4, 8))
def test_word_vocabulary_limit_only_turns_words_into_unk(text, max_vocab):
    """With a capped vocabulary, every id is in range and the known words survive in order."""
    text = text.replace("\r\n", "\n")
    tokenizer = word_tokenizer_for(text, max_vocab=max_vocab)
    ids = tokenizer.encode(text)
    assert ids.dtype == np.int32 and (len(ids) == 0 or (0 <= ids.min() and ids.max() < tokenizer.vocab_size))
    full = word_tokenizer_for(text)  # a full vocabulary knows every word
    words_in_text = [t for t in full.tokenize(text) if t not in (SPACE, NOSPACE)]
    expected = [t if t in tokenizer.vocabulary else UNK for t in words_in_text]
    decoded = [tokenizer.vocabulary[i] for i in ids if tokenizer.vocabulary[i] not in (SPACE, NOSPACE)]
    assert decoded == expected  # known words kept in order, each unknown one exactly one <unk>


@settings(max_examples=100, deadline=None)
@given(unicode_text, st.lists(st.integers(0, 300), max_size=6))
def test_char_encoding_in_blocks_matches_encoding_whole(text, cuts):
    tokenizer = CharTokenizer.fit(text)
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    blocks = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    pieces = list(tokenizer.encode_stream(blocks))
    joined = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    assert np.array_equal(joined, tokenizer.encode(text))


# ---------------------------------------------------------------- training stream


@settings(max_examples=40, deadline=None)
@given(st.integers(40, 300), st.integers(2, 12), st.integers(1, 6), st.integers(0, 25), st.integers(0, 1000),
       st.booleans())
def test_a_stream_restarted_at_any_step_gives_the_same_batches(length, seq_length, batch_size, start, seed, shift):
    """What --resume relies on: the batch at step g is the same whether or not the run restarted."""
    ids = np.arange(length, dtype=np.int32)
    if (length - 1) // seq_length < 1:
        return
    straight = [(x.numpy(), y.numpy()) for x, y in make_training_stream(ids, seq_length, batch_size, seed=seed,
                                                                          shift_windows=shift).take(start + 4)]
    resumed = [(x.numpy(), y.numpy()) for x, y in make_training_stream(ids, seq_length, batch_size, seed=seed,
                                                                         shift_windows=shift, start_step=start).take(4)]
    for (x1, y1), (x2, y2) in zip(straight[start:], resumed):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
        assert np.array_equal(y2, x2 + 1)  # every target is the next input
        assert np.array_equal(x2, x2[:, :1] + np.arange(seq_length)) and y2.max() < length  # whole windows
