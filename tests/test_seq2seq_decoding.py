"""Decoding seq2seq models: the batched engine against the plain reference decoder, beam search,
sampling, the attention picture's data, and bad requests answered in one line."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from textgen.config import ModelConfig
from textgen.data.pairs import END, RESERVED, START
from textgen.errors import UsageError
from textgen.generation import seq2seq as decoding
from textgen.generation.seq2seq import Seq2SeqStepper, Translator, pad_rows, reference_greedy
from textgen.models.attention import ATTENTION_KINDS
from textgen.models.builder import build_model
from textgen.models.seq2seq import build_seq2seq
from textgen.saving import save_model_atomic

LETTERS = "abcdefgh"
TOKENIZER = {"level": "char", "vocabulary": list(LETTERS)}
# One per attention kind, covering both cells and both encoder directions between them.
SETUPS = {"none": ("lstm", False), "additive": ("gru", True), "multiplicative": ("lstm", True), "local": ("gru", False)}
PLACED = "multiplicative, positions"  # model.attention_positions 8: gru, bidirectional, dropout
SOURCES = ["abc", "hgfedc", "dd", "bca", "efgh", "a", "cafe", "hhab", "gebd", "dcbaf"]


def reversal_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    sources = ["".join(rng.choice(list(LETTERS), rng.integers(1, 7))) for _ in range(n)]
    return [(s, s[::-1]) for s in sources]


def ids(text: str) -> list[int]:
    return [LETTERS.index(c) + RESERVED for c in text]


def trained(attention: str, epochs: int = 1) -> keras.Model:
    """A tiny model trained a few steps on reversing short strings: its outputs differ by source."""
    placed = attention == PLACED
    cell, bidirectional = ("gru", True) if placed else SETUPS[attention]
    config = ModelConfig(type="seq2seq", cell=cell, layers=1, decoder_layers=2 if attention == "local" else 1,
                         units=24, embedding_dim=8, bidirectional=bidirectional,
                         attention_type="multiplicative" if placed else attention, attention_window=2,
                         attention_positions=8 if placed else 0, dropout=0.1 if placed else 0.0)
    keras.utils.set_random_seed(1)
    model = build_seq2seq(config, TOKENIZER, TOKENIZER, model_card={"config": {"training": {"seq_length": 8}}})
    pairs = reversal_pairs(768)
    source = pad_rows([ids(s) for s, _ in pairs])
    target_in = pad_rows([[START, *ids(t)] for _, t in pairs])
    target_out = pad_rows([[*ids(t), END] for _, t in pairs])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    model.compile(keras.optimizers.Adam(0.02), loss, jit_compile=False)  # XLA's compile outlasts 12 steps
    model.fit([source, target_in], target_out, batch_size=64, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(attention):
        if attention not in cache:
            cache[attention] = trained(attention)
        return cache[attention]
    return get


def log_probability(model, source: str, target_ids) -> float:
    """The full model's log-probability of target ids (END included) given the source."""
    target_ids = list(target_ids)
    logits = model([pad_rows([ids(source)]), np.array([[START, *target_ids[:-1]]], np.int32)])[0].numpy()
    top = logits.max(-1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return float(sum(log_probs[t, token] for t, token in enumerate(target_ids)))


@pytest.mark.parametrize("attention,positions", [*((kind, 0) for kind in SETUPS),
                                                  *((kind, 4) for kind in ATTENTION_KINDS)])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stepping_the_decoder_gives_the_full_models_logits_at_every_position(attention, positions, cell):
    config = ModelConfig(type="seq2seq", cell=cell, layers=2, decoder_layers=2, units=12, embedding_dim=6,
                         bidirectional=cell == "gru", attention_type=attention, attention_window=1,
                         attention_positions=positions)
    keras.utils.set_random_seed(5)
    model = build_seq2seq(config, TOKENIZER, TOKENIZER)
    source = pad_rows([ids("abcdef"), ids("hg")])
    target_in = pad_rows([[START, *ids("fedc")], [START, *ids("ghh")]])
    full = model([source, target_in]).numpy()
    stepper = Seq2SeqStepper(model)
    states = stepper.start(source)
    for t in range(target_in.shape[1]):
        logits, states = stepper.step(target_in[:, t], states)
        np.testing.assert_allclose(logits.numpy(), full[:, t], atol=2e-5)


@pytest.mark.parametrize("attention", [pytest.param(kind, marks=pytest.mark.slow)
                                       if kind in ("none", "additive", "multiplicative") else kind
                                       for kind in [*SETUPS, PLACED]])  # two in make test, all in CI
def test_batched_greedy_equals_the_reference_decoder_token_for_token(attention, models, monkeypatch):
    model = models(attention)
    monkeypatch.setattr(decoding, "CHUNK_ROWS", 4)  # several chunks, sorted by length, put back in order
    engine = Translator(model).translate_ids(SOURCES, max_length=9)
    reference = reference_greedy(model, SOURCES, max_length=9)
    assert [row.tolist() for row in engine] == [row.tolist() for row in reference]
    assert len({tuple(row) for row in engine}) > 3  # the tiny model's outputs differ by source


def test_translations_are_text_and_the_file_round_trip_keeps_them(models, tmp_path):
    model = models("additive")
    path = tmp_path / "model.keras"
    save_model_atomic(model, path)
    translator, loaded = Translator(model), Translator.load(path)
    texts = translator.translate(SOURCES, max_length=9)
    assert texts == loaded.translate(SOURCES, max_length=9)
    assert texts == [translator.detokenize(row) for row in reference_greedy(model, SOURCES, 9)]
    assert all(set(text) <= set(LETTERS) for text in texts)


@pytest.mark.parametrize("attention", ["multiplicative", "local", PLACED])
def test_beam_search_of_width_one_is_greedy_and_a_wider_beam_scores_at_least_as_well(attention, models):
    model = models(attention)
    translator = Translator(model)
    greedy = translator.translate_ids(SOURCES, max_length=9)
    narrow = translator.translate_ids(SOURCES, method="beam", beam_width=1, max_length=9)
    assert [row.tolist() for row in narrow] == [row.tolist() for row in greedy]
    wide = translator.translate_ids(SOURCES, method="beam", beam_width=5, max_length=9)
    compared = 0
    for source, g, w in zip(SOURCES, greedy, wide):
        if len(g) < 9 and len(w) < 9:  # both finished: score them with their END
            g_score, w_score = log_probability(model, source, [*g, END]), log_probability(model, source, [*w, END])
            assert w_score >= g_score - 1e-4
            compared += 1
    assert compared >= len(SOURCES) // 2


def test_sampling_is_reproducible_with_a_random_seed_and_varies_without_one(models):
    translator = Translator(models("none"))
    first = translator.translate(SOURCES, method="sample", temperature=3.0, random_seed=7, max_length=9)
    assert first == translator.translate(SOURCES, method="sample", temperature=3.0, random_seed=7, max_length=9)
    assert first != translator.translate(SOURCES, method="sample", temperature=3.0, random_seed=8, max_length=9)
    # top-k 1 keeps only the most likely token: sampling becomes greedy
    assert (translator.translate(SOURCES, method="sample", top_k=1, random_seed=3, max_length=9)
            == translator.translate(SOURCES, max_length=9))


def test_each_source_may_have_twice_its_length_and_ten_more_at_most_the_training_length(models):
    translator = Translator(models("none"))
    encoded = translator.encode_sources(["", "a", "abcdefgh"])
    assert translator.length_limits(encoded, None).tolist() == [9, 9, 9]  # the card's seq_length 8, and END
    assert translator.length_limits(encoded, 3).tolist() == [3, 3, 3]
    translator.seq_length = 11
    assert translator.length_limits(encoded, None).tolist() == [10, 12, 12]
    translator.seq_length = None
    assert translator.length_limits(encoded, None).tolist() == [10, 12, 26]
    assert all(len(row) <= 2 for row in translator.translate_ids(SOURCES, max_length=2))


def test_a_decoder_that_never_ends_stops_each_row_at_its_own_limit():
    """An untrained model with no training length in its card loops; greedy, beam and the reference
    decoder all stop each source at twice its length + 10."""
    config = ModelConfig(type="seq2seq", cell="gru", layers=1, units=16, embedding_dim=8, attention_type="additive")
    keras.utils.set_random_seed(2)
    model = build_seq2seq(config, TOKENIZER, TOKENIZER)
    translator = Translator(model)
    sources = ["a", "abc", "hgfedc", "ab"]
    limits = translator.length_limits(translator.encode_sources(sources), None).tolist()
    assert limits == [12, 16, 22, 14]
    greedy = translator.translate_ids(sources)
    assert [row.tolist() for row in greedy] == [row.tolist() for row in reference_greedy(model, sources)]
    assert [len(row) for row in greedy] == limits
    assert [len(row) for row in translator.translate_ids(sources, method="beam", beam_width=3)] == limits


def test_attention_weights_follow_the_greedy_translation(models):
    translator = Translator(models("additive"))
    source_tokens, target_tokens, weights = translator.attention_weights("cafe")
    text = translator.translate(["cafe"])[0]
    assert source_tokens == list("cafe")
    assert "".join(t for t in target_tokens if t != "<end>") == text
    assert weights.shape == (len(target_tokens), 4)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(UsageError, match="attention_type: none"):
        Translator(models("none")).attention_weights("cafe")


def test_bad_requests_are_one_line_usage_errors(models):
    translator = Translator(models("none"))
    with pytest.raises(UsageError, match=r"source 2: character 'z' is not in the model's vocabulary"):
        translator.translate(["abc", "abz"])
    with pytest.raises(UsageError, match="method must be one of"):
        translator.translate(["abc"], method="nucleus")
    with pytest.raises(UsageError, match="max_length"):
        translator.translate(["abc"], max_length=0)
    with pytest.raises(UsageError, match="beam width"):
        translator.translate(["abc"], method="beam", beam_width=0)
    with pytest.raises(UsageError, match="random seed"):
        translator.translate(["abc"], method="sample", random_seed=-1)
    with pytest.raises(UsageError, match="list of source strings"):
        translator.translate("abc")
    language_model = build_model(ModelConfig(units=8, embedding_dim=4), TOKENIZER)
    with pytest.raises(UsageError, match="not a seq2seq model"):
        Translator(language_model)


def test_an_empty_source_decodes_without_nans(models):
    translator = Translator(models("local"))
    rows = translator.translate_ids(["", "abc"], max_length=5)
    assert len(rows) == 2 and all(set(row.tolist()) <= set(range(RESERVED, RESERVED + 8)) for row in rows)


def test_a_word_model_reads_unknown_words_as_unk_and_never_writes_unk():
    from textgen.data.tokenizer import WordTokenizer

    tokenizer = WordTokenizer.fit("the cat sat on the mat . a dog ran").get_config()
    keras.utils.set_random_seed(2)
    model = build_seq2seq(ModelConfig(type="seq2seq", cell="gru", units=8, embedding_dim=4,
                                      attention_type="multiplicative"), tokenizer, tokenizer)
    translator = Translator(model)
    source_tokens, target_tokens, _ = translator.attention_weights("the cow sat")
    assert source_tokens == ["the", "<unk>", "sat"]
    unk = translator.target_tokenizer.unk_id + RESERVED
    rows = translator.translate_ids(["the cow sat", "a dog", "mat", "cat ran", "on a", "dog"] * 2, method="sample", temperature=5.0, random_seed=1,
                                    max_length=30)
    assert all(unk not in row.tolist() for row in rows) and sum(len(row) for row in rows) > 10
    assert "<unk>" not in target_tokens


def test_a_model_under_a_mixed_precision_policy_decodes_as_training_samples_it():
    """Training's sample callback decodes the model it trains, which may still be bfloat16."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_seq2seq(ModelConfig(type="seq2seq", cell="lstm", decoder_layers=2, units=8, embedding_dim=4,
                                          bidirectional=True, attention_type="local"), TOKENIZER, TOKENIZER)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    translator = Translator(model)
    for method in ("greedy", "beam", "sample"):
        rows = translator.translate_ids(["abc", "hgfe"], method=method, max_length=4, random_seed=0)
        assert len(rows) == 2
        assert all(len(row) <= 4 and set(row.tolist()) <= set(range(RESERVED, RESERVED + 8)) for row in rows)
