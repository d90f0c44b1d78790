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

KINDS = ("additive", "local")  # local also steps two decoder layers


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """attention kind -> (Translator, the loaded SavedModel), each trained and exported once."""
    cache = {}

    def get(kind):
        if kind not in cache:
            model = trained(kind)
            folder = tmp_path_factory.mktemp(kind) / "export"
            facts = export_saved_model(model, folder)
            assert facts["kind"] == "seq2seq" and facts["strings_in_graph"] is True
            cache[kind] = Translator(model), tf.saved_model.load(str(folder)), folder
        return cache[kind]
    return get


def _texts(loaded, sources, max_length=0, temperature=0.0, random_seed=1):
    out = loaded.signatures["serving_default"](source=tf.constant(sources), max_length=tf.constant(max_length),
                                               temperature=tf.constant(temperature),
                                               random_seed=tf.constant(random_seed, tf.int64))
    return [text.decode("utf-8") for text in out["text"].numpy()]


@pytest.mark.parametrize("kind", KINDS)
def test_exported_text_equals_the_translators(exported, kind):
    translator, loaded, _ = exported(kind)
    sources = [*SOURCES, ""]
    greedy = translator.translate(sources, method="greedy")
    assert len(set(greedy)) > 3  # the model reads its sources, so a wrong row order would show
    assert _texts(loaded, sources) == greedy
    assert _texts(loaded, sources[::-1]) == greedy[::-1]
    assert _texts(loaded, sources, max_length=2) == translator.translate(sources, method="greedy", max_length=2)
    for seed in (3, 11):
        sampled = translator.translate(sources, method="sample", temperature=0.8, random_seed=seed)
        assert _texts(loaded, sources, temperature=0.8, random_seed=seed) == sampled
    assert _texts(loaded, sources, temperature=0.8, random_seed=3) != _texts(loaded, sources, temperature=0.8,
                                                                             random_seed=11)


def test_translate_ids_takes_and_returns_model_ids(exported):
    translator, loaded, folder = exported("additive")
    sources = ["abc", "hgfedc", "a"]
    encoded = translator.encode_sources(sources)
    padded = np.zeros((3, 6), np.int32)
    for row, ids in zip(padded, encoded):
        row[:len(ids)] = ids
    out = loaded.signatures["translate_ids"](source_ids=tf.constant(padded), max_length=tf.constant(0),
                                             temperature=tf.constant(0.0),
                                             random_seed=tf.constant(0, tf.int64))["ids"].numpy()
    for row, want in zip(out, translator.translate_ids(sources, method="greedy")):
        assert row[:len(want)].tolist() == want.tolist()
        rest = row[len(want):].tolist()  # END where the target ended, PAD after it (or the limit was reached)
        assert rest == [] or (rest[0] == END and set(rest[1:]) <= {PAD})
    card = json.loads((folder / "assets.extra" / "textgen.json").read_text(encoding="utf-8"))
    assert card["kind"] == "seq2seq" and card["reserved_ids"] == {"PAD": PAD, "END": END, "RESERVED": RESERVED}
    assert card["signatures"] == {"serving_default": "text", "translate_ids": "ids"}
    assert card["target_tokenizer"]["vocabulary"] == list("abcdefgh")
    with pytest.raises(tf.errors.InvalidArgumentError, match="past the source vocabulary"):
        loaded.signatures["translate_ids"](source_ids=tf.constant([[3, 99]]), max_length=tf.constant(0),
                                           temperature=tf.constant(0.0), random_seed=tf.constant(0, tf.int64))


def test_the_graph_refuses_unknown_characters_and_an_empty_batch(exported):
    _, loaded, _ = exported("additive")
    with pytest.raises(tf.errors.InvalidArgumentError, match="not in its vocabulary"):
        _texts(loaded, ["abc", "abz"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one source"):
        _texts(loaded, np.array([], dtype=object))


def test_a_word_level_model_exports_its_word_tokenizers(tmp_path):
    """Word targets are laid out with spaces by the tokenizer's in-graph twin, as `decode` lays them out."""
    words = ["the", "king", "said", ",", "no", ".", "yes", "!", '"', "queen"]
    tokenizer = {"level": "word", "vocabulary": [*SPECIAL_TOKENS, *words]}
    config = ModelConfig(type="seq2seq", cell="gru", layers=1, units=16, embedding_dim=8, attention_type="additive")
    keras.utils.set_random_seed(4)  # untrained: its outputs mix words, punctuation, quotes and markers
    model = build_seq2seq(config, tokenizer, tokenizer, model_card={"config": {"training": {"seq_length": 12}}})
    folder = tmp_path / "words"
    export_saved_model(model, folder)
    sources = ["the king said no.", "Yes!", 'the "queen"', "", "the jester"]  # "jester" reads as <unk>
    translator = Translator(model)
    want = translator.translate(sources, method="greedy")
    assert any(" " in text for text in want)
    assert _texts(tf.saved_model.load(str(folder)), sources) == want


def test_export_refuses_an_existing_folder_and_tflite_in_one_line(tmp_path, exported):
    translator, _, _ = exported("additive")
    existing = tmp_path / "there"
    existing.mkdir()
    (existing / "mine.txt").write_text("user's")
    with pytest.raises(UsageError, match="already exists and textgen never replaces it"):
        export_saved_model(translator.model, existing)
    with pytest.raises(UsageError, match="cannot be exported as tflite yet; use --format saved_model"):
        export_tflite(translator.model, tmp_path / "phone.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there"]
    assert [p.name for p in existing.iterdir()] == ["mine.txt"]

    path = tmp_path / "model.keras"
    save_model_atomic(translator.model, path)
    result = CliRunner().invoke(cli, ["export", "--model", str(path), "--format", "tflite", "--output",
                                      str(tmp_path / "phone.zip")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "use --format saved_model" in lines[0], result.output
    result = CliRunner().invoke(cli, ["export", "--model", str(path), "--output", str(tmp_path / "served")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(f"wrote {tmp_path / 'served'} (") and "source=" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "served", "there"]
