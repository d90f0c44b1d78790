"""The seq2seq network: masking, attention kinds, the card, cuDNN-safe layers, .keras round trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from textgen.config import ModelConfig
from textgen.data.pairs import RESERVED
from textgen.models import cells
from textgen.models.architecture import model_kind
from textgen.models.attention import PaddingMask, SourceAttention
from textgen.models.layers import find_token_embedding
from textgen.models.seq2seq import Seq2SeqParts, attention_model, build_seq2seq
from textgen.saving import load_keras_model, save_model_atomic

SOURCE = {"level": "char", "vocabulary": list("abcdefgh")}
TARGET = {"level": "char", "vocabulary": list("xyz")}
KINDS = ("none", "additive", "multiplicative", "local")


def tiny(attention="additive", cell="lstm", bidirectional=False, **extra):
    config = ModelConfig(type="seq2seq", cell=cell, layers=2, decoder_layers=2, units=8, embedding_dim=6,
                         bidirectional=bidirectional, attention_type=attention, attention_window=1, **extra)
    keras.utils.set_random_seed(3)
    return build_seq2seq(config, SOURCE, TARGET, model_card={"note": "tiny"})


def batch():
    source = np.array([[3, 4, 5, 0, 0, 0], [5, 6, 7, 8, 9, 10]], np.int32)
    target = np.array([[1, 3, 4, 5], [1, 5, 5, 0]], np.int32)
    return source, target


@pytest.mark.parametrize("attention", KINDS)
@pytest.mark.parametrize("cell,bidirectional", [("lstm", False), ("gru", True)])
def test_a_rows_logits_do_not_depend_on_the_padding_of_its_batch(attention, cell, bidirectional):
    model = tiny(attention, cell, bidirectional)
    source, target = batch()
    padded = model([source, target]).numpy()[0]
    alone = model([source[:1, :3], target[:1]]).numpy()[0]
    np.testing.assert_allclose(padded, alone, atol=1e-6)
    # and the padding is not ignored by accident: other source ids change the output
    assert not np.allclose(model([source[1:2], target[:1]]).numpy()[0], alone, atol=1e-4)


@pytest.mark.parametrize("attention", KINDS[1:])
def test_padded_source_positions_get_no_attention(attention):
    source, target = batch()
    weights = attention_model(tiny(attention))([source, target]).numpy()
    assert weights.shape == (2, 4, 6)
    assert np.all(weights[0, :, 3:] == 0) and np.all(weights[0, :, :3].sum(-1) > 0)
    if attention != "local":
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


def test_local_attention_weights_stay_within_the_window_around_the_predicted_position():
    layer = SourceAttention("local", units=4, window=1)
    query = np.random.default_rng(0).normal(size=(1, 5, 3)).astype("float32")
    values = np.random.default_rng(1).normal(size=(1, 9, 3)).astype("float32")
    mask = np.ones((1, 9), bool)
    _, weights = layer([query, values, mask])
    weights = np.asarray(weights)[0]
    # D = 1: at most the three positions around p_t, the Gaussian keeps their sum below 1
    assert np.all((weights > 0).sum(-1) <= 3) and np.all(weights.sum(-1) < 1.0)
    assert np.all(np.abs(np.diff(np.flatnonzero(weights[0]))) == 1)  # one contiguous window


def test_an_empty_source_row_attends_nowhere_instead_of_to_nan():
    layer = SourceAttention("additive", units=4)
    context, weights = layer([np.ones((1, 2, 3), "float32"), np.ones((1, 4, 3), "float32"), np.zeros((1, 4), bool)])
    assert np.all(np.asarray(weights) == 0) and np.all(np.asarray(context) == 0)


def test_the_layers_configs_round_trip():
    for layer in (SourceAttention("local", units=5, window=3, name="a"), PaddingMask(pad_id=0, name="m")):
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config
    with pytest.raises(ValueError, match="attention kind"):
        SourceAttention("dot")


def test_the_source_embedding_carries_the_card_and_both_vocabularies_travel():
    model = tiny("local", bidirectional=True)
    embedding = find_token_embedding(model)
    assert embedding.name == "source_embedding" and embedding.model_card["note"] == "tiny"
    assert embedding.model_card["architecture"]["attention_type"] == "local" and model_kind(model) == "seq2seq"
    assert embedding.input_dim == len(SOURCE["vocabulary"]) + RESERVED
    assert model.get_layer("target_embedding").tokenizer == TARGET
    assert model.outputs[0].shape[-1] == len(TARGET["vocabulary"]) + RESERVED
    assert model.layers[-1].name == "logits" and model.layers[-1].dtype_policy.compute_dtype == "float32"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_every_recurrent_layer_keeps_the_cudnn_path_open(cell):
    parts = Seq2SeqParts.of(tiny(cell=cell, bidirectional=True, dropout=0.2))
    layers = [layer.forward_layer for layer in parts.encoder] + [layer.backward_layer for layer in parts.encoder]
    layers += parts.decoder
    assert len(layers) == 6 and len(parts.bridge) == (2 if cell == "lstm" else 1)
    for layer in layers:
        assert cells.get(cell).cudnn_problems(layer) == []
        assert getattr(layer.cell, "reset_after", True)


@pytest.mark.parametrize("attention", KINDS)
def test_a_model_saves_to_one_keras_file_and_loads_with_identical_logits(attention, tmp_path):
    model = tiny(attention, cell="gru" if attention == "local" else "lstm", bidirectional=attention != "none",
                 dropout=0.1)
    source, target = batch()
    path = tmp_path / "model.keras"
    save_model_atomic(model, path)
    plain = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(plain([source, target]).numpy(), model([source, target]).numpy())
    checked = load_keras_model(path)  # textgen's loader, with its checks of the tokenizer and card
    np.testing.assert_array_equal(checked([source, target]).numpy(), model([source, target]).numpy())
    if attention != "none":
        np.testing.assert_array_equal(attention_model(plain)([source, target]).numpy(),
                                      attention_model(model)([source, target]).numpy())
