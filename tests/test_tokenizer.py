import numpy as np
import pytest

from conftest import corpus_files
from textgen.config import TokenizerConfig
from textgen.data.corpus import stream_corpus
from textgen.errors import UsageError
from textgen.data.tokenizer import CharTokenizer, fit_tokenizer_stream, tokenizer_from_config


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_char_round_trip_on_every_bundled_corpus(path):
    text = "".join(stream_corpus([str(path)]))
    tokenizer = fit_tokenizer_stream([text], TokenizerConfig(level="char"))
    ids = tokenizer.encode(text)
    assert ids.dtype == np.int32 and len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    assert ids.max() == tokenizer.vocab_size - 1


def test_vocabulary_is_sorted_unique_code_points():
    tokenizer = CharTokenizer.fit("hello, wörld! 🙂")
    assert tokenizer.vocabulary == sorted(set("hello, wörld! 🙂"))
    assert tokenizer.decode(tokenizer.encode("wörld 🙂")) == "wörld 🙂"


def test_unknown_characters_are_named():
    tokenizer = CharTokenizer.fit("abc ")
    with pytest.raises(UsageError, match=r"characters 'x', 'Z' are not in the model's vocabulary"):
        tokenizer.encode("a xZ")
    assert tokenizer.unknown_tokens("axbxZ") == ["x", "Z"]
    assert tokenizer.lookup("a\U0001f642xb").tolist() == [1, -1, -1, 2]  # -1: not in the vocabulary
    with pytest.raises(UsageError, match=r"characters 'd', 'e', .* 'm' and 3 more are not"):
        tokenizer.encode("defghijklmnop")  # the first ten named, the rest counted


def test_config_round_trip():
    tokenizer = CharTokenizer.fit("the quick brown fox")
    again = tokenizer_from_config(tokenizer.get_config())
    assert again.get_config() == tokenizer.get_config()
    assert np.array_equal(again.encode("fox"), tokenizer.encode("fox"))


def test_incremental_decoder_tracks_token_ends():
    tokenizer = CharTokenizer.fit("abcdef")
    decoder = tokenizer.decoder()
    assert decoder.push(tokenizer.encode("abc")) == "abc"
    assert decoder.push(tokenizer.encode("de")) == "de"
    assert decoder.chars_for_tokens(4) == 4 and decoder.chars_for_tokens(0) == 0


def test_char_vocabulary_and_ids_from_a_stream_match_the_whole_text():
    text = "Stra\u00dfe, caf\u00e9 \u00ab\u00a0oui\u00a0\u00bb \U0001f642 and ASCII"
    blocks = [text[:3], text[3:4], "", text[4:20], text[20:]]
    streamed = fit_tokenizer_stream(iter(blocks), TokenizerConfig(level="char"))
    whole = CharTokenizer.fit(text)
    assert streamed.vocabulary == whole.vocabulary
    assert np.array_equal(np.concatenate(list(whole.encode_stream(blocks))), whole.encode(text))
