import keras
import numpy as np
import pytest

from textgen.config import ModelConfig
from textgen.models.layers import TokenEmbedding, find_token_embedding
from textgen.models.builder import build_model

TOKENIZER = {"level": "char", "vocabulary": list("abcdefghijklmnopqrstuvwxyz")}


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_output_shapes(cell, layers):
    model = build_model(ModelConfig(cell=cell, embedding_dim=8, units=12, layers=layers, dropout=0.1), TOKENIZER)
    logits = model(np.zeros((3, 7), dtype=np.int32))
    assert logits.shape == (3, 7, 26)
    assert logits.dtype == "float32"
    assert len([l for l in model.layers if isinstance(l, keras.layers.RNN)]) == layers


def test_layers_keep_the_cudnn_path_eligible():
    model = build_model(ModelConfig(cell="gru", layers=2, units=8, embedding_dim=4, dropout=0.2), TOKENIZER)
    for layer in model.layers:
        if isinstance(layer, keras.layers.RNN):
            assert layer.cell.activation.__name__ == "tanh"
            assert layer.cell.recurrent_activation.__name__ == "sigmoid"
            assert layer.cell.recurrent_dropout == 0 and layer.cell.use_bias and not layer.unroll
            assert layer.cell.reset_after


def test_token_embedding_config_round_trip():
    layer = TokenEmbedding(26, 4, tokenizer=TOKENIZER, model_card={"config": {"a": 1}}, name="emb")
    config = layer.get_config()
    again = TokenEmbedding.from_config(config)
    assert again.get_config() == config
    assert again.tokenizer == TOKENIZER and again.model_card["format_version"] == 1


def test_save_and_load_give_the_same_outputs(tmp_path):
    model = build_model(ModelConfig(cell="lstm", embedding_dim=8, units=8), TOKENIZER, model_card={"note": "x"})
    x = np.random.default_rng(0).integers(0, 26, size=(2, 9)).astype(np.int32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert find_token_embedding(loaded).tokenizer == TOKENIZER
    assert find_token_embedding(loaded).model_card["note"] == "x"
