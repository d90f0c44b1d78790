"""The minimal gated unit, the cell added through the cell-kind registry alone: its equations,
its layer contract, training on the bundled corpus, saving, and generation equal to the Keras cell's."""

import keras
import numpy as np
import tensorflow as tf
from click.testing import CliRunner

from conftest import tiny_overrides
from textgen.cli.main import cli
from textgen.config import ModelConfig
from textgen.generation.generate import Generator, load_keras_model
from textgen.generation.steppers import CellStepper, PackedColumnStepper, RecurrentStepper
from textgen.models.builder import build_model, recurrent_layers
from textgen.models.cells.mgu import MGUCell
from textgen.models.info import model_facts
from textgen.models.layers import find_token_embedding
from textgen.training.train import train

TOKENIZER = {"level": "char", "vocabulary": sorted("abcdefghijklmnopqrstuvwxyz ")}


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_mgu_step_matches_the_equations_by_hand():
    rng = np.random.default_rng(0)
    cell = MGUCell(4)
    cell.build((None, 3))
    for w in cell.weights:  # non-zero biases too
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.7)
    x, h = rng.normal(size=(2, 3)).astype("float32"), rng.normal(size=(2, 4)).astype("float32")
    out, (state,) = cell(x, [h])
    W, U, b = (np.asarray(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
    f = sigmoid(x @ W[:, :4] + h @ U[:, :4] + b[:4])
    candidate = np.tanh(x @ W[:, 4:] + (f * h) @ U[:, 4:] + b[4:])
    np.testing.assert_allclose(out, (1 - f) * h + f * candidate, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state, out)


def test_mgu_cell_round_trips(tmp_path):
    cell = MGUCell(6, recurrent_initializer="zeros", bias_initializer="ones", name="mgu")
    config = cell.get_config()
    again = MGUCell.from_config(config)
    assert again.get_config() == config
    assert (again.units, again.name, type(again.bias_initializer).__name__) == (6, "mgu", "Ones")  # not defaults
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.RNN(MGUCell(6), return_sequences=True)])
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def mgu_model(layers=2, seed=0):
    """An untrained MGU model with doubled weights, so its text depends on every weight."""
    keras.utils.set_random_seed(seed)
    model = build_model(ModelConfig(cell="mgu", embedding_dim=8, units=12, layers=layers), TOKENIZER)
    for weight in model.weights:
        weight.assign(weight * 2.0)
    return model


def test_mgu_model_builds_with_its_cell_and_steps_like_the_whole_model():
    model = mgu_model()
    assert [type(layer.cell) for layer in recurrent_layers(model)] == [MGUCell, MGUCell]
    ids = np.random.default_rng(2).integers(0, 27, size=(3, 9)).astype(np.int32)
    full = model(ids).numpy()
    steppers = [RecurrentStepper(model), CellStepper(model), PackedColumnStepper(model, tf.float32)]
    for stepper in steppers:
        states = stepper.initial_states(3)
        for t in range(9):
            logits, states = stepper.step(tf.constant(ids[:, t]), states)
            np.testing.assert_allclose(logits, full[:, t], atol=1e-5, err_msg=type(stepper).__name__)


def test_mgu_generates_the_text_of_the_keras_cell_reference_stepper():
    model = mgu_model()
    fast = Generator(model)
    assert isinstance(fast.stepper, RecurrentStepper)
    reference = Generator(model)
    reference.stepper = CellStepper(model)
    reference._steppers = {key: reference.stepper for key in reference._steppers}
    for options in ({"temperature": 0}, {"temperature": 1.0, "random_seed": 4, "num_samples": 3}):
        text = fast.generate("the cat ", length=60, **options)
        assert text == reference.generate("the cat ", length=60, **options)
    assert len(set(fast.generate("the cat ", length=60, temperature=0)[0])) > 3


def test_mgu_trains_on_the_bundled_corpus_and_round_trips_through_its_file(small_corpus, tmp_path):
    config_overrides = tiny_overrides(small_corpus, tmp_path / "run", **{"model.cell": "mgu", "training.epochs": 2})
    from textgen.config import load_config

    result = train(load_config(None, config_overrides), echo=lambda _: None, verbose=0)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0]
    loaded = load_keras_model(result.model_path)
    assert find_token_embedding(loaded).model_card["architecture"]["cell"] == "mgu"  # written by training
    assert model_facts(loaded)["cell"] == "MGUCell"
    generator = Generator(loaded)
    assert isinstance(generator.stepper, RecurrentStepper)
    text = generator.generate("First", length=40, temperature=0)[0]
    reference = Generator(loaded)
    reference.stepper = CellStepper(loaded)
    reference._steppers = {key: reference.stepper for key in reference._steppers}
    assert len(text) == 40 and text == reference.generate("First", length=40, temperature=0)[0]


def test_train_command_accepts_model_cell_mgu(small_corpus, tmp_path):
    sets = [a for o in tiny_overrides(small_corpus, tmp_path / "run", **{"model.cell": "mgu", "training.epochs": 1,
                                                                         "training.steps_per_epoch": 2})
            for a in ("--set", o)]
    result = CliRunner().invoke(cli, ["train", *sets])
    assert result.exit_code == 0, result.output
    assert "model: mgu x 1, 32 units" in result.output
    assert (tmp_path / "run" / "model.keras").is_file()
