"""The word tokenizer: tokens, natural detokenization, vocabulary limits, Unicode."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import textgen.data.tokenizer.spacing as spacing_module
from conftest import CORPORA, corpus_files
from textgen.config import TokenizerConfig, load_config
from textgen.data.corpus import stream_corpus
from textgen.errors import UsageError
from textgen.data.tokenizer import (NOSPACE, SPACE, SPECIAL_TOKENS, UNK, CharTokenizer, WordTokenizer,
                                    fit_tokenizer_stream, normalize_whitespace, tokenizer_from_config)
from textgen.data.tokenizer.spacing import pattern_problem


def read(path):
    return "".join(stream_corpus([str(path)]))


def word_fit(text, **options):
    return fit_tokenizer_stream([text], TokenizerConfig(level="word", **options))


def markers(tokenizer, ids):
    return int(np.isin(ids, [tokenizer.vocabulary.index(SPACE), tokenizer.vocabulary.index(NOSPACE)]).sum())


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_word_round_trip_on_every_bundled_corpus(path):
    text = read(path)
    tokenizer = word_fit(text)
    ids = tokenizer.encode(text)
    assert ids.dtype == np.int32
    assert tokenizer.decode(ids) == normalize_whitespace(text)
    assert tokenizer.unk_id not in ids  # every token of the corpus is in its own full vocabulary
    assert markers(tokenizer, ids) < 0.01 * len(ids)  # the spacing rules fit real prose


def test_lowercase_round_trip_folds_case_only():
    text = read(CORPORA / "moby_dick_four_chapters.txt")
    tokenizer = word_fit(text, lowercase=True)
    assert "Ishmael" not in tokenizer.vocabulary and "ishmael" in tokenizer.vocabulary
    assert tokenizer.decode(tokenizer.encode(text)) == normalize_whitespace(text).lower()
    assert tokenizer.tokenize("Call ME") == ["call", "me"]


def test_normalisation_rule():
    assert normalize_whitespace("  Call \t me  \n\t Ishmael.  Some  years\n") == "Call me\nIshmael. Some years\n"
    assert normalize_whitespace("a\u00a0 \u00a0b\u2003c") == "a\u00a0 \u00a0b c"  # no-break spaces are text
    assert normalize_whitespace("x\n\n\ny") == "x\n\n\ny"  # blank lines survive


def test_irregular_spacing_round_trips_through_markers():
    text = "Hello ,world ( x ) said--  he . Then \"quoted \" twice—and — once"
    tokenizer = word_fit(text)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == normalize_whitespace(text)
    assert markers(tokenizer, ids) >= 6
    assert SPACE not in tokenizer.decode(ids) and NOSPACE not in tokenizer.decode(ids)


PIECES = ["a", "Bb", "don't", "3.14", "1,000", ",", ".", "...", "!", '"', "'", "_", "\u00ab", "\u00bb",
          "\u201c", "\u201d", "(", ")", "-", "--", "\u2014", "$", "%", "\u00e4", " ", "  ", "\t", "\n", "\n\n",
          "\u00a0", "\u2009"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.integers(0, 40))
def test_any_text_round_trips_and_decodes_the_same_in_pieces(pieces, cut):
    text = "".join(pieces)
    tokenizer = word_fit(text + " x")  # never an empty corpus
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == normalize_whitespace(text)
    cut = min(cut, len(ids))
    decoder = tokenizer.decoder(ids[:cut])
    assert tokenizer.decode(ids[:cut]) + decoder.push(ids[cut:]) == tokenizer.decode(ids)


def test_encoding_in_blocks_matches_encoding_whole(monkeypatch):
    text = read(CORPORA / "moby_dick_four_chapters.txt")[:20_000] + "x" * 1000 + "\ny, z"
    tokenizer = word_fit(text)
    whole = tokenizer.encode(text)
    monkeypatch.setattr(spacing_module, "BLOCK_CHARS", 300)
    assert np.array_equal(tokenizer.encode(text), whole)  # includes a line longer than a block
    cuts = [0, 5, 6, 777, 778, 2500, 9000, 20_500, len(text)]  # mid-word, mid-line, anywhere
    blocks = [text[a:b] for a, b in zip(cuts, cuts[1:])]
    assert np.array_equal(np.concatenate(list(tokenizer.encode_stream(blocks))), whole)
    again = fit_tokenizer_stream(iter(blocks), TokenizerConfig(level="word"))
    assert again.vocabulary == tokenizer.vocabulary


# ---------------------------------------------------------------- natural detokenization


@pytest.mark.parametrize("text", [
    'He said, "Don\'t go." She left.',
    "The whale's tail--and then... nothing.",
    "Pi is 3.14 and a grand is 1,000 (roughly) [sic].",
    "Wait... what?! Yes; no: maybe.",
    "There\u2014for with your leave\u2014there snow.",
    "a well-known sea-port, 1845-1846",
    "\u201cCurly,\u201d she said, \u2018quite\u2019 sailors\u2019 hats.",
    "It cost $5, or 10% (about \u00a34).",
    "the _Pharaon_, venant de Smyrne",
    '"One," she said. "Two."\n\n"Three" and "four"',
    "Line one,\nline two.\n\nNew paragraph.",
])
def test_rules_alone_give_natural_text(text):
    tokenizer = word_fit(text)
    ids = tokenizer.encode(text)
    assert markers(tokenizer, ids) == 0  # the rules, not the markers, produced the spacing
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("tokens, text", [
    (["He", "said", ",", '"', "Don't", "go", ".", '"', "She", "left", "."], 'He said, "Don\'t go." She left.'),
    (["ago", "--", "never", "mind", "..."], "ago--never mind..."),
    (["pi", "=", "3.14", ",", "not", "1,000", "!"], "pi = 3.14, not 1,000!"),
    (["(", "a", "[", "b", "]", ")", "c"], "(a [b]) c"),
    (["the", "whale's", "jaw", "\n", "next"], "the whale's jaw\nnext"),
])
def test_detokenize_hand_made_tokens(tokens, text):
    tokenizer = WordTokenizer([*SPECIAL_TOKENS, *dict.fromkeys(tokens)])
    assert tokenizer.detokenize(tokens) == text


def test_tokens_keep_contractions_numbers_and_dashes_whole():
    text = "Don't stop--3.14, 1,000... whale\u2019s"
    assert word_fit(text).tokenize(text) == ["Don't", "stop", "--", "3.14", ",", "1,000", "...", "whale\u2019s"]


def test_quote_parity_resets_at_a_blank_line():
    text = '"An unclosed quote opens a paragraph.\n\n"The next one opens again," she said.'
    tokenizer = word_fit(text)
    ids = tokenizer.encode(text)
    assert markers(tokenizer, ids) == 0 and tokenizer.decode(ids) == text


# ---------------------------------------------------------------- vocabulary


def test_vocabulary_order_and_min_count():
    tokenizer = word_fit("b a b a c . d d d", min_count=2)
    assert tokenizer.vocabulary == [*SPECIAL_TOKENS, "d", "a", "b"]  # by count, then by token
    ids = tokenizer.encode("a c d")
    assert ids.tolist() == [4, tokenizer.unk_id, 3]
    assert tokenizer.decode(ids) == "a <unk> d"
    assert tokenizer.unknown_tokens("a c . e c") == ["c", ".", "e"]


def test_max_vocab_counts_every_token():
    tokenizer = word_fit("the the the cat cat sat", max_vocab=5)
    assert tokenizer.vocab_size == 5 and tokenizer.vocabulary[3:] == ["the", "cat"]
    assert tokenizer.encode("sat")[0] == tokenizer.unk_id
    with pytest.raises(UsageError, match="max_vocab must be more than 3"):
        word_fit("a b", max_vocab=3)
    with pytest.raises(UsageError, match="tokenizer.max_vocab must be more than 3"):  # the config says so first
        load_config(None, ["tokenizer.level=word", "tokenizer.max_vocab=3"])


def test_unknown_seed_words_are_read_as_unk_and_named():
    tokenizer = word_fit("Call me Ishmael.")
    ids, unknown = tokenizer.encode_lenient("Call me Zarathustra, Ishmael")
    assert unknown == ["Zarathustra", ","]
    # the unknown comma reads as <unk>, spaced like a word, so a marker keeps it glued
    tokens = ["Call", "me", UNK, NOSPACE, UNK, "Ishmael"]
    assert ids.tolist() == [tokenizer.vocabulary.index(t) for t in tokens]
    assert tokenizer.decode(ids) == "Call me <unk><unk> Ishmael"


def test_config_round_trip_is_json_and_keeps_options():
    tokenizer = word_fit("Some Words, some words.", lowercase=True, min_count=2, max_vocab=10)
    config = json.loads(json.dumps(tokenizer.get_config()))
    again = tokenizer_from_config(config)
    assert isinstance(again, WordTokenizer) and again.get_config() == tokenizer.get_config()
    assert config["level"] == "word" and config["lowercase"] is True and config["min_count"] == 2
    assert np.array_equal(again.encode("SOME words"), tokenizer.encode("some words"))


def test_broken_vocabulary_is_refused():
    with pytest.raises(ValueError, match="<unk>"):
        WordTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        WordTokenizer([*SPECIAL_TOKENS, "a", "a"])


# ---------------------------------------------------------------- custom patterns


def test_pattern_defines_tokens_and_never_loses_text():
    text = "caf\u00e9 au lait, 3.14"
    tokenizer = word_fit(text, pattern=r"[A-Za-z]+")
    tokens = tokenizer.tokenize(text)
    assert [t for t in tokens if t not in SPECIAL_TOKENS] == ["caf", "\u00e9", "au", "lait", ",", "3", ".", "1", "4"]
    assert tokens.count(NOSPACE) == 3  # caf|\u00e9, .|1 and 1|4 are glued by markers, not by the rules
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_pattern_for_a_script_without_spaces():
    text = "\u6211\u7231\u732b\u3002\u732b\u7231\u6211\uff01\n\u6211\u3002"
    tokenizer = word_fit(text, pattern=r"[\u4e00-\u9fff]")
    assert tokenizer.vocab_size == len(SPECIAL_TOKENS) + 6  # 3 ideographs, 2 punctuation marks, a newline
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and markers(tokenizer, ids) == 0  # ideographs join by rule


def test_elision_tokens_from_a_pattern_join_the_next_word():
    text = "l'homme qu'il aime, sailors' hats"
    tokenizer = word_fit(text, pattern=r"\w+'|\w+")
    assert tokenizer.tokenize(text)[:4] == ["l'", "homme", "qu'", "il"]
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.tokenize(text).count(SPACE) == 1  # only the possessive needs a marker


@pytest.mark.parametrize("pattern, message", [("[a-", "not a valid regular expression"),
                                              (r"\w*", "matches the empty string")])
def test_bad_patterns_are_usage_errors(pattern, message):
    with pytest.raises(UsageError, match=message):
        word_fit("some text", pattern=pattern)


def test_one_pattern_rule_for_configs_tokenizers_and_saved_files():
    assert pattern_problem(r"\w+|[^\w\s]") is None
    grouped = r"(\w+)('\w+)?"
    what, fix = pattern_problem(grouped)
    assert what == f"has 2 capture groups ({grouped!r})" and "(?:...)" in fix
    assert pattern_problem(r"\w*")[0] == "matches the empty string"
    assert pattern_problem("[a-")[0].startswith("is not a valid regular expression")
    vocabulary = [*SPECIAL_TOKENS, "a"]
    with pytest.raises(UsageError, match=r"tokenizer.pattern has 1 capture group \('\(a\)'\); a token is"):
        WordTokenizer(vocabulary, pattern="(a)")
    with pytest.raises(ValueError, match=r"the tokenizer pattern has 1 capture group \('\(a\)'\)$"):
        tokenizer_from_config({"level": "word", "vocabulary": vocabulary, "pattern": "(a)"})


# ---------------------------------------------------------------- incremental decoding


def test_decoder_in_chunks_matches_decoding_whole():
    text = read(CORPORA / "die_verwandlung_de.txt")[:8000] + 'x ,y "q" \u00bbz\u00ab'
    tokenizer = word_fit(text)
    ids = tokenizer.encode(text)
    context, rest = ids[:57], ids[57:]
    decoder = tokenizer.decoder(context)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(rest)), size=40, replace=False))
    pieces = [decoder.push(chunk) for chunk in np.split(rest, cuts)]
    whole, head = tokenizer.decode(ids), tokenizer.decode(context)
    assert head + "".join(pieces) == whole
    for n in (1, 2, 100, len(rest)):
        assert decoder.chars_for_tokens(n) == len(tokenizer.decode(ids[:57 + n])) - len(head)


def test_decoder_spaces_the_first_word_against_the_seed():
    tokenizer = word_fit('Call me Ishmael. He said "so" it\n')
    encode = tokenizer.encode
    assert tokenizer.decoder(encode("Call me")).push(encode("Ishmael.")) == " Ishmael."
    assert tokenizer.decoder(encode("Call me\n")).push(encode("Ishmael")) == "Ishmael"
    quote_it = [tokenizer.vocabulary.index('"'), tokenizer.vocabulary.index("it")]
    assert tokenizer.decoder(encode('He said "so')).push(quote_it) == '" it'  # the seed's quote closes
    assert tokenizer.decoder(encode("He said so")).push(quote_it) == ' "it'  # a new quote opens
    assert tokenizer.decoder().push(encode("Call")) == "Call"


def test_a_seed_ending_in_whitespace_gets_no_second_space():
    tokenizer = word_fit("Call me Ishmael. Some years ago\n")
    encode = tokenizer.encode
    for seed in ("Call me ", "Call me\t", "Call me  "):
        decoder = tokenizer.decoder(encode(seed), seed)
        assert decoder.push(encode("Ishmael.")) + decoder.push(encode("Some")) == "Ishmael. Some"
        assert decoder.chars_for_tokens(2) == len("Ishmael.")
    assert tokenizer.decoder(encode("Call me"), "Call me").push(encode("Ishmael.")) == " Ishmael."


# ---------------------------------------------------------------- Unicode


def test_german_round_trips_at_both_levels():
    text = read(CORPORA / "die_verwandlung_de.txt")
    assert all(c in text for c in "\u00e4\u00f6\u00fc\u00df\u00bb\u00ab\u00a0")
    words = word_fit(text)
    assert words.decode(words.encode(text)) == normalize_whitespace(text)
    assert {"Gregor", "Ungeziefer", "über", "\u00a0", "\u00bb", "\u00ab"} <= set(words.vocabulary)
    chars = CharTokenizer.fit(text)
    ids = chars.encode(text)
    assert len(ids) == len(text) and chars.decode(ids) == text  # one token per code point, none dropped
    assert "\u00a0" in chars.vocabulary and "\u00df" in chars.vocabulary


def test_french_guillemets_accents_and_decomposed_accents():
    text = "\u00abAh! c'est vous, Dant\u00e8s!\u00bb dit-il.\n\u00ab\u00a0\u00c9t\u00e9\u00a0\u00bb, cafe\u0301."
    tokenizer = word_fit(text)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and markers(tokenizer, ids) == 0
    assert {"c'est", "Dant\u00e8s", "\u00c9t\u00e9", "cafe\u0301"} <= set(tokenizer.vocabulary)
    chars = CharTokenizer.fit(text)
    assert chars.decode(chars.encode(text)) == text and "\u0301" in chars.vocabulary
