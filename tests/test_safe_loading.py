"""Model files are data, never code: Lambda layers and unknown classes are refused, configs
are read with yaml.safe_load, and the textgen format version is checked in both directions."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest

from test_bad_input import rewrite_keras_config, walk, with_format_version, with_unknown_class
from textgen.config import load_config
from textgen.errors import ConfigError, ModelFileError
from textgen.generation.generate import load
from textgen.saving import load_keras_model
from textgen.models.layers import FORMAT_VERSION, TokenEmbedding
from textgen.models.builder import build_model
from textgen.config import ModelConfig


def assert_one_line(exc: Exception) -> str:
    text = str(exc)
    assert "\n" not in text and len(text) < 400
    return text


def textgen_model_with_lambda(marker):
    """A model textgen would build, plus a Lambda layer whose code would leave `marker` if it ran."""
    base = build_model(ModelConfig(cell="gru", embedding_dim=4, units=4),
                       {"level": "char", "vocabulary": list("abc")})

    # a Python lambda is saved as bytecode, which safe mode refuses to rebuild
    outputs = keras.layers.Lambda(lambda x, path=str(marker): (open(path, "w").close(), x)[1])(base.output)
    return keras.Model(base.input, outputs)


def test_a_lambda_layer_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code-ran"
    model = textgen_model_with_lambda(marker)
    path = tmp_path / "lambda.keras"
    model.save(path)
    marker.unlink(missing_ok=True)  # building the model above ran the function once
    with pytest.raises(ModelFileError) as info:
        load_keras_model(path)
    message = assert_one_line(info.value)
    assert "Lambda layer" in message and str(path) in message
    assert not marker.exists()


def test_a_lambda_of_a_named_function_is_refused_too(tmp_path):
    base = build_model(ModelConfig(cell="gru", embedding_dim=4, units=4), {"level": "char", "vocabulary": list("ab")})
    path = tmp_path / "named.keras"
    keras.Model(base.input, keras.layers.Lambda(keras.ops.negative, output_shape=(None, 2))(base.output)).save(path)
    with pytest.raises(ModelFileError) as info:
        load_keras_model(path)
    assert "negative" in assert_one_line(info.value)


def test_an_unregistered_class_is_refused_by_name(trained_model, tmp_path):
    path = tmp_path / "unknown.keras"
    rewrite_keras_config(trained_model, path, with_unknown_class)
    with pytest.raises(ModelFileError) as info:
        load_keras_model(path)
    assert "EvilLayer" in assert_one_line(info.value)


def test_a_class_from_another_module_is_not_imported(trained_model, tmp_path):
    """A config naming an importable module's class must not make Keras import and call it."""
    def to_os_module(config):
        for node in walk(config):
            if node.get("class_name") == "GRU":
                node.update(class_name="system", module="os", registered_name=None)
        return config

    path = tmp_path / "os.keras"
    rewrite_keras_config(trained_model, path, to_os_module)
    with pytest.raises(ModelFileError) as info:
        load_keras_model(path)
    assert_one_line(info.value)


def test_newer_format_says_to_upgrade_in_one_line(trained_model, tmp_path):
    path = tmp_path / "newer.keras"
    rewrite_keras_config(trained_model, path, with_format_version(FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError) as info:
        load_keras_model(path)
    message = assert_one_line(info.value)
    assert f"format {FORMAT_VERSION + 1}" in message and "upgrade" in message


def test_a_model_card_without_a_version_is_the_first_format_and_loads(trained_model, tmp_path):
    """Files from before the version was recorded (format 1) load and generate."""
    def drop_version(config):
        for node in walk(config):
            if isinstance(node.get("model_card"), dict):
                node["model_card"].pop("format_version", None)
        return config

    path = tmp_path / "older.keras"
    rewrite_keras_config(trained_model, path, drop_version)
    text = load(path).generate("ROMEO:", length=20, temperature=0)[0]
    assert text == load(trained_model).generate("ROMEO:", length=20, temperature=0)[0]


def test_saved_models_record_the_format_version(trained_model):
    with zipfile.ZipFile(trained_model) as archive:
        config = json.loads(archive.read("config.json"))
    cards = [node["model_card"] for node in walk(config) if isinstance(node.get("model_card"), dict)]
    assert len(cards) == 1 and cards[0]["format_version"] == FORMAT_VERSION
    model = load_keras_model(trained_model)
    embedding = next(layer for layer in model.layers if isinstance(layer, TokenEmbedding))
    assert embedding.model_card["format_version"] == FORMAT_VERSION
    assert model(np.zeros((1, 3), np.int32)).shape[:2] == (1, 3)


def test_loading_always_uses_keras_safe_mode(trained_model, monkeypatch):
    seen = []
    original = keras.models.load_model

    def spy(*args, **kwargs):
        seen.append(kwargs.get("safe_mode"))
        return original(*args, **kwargs)

    monkeypatch.setattr(keras.models, "load_model", spy)
    load_keras_model(trained_model)
    assert seen == [True]


@pytest.mark.parametrize("text", [
    "training: !!python/object/apply:os.system ['touch {marker}']\n",
    "!!python/object/new:os.system ['touch {marker}']\n",
    "model: !!python/name:os.system\n",
])
def test_yaml_python_tags_are_refused_not_run(tmp_path, text):
    marker = tmp_path / "yaml-code-ran"
    path = tmp_path / "evil.yaml"
    path.write_text(text.format(marker=marker))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid YAML" in assert_one_line(info.value)
    with pytest.raises(ConfigError):
        load_config(None, [f"training.epochs=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()
