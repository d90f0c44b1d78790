"""`textgen export` of a seq2seq model: the SavedModel translates what `Translator.translate` translates,
strings in and strings out, and refuses what it cannot do in one line."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from textgen.cli.main import cli
from textgen.config import ModelConfig
from textgen.data.pairs import END, PAD, RESERVED
from textgen.data.tokenizer import SPECIAL_TOKENS
from textgen.errors import UsageError
from textgen.export.saved_model import export_saved_model
from textgen.export.tflite import export_tflite
from textgen.generation.seq2seq import Translator
from textgen.models.seq2seq import build_seq2seq
from textgen.saving import save_model_atomic

from test_seq2seq_decoding import SOURCES, trained  # tiny models trained on reversing strings

WORDS = ["the", "king", "said", ",", "no", ".", "yes", "!", '"', "queen"]


def word_model() -> keras.Model:
    """An untrained word-level model: its greedy outputs mix words, punctuation, quotes and spacing markers.
    Its card names no training length, so each source's length limit is its own (twice its length + 10)."""
    tokenizer = {"level": "word", "vocabulary": [*SPECIAL_TOKENS, *WORDS]}
    config = ModelConfig(type="seq2seq", cell="gru", layers=1, units=16, embedding_dim=8, attention_type="additive")
    keras.utils.set_random_seed(4)
    return build_seq2seq(config, tokenizer, tokenizer)


def _texts(loaded, sources, max_length=0, temperature=0.0, random_seed=1):
    out = loaded.signatures["serving_default"](source=tf.constant(sources), max_length=tf.constant(max_length),
                                               temperature=tf.constant(temperature),
                                               random_seed=tf.constant(random_seed, tf.int64))
    return [text.decode("utf-8") for text in out["text"].numpy()]


def _ids(loaded, source_ids):
    return loaded.signatures["translate_ids"](source_ids=tf.constant(source_ids, tf.int32), max_length=tf.constant(0),
                                              temperature=tf.constant(0.0),
                                              random_seed=tf.constant(0, tf.int64))["ids"].numpy()


def test_an_exported_char_model_translates_as_the_translator(tmp_path):
    """One test, so the model is trained and exported once however the tests are spread over workers."""
    model = trained("local")  # local attention, two decoder layers, a GRU encoder
    facts = export_saved_model(model, tmp_path / "export")
    assert facts["kind"] == "seq2seq" and facts["strings_in_graph"] is True
    translator, loaded = Translator(model), tf.saved_model.load(str(tmp_path / "export"))
    sources = [*SOURCES, ""]
    greedy = translator.translate(sources, method="greedy")
    assert len(set(greedy)) > 3  # the model reads its sources, so a wrong row order would show
    assert _texts(loaded, sources) == greedy
    assert _texts(loaded, sources[::-1]) == greedy[::-1]
    assert _texts(loaded, sources, max_length=2) == translator.translate(sources, method="greedy", max_length=2)
    for seed in (3, 2**40 + 11):  # a seed is used whole, as the Translator uses it
        sampled = translator.translate(sources, method="sample", temperature=0.8, random_seed=seed)
        assert _texts(loaded, sources, temperature=0.8, random_seed=seed) == sampled
    assert _texts(loaded, sources, temperature=0.8, random_seed=3) != _texts(loaded, sources, temperature=0.8,
                                                                             random_seed=2**40 + 3)
    many = [source + "ab"[i % 2] for i, source in enumerate(SOURCES * 7)]  # past one chunk of 64 sources
    assert _texts(loaded, many) == translator.translate(many, method="greedy")
    assert _texts(loaded, many, temperature=0.8, random_seed=5) == translator.translate(
        many, method="sample", temperature=0.8, random_seed=5)
    # translate_ids: model ids in (PAD-padded), the target out with END where it ended and PAD after it.
    encoded = translator.encode_sources(SOURCES[:3])
    padded = np.zeros((3, max(map(len, encoded)) + 1), np.int32)
    for row, ids in zip(padded, encoded):
        row[:len(ids)] = ids
    for row, want in zip(_ids(loaded, padded), translator.translate_ids(SOURCES[:3], method="greedy")):
        assert row[:len(want)].tolist() == want.tolist()
        rest = row[len(want):].tolist()
        assert rest == [] or (rest[0] == END and set(rest[1:]) <= {PAD})
    card = json.loads((tmp_path / "export" / "assets.extra" / "textgen.json").read_text(encoding="utf-8"))
    assert card["kind"] == "seq2seq" and card["reserved_ids"] == {"PAD": PAD, "END": END, "RESERVED": RESERVED}
    assert card["signatures"] == {"serving_default": "text", "translate_ids": "ids"}
    assert card["target_tokenizer"]["vocabulary"] == list("abcdefgh")
    # What the graph refuses: ids past the vocabulary, characters it does not know, no source at all.
    with pytest.raises(tf.errors.InvalidArgumentError, match="past the source vocabulary"):
        _ids(loaded, [[3, 99]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="not in its vocabulary"):
        _texts(loaded, ["abc", "abz"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one source"):
        _texts(loaded, np.array([], dtype=object))
    with pytest.raises(tf.errors.InvalidArgumentError, match="random_seed must be 0 or more"):
        _texts(loaded, ["abc"], temperature=0.5, random_seed=-1)


@pytest.mark.slow  # the char model's export above covers the command; this adds word tokens
def test_the_export_command_writes_a_word_model_that_translates_as_the_translator(tmp_path):
    """Word targets are laid out with spaces by the tokenizer's in-graph twin, as `decode` lays them out."""
    model = word_model()
    save_model_atomic(model, tmp_path / "model.keras")
    result = CliRunner().invoke(cli, ["export", "--model", str(tmp_path / "model.keras"), "--output",
                                      str(tmp_path / "served")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(f"wrote {tmp_path / 'served'} (") and "source=" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "served"]  # nothing temporary left
    sources = ["the king said no.", "Yes!", 'the "queen"', "", "the jester"]  # "jester" reads as <unk>
    want = Translator(model).translate(sources, method="greedy")
    assert any(" " in text for text in want)
    assert len(Translator(model).translate_ids(sources)[2]) == 18  # 'the "queen"' loops to its own limit
    loaded = tf.saved_model.load(str(tmp_path / "served"))
    assert _texts(loaded, sources) == want
    sampled = Translator(model).translate(sources, method="sample", temperature=1.5, random_seed=9)
    assert _texts(loaded, sources, temperature=1.5, random_seed=9) == sampled


def test_export_refuses_an_existing_folder_and_tflite_in_one_line(tmp_path):
    model = word_model()
    existing = tmp_path / "there"
    existing.mkdir()
    (existing / "mine.txt").write_text("user's")
    with pytest.raises(UsageError, match="already exists and textgen never replaces it"):
        export_saved_model(model, existing)
    with pytest.raises(UsageError, match="cannot be exported as tflite yet; use --format saved_model"):
        export_tflite(model, tmp_path / "phone.zip")
    save_model_atomic(model, tmp_path / "model.keras")
    result = CliRunner().invoke(cli, ["export", "--model", str(tmp_path / "model.keras"), "--format", "tflite",
                                      "--output", str(tmp_path / "phone.zip")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "use --format saved_model" in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "there"]
    assert [p.name for p in existing.iterdir()] == ["mine.txt"]
