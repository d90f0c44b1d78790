"""textgen.data.unknown: the one owner of the unknown-token policy and of how unknown tokens are named."""

import numpy as np
import pytest

from textgen.config import TokenizerConfig
from textgen.data.tokenizer import CharTokenizer, WordTokenizer
from textgen.data.unknown import UnknownTokens, encode_known, handled, lacking, name_tokens
from textgen.errors import UsageError

CHARS = CharTokenizer(sorted(set("abc \n")))
WORDS = WordTokenizer.fit("the cat sat on the mat\n", TokenizerConfig(level="word"))


def test_names_show_the_first_ten_and_count_the_rest():
    assert name_tokens(["é"]) == "'é'"
    assert name_tokens(list("abcdefghijklm")) == "'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j' and 3 more"
    assert name_tokens(list("abcdefghij")) == "'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'"
    assert lacking(1, ["zebra"], "word") == "the text has 1 word the model's vocabulary lacks (1 distinct: 'zebra')"
    assert lacking(2_000, ["é", "ñ"], "character").startswith("the text has 2,000 characters")
    assert handled(40, ["é", "ñ"], "drop") == ("40 tokens of the corpus are not in the model's vocabulary and were "
                                               "left out: 'é', 'ñ'")
    assert handled(3, ["zebra"], "unk").endswith("were mapped to <unk>: 'zebra'")


def test_an_error_counts_every_unknown_character_of_the_text_before_it_is_raised():
    policy = UnknownTokens(CHARS, "error", hint="; try again")
    blocks = ["abc ñ\n", "cab\n", "Café señor\n"]
    with pytest.raises(UsageError) as raised:
        list(policy.encode(blocks))
    assert str(raised.value) == ("the text has 9 characters the model's vocabulary lacks "
                                 "(8 distinct: 'ñ', 'C', 'f', 'é', 's', 'e', 'o', 'r'); try again")


def test_fail_fast_stops_at_the_first_block_with_an_unknown_character():
    policy = UnknownTokens(CHARS, "error", fail_fast=True)
    encoded = policy.encode(["abc\n", "ab§\n", "never read\n"])
    assert np.array_equal(next(encoded), CHARS.encode("abc\n"))
    with pytest.raises(UsageError, match=r"1 character .* \(1 distinct: '§'\)"):
        next(encoded)
    assert policy.count == 1


def test_character_models_drop_unknown_characters_or_refuse_unk():
    ids, count, tokens = encode_known(CHARS, "a§b¶¶c", "drop")
    assert CHARS.decode(ids) == "abc" and count == 3 and tokens == ["§", "¶"]
    with pytest.raises(UsageError, match="character models have no unknown token"):
        encode_known(CHARS, "a§b", "unk")
    assert np.array_equal(encode_known(CHARS, "abc", "error")[0], CHARS.encode("abc"))  # nothing unknown: no error


def test_word_models_keep_unknown_words_as_unk_drop_them_or_refuse_them():
    text = "the zebra sat on the gnu\n"
    kept, count, tokens = encode_known(WORDS, text, "unk")
    assert count == 2 and tokens == ["zebra", "gnu"] and int(np.sum(kept == WORDS.unk_id)) == 2
    dropped, _, _ = encode_known(WORDS, text, "drop")
    assert len(dropped) == len(kept) - 2 and WORDS.unk_id not in dropped
    with pytest.raises(UsageError, match=r"2 words the model's vocabulary lacks \(2 distinct: 'zebra', 'gnu'\)"):
        encode_known(WORDS, text, "error")


def test_unknown_words_are_named_across_blocks_and_counted_once_each_time():
    policy = UnknownTokens(WORDS, "unk")
    ids = np.concatenate(list(policy.encode(["the zebra\n", "sat\n", "the gnu and the zebra\n"])))
    assert policy.count == 4 and policy.tokens == ["zebra", "gnu", "and"]
    assert np.array_equal(ids, WORDS.encode("the zebra\nsat\nthe gnu and the zebra\n"))


def test_a_policy_must_be_one_of_the_three():
    with pytest.raises(ValueError, match="must be one of error, unk, drop"):
        UnknownTokens(CHARS, "skip")
