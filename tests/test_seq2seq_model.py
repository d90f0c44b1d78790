"""The seq2seq network: masking, attention kinds, the card, cuDNN-safe layers, .keras round trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from textgen.config import ModelConfig
from textgen.data.pairs import RESERVED
from textgen.errors import ConfigError
from textgen.models import cells
from textgen.models.architecture import model_kind
from textgen.models.attention import PaddingMask, SourceAttention, TokenNoise, position_signal
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


@pytest.mark.parametrize("attention,positions", [*((kind, 0) for kind in KINDS), ("additive", 6), ("local", 6)])
@pytest.mark.parametrize("cell,bidirectional", [("lstm", False), ("gru", True)])
def test_a_rows_logits_do_not_depend_on_the_padding_of_its_batch(attention, positions, cell, bidirectional):
    model = tiny(attention, cell, bidirectional, attention_positions=positions)
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
    for layer in (SourceAttention("local", units=5, window=3, positions=4, name="a"), PaddingMask(pad_id=0, name="m")):
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


@pytest.mark.parametrize("attention,positions", [*((kind, 0) for kind in KINDS), ("multiplicative", 4)])
def test_a_model_saves_to_one_keras_file_and_loads_with_identical_logits(attention, positions, tmp_path):
    model = tiny(attention, cell="gru" if attention == "local" else "lstm", bidirectional=attention != "none",
                 dropout=0.1, attention_positions=positions)
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


def test_position_features_are_sines_and_cosines_over_wavelengths_from_4_to_1024_tokens():
    signal = keras.ops.convert_to_numpy(position_signal(np.array([[0, 1, 256]]), 6))
    assert signal.shape == (1, 3, 6)
    np.testing.assert_allclose(signal[0, 0], [0, 0, 0, 1, 1, 1], atol=1e-6)
    wavelengths = np.array([4.0, 64.0, 1024.0])  # geometric, 3 of them
    np.testing.assert_allclose(signal[0, 1], np.concatenate([np.sin(2 * np.pi / wavelengths),
                                                             np.cos(2 * np.pi / wavelengths)]), atol=1e-6)
    np.testing.assert_allclose(signal[0, 2, [0, 3]], [0, 1], atol=1e-4)  # 256 is a whole number of 4s


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_with_positions_a_repeated_source_token_is_scored_by_where_it_is(kind):
    values = np.zeros((1, 12, 4), "float32")
    values[0, [2, 9]] = [1.0, -0.5, 0.25, 2.0]  # one phrase at two places: content cannot tell them apart
    query = np.random.default_rng(1).normal(size=(1, 3, 5)).astype("float32")
    mask = np.ones((1, 12), bool)
    for positions in (0, 8):
        layer = SourceAttention(kind, units=6, positions=positions)
        _, weights = layer([query, values, mask])
        weights = keras.ops.convert_to_numpy(weights)
        if positions:
            assert np.abs(weights[0, :, 2] - weights[0, :, 9]).min() > 1e-4
            # a later query position gives other weights to the same query vector
            _, later = layer.attend(query, layer.keys(values), values, mask, np.array([5], "int32"))
            assert not np.allclose(keras.ops.convert_to_numpy(later), weights, atol=1e-4)
        else:
            np.testing.assert_allclose(weights[0, :, 2], weights[0, :, 9], rtol=1e-6)


def test_attention_positions_must_be_an_even_count():
    with pytest.raises(ConfigError, match="model.attention_positions must be an even number"):
        ModelConfig(type="seq2seq", attention_positions=5)
    with pytest.raises(ValueError, match="positions must be an even number"):
        SourceAttention("additive", positions=3)


def test_token_noise_replaces_a_share_of_real_tokens_in_training_only():
    layer = TokenNoise(rate=0.2, low=3, high=11, seed=4)
    ids = np.tile(np.array([[1, 3, 4, 5, 6, 7, 8, 9, 10, 0]], np.int32), (2000, 1))
    noisy = keras.ops.convert_to_numpy(layer(ids, training=True))
    real = ids >= 3
    assert np.array_equal(noisy[~real], ids[~real])  # START and padding stay
    changed = (noisy != ids)[real].mean()
    assert abs(changed - 0.2 * 7 / 8) < 0.01  # a draw may pick the same id: 1 in 8 of them do
    assert noisy[real].min() >= 3 and noisy[real].max() <= 10
    assert np.array_equal(keras.ops.convert_to_numpy(layer(ids, training=False)), ids)
    assert TokenNoise.from_config(layer.get_config()).get_config() == layer.get_config()


def test_a_model_with_target_noise_decodes_without_it_and_trains_with_it():
    model = tiny("multiplicative", cell="gru", target_noise=0.5)
    assert Seq2SeqParts.of(model).target_noise.rate == 0.5
    source, target = batch()
    plain = model([source, target], training=False).numpy()
    np.testing.assert_array_equal(model([source, target]).numpy(), plain)
    noisy = [model([source, target], training=True).numpy() for _ in range(3)]
    assert any(not np.allclose(n[:, 1:], plain[:, 1:], atol=1e-5) for n in noisy)
    np.testing.assert_allclose(noisy[0][:, 0], plain[:, 0], atol=1e-6)  # START is never replaced


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_kernels_train_the_same_function_and_save_as_keras_layers(cell, monkeypatch, tmp_path):
    import tensorflow as tf

    from textgen.models import fused_rnn

    config = ModelConfig(type="seq2seq", cell=cell, layers=1, decoder_layers=2, units=8, embedding_dim=6,
                         bidirectional=True, attention_type="multiplicative", attention_positions=4)
    keras.utils.set_random_seed(3)
    plain = build_seq2seq(config, SOURCE, TARGET)
    fused = build_seq2seq(config, SOURCE, TARGET, fused_kernels=True)
    fused.set_weights([w * 2 for w in plain.get_weights()])  # larger weights: saturated gates count too
    plain.set_weights(fused.get_weights())

    def recurrent_classes(model):
        parts = Seq2SeqParts.of(model)
        return [type(layer) for wrapper in parts.encoder for layer in (wrapper.forward_layer, wrapper.backward_layer)
                ] + [type(layer) for layer in parts.decoder]

    assert recurrent_classes(fused) == [cells.get(cell).fused_class] * 4
    runs = []
    run_sequence = fused_rnn.run_sequence
    monkeypatch.setattr(fused_rnn, "run_sequence", lambda *args: runs.append(1) or run_sequence(*args))
    source, target = batch()

    def loss_and_gradients(model):
        with tf.GradientTape() as tape:
            logits = model([source, target], training=True)
            loss = tf.reduce_sum(logits * tf.sin(logits))
        return logits, tape.gradient(loss, model.trainable_weights)

    logits_fused, grads_fused = loss_and_gradients(fused)
    assert len(runs) == 4  # both encoder directions (through the sources' padding mask) and both decoder layers
    logits_plain, grads_plain = loss_and_gradients(plain)
    assert len(runs) == 4
    np.testing.assert_allclose(logits_fused, logits_plain, atol=1e-5)
    for a, b in zip(grads_fused, grads_plain):
        np.testing.assert_allclose(tf.convert_to_tensor(a), tf.convert_to_tensor(b), atol=1e-4)
    path = tmp_path / "model.keras"
    save_model_atomic(fused, path)
    loaded = load_keras_model(path)
    assert recurrent_classes(loaded) == [cells.get(cell).layer_class] * 4
    np.testing.assert_allclose(loaded([source, target]).numpy(), fused([source, target]).numpy(), atol=1e-6)
