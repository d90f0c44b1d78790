"""Decoding held to the source's letters (`model.same_letters`): the rule, the engine against the plain
reference decoder, every decoding method, word models, separate vocabularies, the file, the exported
graph, and the command line."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from textgen.cli.main import cli
from textgen.config import ModelConfig, ignored_settings
from textgen.config.coerce import config_from_dict
from textgen.data.pairs import END, RESERVED, START
from textgen.data.tokenizer import SPECIAL_TOKENS, WordTokenizer
from textgen.export.seq2seq_export import Seq2SeqModule
from textgen.generation.constraints import TAIL_TOKENS, token_key, vocabulary_keys
from textgen.generation.seq2seq import Translator, pad_rows, reference_greedy
from textgen.models.builder import build_model
from textgen.models.info import model_facts
from textgen.models.seq2seq import build_seq2seq
from textgen.saving import save_model_atomic

CHARS = sorted(" !',.ABCDabcd")
TOKENIZER = {"level": "char", "vocabulary": CHARS}
CARD = {"config": {"model": {"same_letters": True}, "training": {"seq_length": 40}}}
# Longer than any training pair, so the plain decoder drifts from them.
SOURCES = ["abc", "dcba dd", "a", "bad cab", "cc'd ab", "abcd dcba abcd dcba bad", "dd dd dd dd cab"]


def letters(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def restore_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Toy restoration: 1-4 words of a-d; the target capitalised, with commas and a closing mark."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        words = ["".join(rng.choice(list("abcd"), rng.integers(1, 5))) for _ in range(rng.integers(1, 5))]
        target = " ".join(word + ("," if rng.random() < 0.3 else "") for word in words).rstrip(",")
        target = target[0].upper() + target[1:] + rng.choice([".", "!"])
        pairs.append((" ".join(words), target))
    return pairs


def _ids(text: str) -> list[int]:
    return [CHARS.index(c) + RESERVED for c in text]


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """A tiny GRU encoder-decoder trained 36 steps on the toy restoration: it writes letters,
    punctuation and END, but not yet always the source's letters."""
    config = ModelConfig(type="seq2seq", cell="gru", units=24, embedding_dim=8, bidirectional=True,
                         attention_type="multiplicative", same_letters=True)
    keras.utils.set_random_seed(3)
    model = build_seq2seq(config, TOKENIZER, TOKENIZER, model_card=CARD)
    pairs = restore_pairs(768)
    source = pad_rows([_ids(s) for s, _ in pairs])
    target_in = pad_rows([[START, *_ids(t)] for _, t in pairs])
    target_out = pad_rows([[*_ids(t), END] for _, t in pairs])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    model.compile(keras.optimizers.Adam(0.02), loss, jit_compile=False)
    model.fit([source, target_in], target_out, batch_size=64, epochs=3, verbose=0)
    return model


def test_a_tokens_key_is_its_letters_and_digits_lower_cased_and_a_word_models_marks_have_none():
    assert [token_key(t) for t in ("Mr.", ",", "Bingley's", "É", "1833", "’")] == \
        ["mr", "", "bingleys", "é", "1833", ""]
    tokenizer = WordTokenizer.fit("The cat, the Cat.")
    assert dict(zip(tokenizer.vocabulary, vocabulary_keys(tokenizer))) == {
        "<unk>": "", "<space>": "", "<nospace>": "", ",": "", ".": "", "Cat": "cat", "The": "the", "cat": "cat",
        "the": "the"}


def test_greedy_equals_the_plain_reference_decoder_that_applies_the_rule_to_strings(model):
    sources = SOURCES[:5]  # the reference re-runs the whole model for every token
    engine = Translator(model).translate_ids(sources)  # the rule from the model's card
    reference = reference_greedy(model, sources)
    assert [row.tolist() for row in engine] == [row.tolist() for row in reference]
    texts = Translator(model).translate(sources)
    assert any(set(text) & set(",.!") for text in texts) and any(c.isupper() for c in "".join(texts))


@pytest.mark.parametrize("method", ["greedy", "sample", "beam"])
def test_every_method_writes_the_sources_letters_in_order_and_the_plain_decoder_does_not(model, method):
    """An output the length limit cut holds the first of its source's letters; one that ended, all."""
    options = {"temperature": 1.5, "random_seed": 7} if method == "sample" else {}
    translator = Translator(model)
    rows = translator.translate_ids(SOURCES, method=method, beam_width=3, **options)
    limits = translator.length_limits(translator.encode_sources(SOURCES), None)
    ended = 0
    for source, row, limit in zip(SOURCES, rows, limits):
        written = letters(translator.detokenize(row))
        if len(row) < limit:
            assert written == letters(source)
            ended += 1
        else:
            assert letters(source).startswith(written)
    assert ended >= len(SOURCES) - 2
    free = Translator(model, same_letters=False).translate(SOURCES, method=method, beam_width=3, **options)
    assert [letters(text) for text in free] != [letters(source) for source in SOURCES]


def test_without_free_tokens_the_output_is_the_sources_writable_letters():
    """Separate vocabularies: the target has letters only, so the rule leaves one choice a step,
    whatever the weights; the source's "z" and spaces no target token can write are skipped."""
    source_tokenizer = {"level": "char", "vocabulary": sorted(" abcdz")}
    target_tokenizer = {"level": "char", "vocabulary": list("abcd")}
    config = ModelConfig(type="seq2seq", cell="lstm", units=8, embedding_dim=4, attention_type="additive")
    keras.utils.set_random_seed(0)
    untrained = build_seq2seq(config, source_tokenizer, target_tokenizer)
    sources = ["abz dc", "zzz", "d", ""]
    translator = Translator(untrained, same_letters=True)
    for method in ("greedy", "sample", "beam"):
        assert translator.translate(sources, method=method, random_seed=1) == ["abdc", "", "d", ""]
    assert Translator(untrained).letters is None  # the card does not ask for the rule


@pytest.mark.parametrize("method", ["sample", "beam"])
def test_after_the_last_letter_a_few_closing_marks_then_the_end(method):
    """An untrained decoder, biased to write letters while it may and never END, would write marks
    to the length limit once the source's letters are written: the rule stops it after
    TAIL_TOKENS of them."""
    keras.utils.set_random_seed(4)
    untrained = build_seq2seq(ModelConfig(type="seq2seq", cell="gru", units=8, embedding_dim=4), TOKENIZER,
                              TOKENIZER, model_card=CARD)
    dense = untrained.get_layer("logits")
    kernel, bias = dense.get_weights()
    bias[END] = -30.0  # no END while anything else is allowed
    bias[[i + RESERVED for i, ch in enumerate(CHARS) if ch.isalpha()]] += 5.0  # a letter whenever one is allowed
    dense.set_weights([kernel, bias])
    translator = Translator(untrained)
    sources = ["ab", "dcba dd", "", "c"]
    rows = translator.translate_ids(sources, method=method, beam_width=3, temperature=3.0, random_seed=2,
                                    max_length=40)
    for source, row in zip(sources, rows):
        text = translator.detokenize(row)
        assert letters(text) == letters(source)
        tail = len(text) - len(text.rstrip(" !',."))  # after the last letter, or all of it with no letters
        assert tail == TAIL_TOKENS, (source, text)  # ended by the rule, not by the 40-token limit
    free = Translator(untrained, same_letters=False).translate_ids(sources, method=method, beam_width=3,
                                                                   temperature=3.0, random_seed=2, max_length=40)
    assert all(len(row) == 40 for row in free)  # without the rule: no END before the limit


def test_a_word_model_writes_the_sources_words_in_any_case_with_free_punctuation():
    """Sampled hot from an untrained model: every allowed token comes up, and every row ends."""
    tokenizer = {"level": "word", "vocabulary": [*SPECIAL_TOKENS, "!", ",", ".", "A", "Cat", "The", "a", "cat",
                                                 "dog", "sat", "the"]}
    keras.utils.set_random_seed(5)
    untrained = build_seq2seq(ModelConfig(type="seq2seq", cell="gru", units=8, embedding_dim=4), tokenizer,
                              tokenizer, model_card=CARD)
    sources = ["the cat sat", "a dog", "cat cat", "the", "dog sat the a"]
    translator = Translator(untrained)
    target_keys = vocabulary_keys(translator.target_tokenizer)
    rows = translator.translate_ids(sources, method="sample", temperature=5.0, random_seed=2, max_length=200)
    assert all(len(row) < 200 for row in rows)
    written = [[key for key in (target_keys[i - RESERVED] for i in row.tolist()) if key] for row in rows]
    assert written == [source.split() for source in sources]
    texts = [translator.detokenize(row) for row in rows]
    assert any(set(text) & set("!,.") for text in texts)
    assert any(word in " ".join(texts) for word in ("The", "Cat", "A"))


def test_the_file_keeps_the_rule_and_a_translator_may_set_it_aside(model, tmp_path):
    save_model_atomic(model, tmp_path / "model.keras")
    loaded = Translator.load(tmp_path / "model.keras")
    assert loaded.letters is not None and loaded.translate(SOURCES) == Translator(model).translate(SOURCES)
    assert Translator.load(tmp_path / "model.keras", same_letters=False).letters is None
    assert model_facts(model)["same_letters"] is True


def test_the_exported_graph_holds_its_outputs_to_the_sources_letters(model):
    module = Seq2SeqModule(model)
    out = module.text(np.array(SOURCES, dtype=object), 0, 0.0, 1)["text"].numpy()
    assert [text.decode("utf-8") for text in out] == Translator(model).translate(SOURCES)


def test_the_command_line_sets_the_rule_for_a_seq2seq_model_and_refuses_it_for_a_language_model(model, tmp_path):
    save_model_atomic(model, tmp_path / "model.keras")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{s}\t{t}\n" for s, t in restore_pairs(20, seed=9)), encoding="utf-8")
    scores = {}
    for flag in ("--same-letters", "--any-letters"):
        result = CliRunner().invoke(cli, ["evaluate", "--model", str(tmp_path / "model.keras"), "--pairs", str(pairs),
                                          flag, "--json"])
        assert result.exit_code == 0, result.output
        scores[flag] = json.loads(result.stdout)
    assert scores["--same-letters"]["same_letters"] is True and scores["--any-letters"]["same_letters"] is False
    result = CliRunner().invoke(cli, ["generate", "--model", str(tmp_path / "model.keras"), "--seed", "dcba dd",
                                      "--any-letters", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["settings"]["same_letters"] is False
    language_model = tmp_path / "lm.keras"
    save_model_atomic(build_model(ModelConfig(units=8, embedding_dim=4), {"level": "char", "vocabulary": list("ab")}),
                      language_model)
    result = CliRunner().invoke(cli, ["generate", "--model", str(language_model), "--seed", "ab", "--same-letters"])
    assert result.exit_code == 2 and "this is a language model" in result.output
    assert "Traceback" not in result.output


def test_the_key_is_read_by_seq2seq_models_only():
    language_model = config_from_dict({"model": {"same_letters": True}})
    assert "model.same_letters=true (seq2seq only)" in ignored_settings(language_model)
    assert ignored_settings(config_from_dict({"model": {"type": "seq2seq", "same_letters": True}})) == []
