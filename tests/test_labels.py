"""Label groups and `--label` specs (textgen.labels), and the label embedding every architecture joins to its input."""

import keras
import numpy as np
import pytest

from textgen.config import ModelConfig
from textgen.errors import ConfigError, ModelFileError, UsageError
from textgen.labels import LabelGroup, LabelSpace, labels_problem
from textgen.models.builder import build_model
from textgen.models.layers import LabelEmbedding, find_label_embedding
from textgen.saving import load_keras_model

AUTHORS = LabelGroup("author", ("any", "austen", "melville", "verne"))
SPACE = LabelSpace((AUTHORS, LabelGroup("genre", ("any", "novel", "play"))))
ONE = LabelSpace((AUTHORS,))
TOKENIZER = {"level": "char", "vocabulary": list("abcdefgh ")}


def test_card_round_trip_and_layout():
    assert LabelSpace.from_card(SPACE.to_card()) == SPACE
    assert LabelSpace.from_card([]) is None
    assert SPACE.size == 7 and SPACE.offsets() == [0, 4]
    assert "author: austen, melville, verne (and any)" in SPACE.describe()
    with pytest.raises(ValueError, match="must start with"):
        LabelGroup("x", ("a", "any"))


def test_one_label_a_group_and_the_rest_any():
    rows, n = SPACE.mix(["austen"], 1)
    assert n == 1 and rows == [[0, 1, 0, 0, 1, 0, 0]]
    rows, _ = SPACE.mix(["author=verne", "genre=play"], 1)
    assert rows == [[0, 0, 0, 1, 0, 0, 1]]
    assert SPACE.mix([], 2) == ([[1, 0, 0, 0, 1, 0, 0]] * 2, 2)


def test_blends_are_scaled_to_one_and_labels_go_one_per_sample():
    rows, _ = ONE.mix(["austen:0.7,melville:0.3"], 1)
    np.testing.assert_allclose(rows[0], [0, 0.7, 0.3, 0])
    rows, _ = ONE.mix(["austen:2,melville:2"], 1)
    np.testing.assert_allclose(rows[0], [0, 0.5, 0.5, 0])
    rows, n = ONE.mix(["austen", "melville"], 1)  # one label each: as many samples as labels
    assert n == 2 and rows == [[0, 1, 0, 0], [0, 0, 1, 0]]
    assert ONE.mix(["austen", "melville"], 2)[1] == 2


@pytest.mark.parametrize("specs, message", [
    (["dickens"], "unknown label 'dickens'; valid labels are author: any, austen, melville, verne"),
    (["author=dickens"], "unknown label 'dickens' in group author; valid: any, austen"),
    (["mood=sad"], "label group 'mood' is not one of this model's: author, genre"),
    (["austen:-1"], "must be a positive number"),
    (["austen:x"], "is not a number"),
    (["austen,"], "names no label"),
])
def test_bad_specs_name_the_problem(specs, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        SPACE.mix(specs, 1)


def test_as_many_samples_as_labels_or_an_error():
    with pytest.raises(UsageError, match="one per sample, but --num-samples is 3"):
        ONE.mix(["austen", "melville"], 3)


def test_any_belongs_to_the_group_when_there_is_one_and_is_ambiguous_otherwise():
    assert ONE.mix(["any"], 1)[0] == [[1, 0, 0, 0]]
    with pytest.raises(UsageError, match="several groups"):
        SPACE.mix(["any"], 1)


@pytest.mark.parametrize("config, merge", [
    (ModelConfig(cell="lstm", embedding_dim=8, units=16), "concat"),
    (ModelConfig(cell="lstm", embedding_dim=8, units=16, label_merge="add"), "add"),
    (ModelConfig(cell="gru", embedding_dim=8, units=16, mode="window", window=5, attention=True), "concat"),
    (ModelConfig(type="transformer", embedding_dim=8, heads=2, layers=1, context_length=16), "add"),
], ids=["lstm", "lstm-add", "window", "transformer"])
def test_labels_condition_every_architecture_and_survive_a_keras_round_trip(config, merge, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(config, TOKENIZER, labels=SPACE)
    assert find_label_embedding(model).merge == merge
    if merge == "concat" and config.mode == "sequence":  # the LSTM reads the token's 8 columns, then the label's 8
        assert model.get_layer("lstm_1").cell.kernel.shape == (16, 64)
    ids = np.tile(np.arange(8), (2, 1))
    labels = np.zeros((2, 8, 2), np.int32)
    labels[1, :, 0] = 2  # melville in the second row, any in the first: same tokens, other logits
    logits = model([ids, labels]).numpy()
    assert logits.shape == (2, 8, 9) and not np.allclose(logits[0], logits[1], atol=1e-4)
    assert model.get_layer("token_embedding").model_card["labels"] == SPACE.to_card()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded([ids, labels]).numpy(), logits)
    assert find_label_embedding(loaded).groups == SPACE.to_card() and find_label_embedding(loaded).merge == merge


def test_a_label_layer_saved_without_a_merge_adds():
    config = LabelEmbedding(SPACE.to_card(), 4, merge="concat").get_config()
    assert config["merge"] == "concat"
    del config["merge"]  # as the layer's first files were written
    assert LabelEmbedding.from_config(config).merge == "add"
    with pytest.raises(ValueError, match="merge must be add or concat"):
        LabelEmbedding(SPACE.to_card(), 4, merge="prepend")


@pytest.mark.parametrize("settings, message", [
    ({"label_merge": "sum"}, "model.label_merge must be one of auto, add, concat"),
    ({"label_merge": "concat", "type": "transformer", "embedding_dim": 8, "heads": 2},
     "model.label_merge concat would widen a transformer, whose width is model.embedding_dim; set "
     "model.label_merge=add"),
])
def test_label_merge_is_checked(settings, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**settings)


def test_a_mix_is_the_weighted_sum_of_label_vectors():
    layer = LabelEmbedding(SPACE.to_card(), 4)
    table = layer.embeddings.numpy()
    rows, _ = SPACE.mix(["author=austen:0.25,verne:0.75", "genre=play"], 1)
    np.testing.assert_allclose(layer.mix(rows).numpy()[0], 0.25 * table[1] + 0.75 * table[3] + table[6], rtol=1e-6)
    summed = layer(np.array([[[1, 2]]])).numpy()[0, 0]  # austen and play, as label ids
    np.testing.assert_allclose(summed, table[1] + table[6], rtol=1e-6)


def test_models_without_labels_keep_one_input():
    model = build_model(ModelConfig(cell="lstm", embedding_dim=8, units=16), TOKENIZER)
    assert len(model.inputs) == 1 and find_label_embedding(model) is None
    assert "labels" not in model.get_layer("token_embedding").model_card


@pytest.mark.parametrize("entries, problem", [
    ("austen", "not a list of label groups"),
    ([], "not a list of label groups"),
    ([{"name": "author"}], "not a group"),
    ([{"name": "author", "labels": ["austen"]}], "must start with 'any'"),
    ([{"name": "author", "labels": ["any", "a", "a"]}], "names a label twice"),
])
def test_a_damaged_labels_entry_is_named(entries, problem):
    assert problem in labels_problem(entries)
    assert labels_problem(SPACE.to_card()) is None


def test_a_model_file_with_a_damaged_labels_entry_is_one_line(tmp_path):
    model = build_model(ModelConfig(cell="lstm", embedding_dim=8, units=16), TOKENIZER, labels=ONE)
    embedding = model.get_layer("token_embedding")
    embedding.model_card = {**embedding.model_card, "labels": [{"name": "author", "labels": ["austen"]}]}
    model.save(tmp_path / "m.keras")
    with pytest.raises(ModelFileError, match="damaged: its model card's labels: .*must start with 'any'"):
        load_keras_model(tmp_path / "m.keras")
