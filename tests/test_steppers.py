"""Every cell kind's gates, as generation and fused training run them, against Keras's own layers.

Each kind's gate arithmetic (textgen.models.cells) is written once and run by the row
stepper, the packed column stepper and the fused training kernel; these tests hold every
kind to the Keras layer's outputs in both stepper layouts, in float32 and bfloat16, and its
backward pass to the gradient TensorFlow derives from its forward gates.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from textgen.config import CELLS, ModelConfig
from textgen.generation.steppers import CellStepper, PackedColumnStepper, RecurrentStepper, make_stepper
from textgen.models import cells
from textgen.models.builder import build_model, recurrent_layers

TOKENIZER = {"level": "char", "vocabulary": sorted("abcdefghijklmnopqrstuvwxyz .,")}
IDS = np.random.default_rng(7).integers(0, len(TOKENIZER["vocabulary"]), size=(3, 10)).astype(np.int32)


def model_of(cell: str, scale: float = 2.0):
    """Two layers of `cell`, with weights scaled so a dropped or swapped weight would show."""
    keras.utils.set_random_seed(11)
    model = build_model(ModelConfig(cell=cell, embedding_dim=6, units=10, layers=2), TOKENIZER)
    for weight in model.weights:
        weight.assign(weight * scale)
    return model


def layer_outputs(model, ids):
    """Each recurrent layer's outputs (batch, time, units) and the logits, from Keras's layers."""
    outputs = [layer.output for layer in recurrent_layers(model)] + [model.output]
    return [y.numpy() for y in keras.Model(model.input, outputs)(ids)]


def run(stepper, ids):
    """Every step's logits and each layer's h, as (batch, time, ...) arrays in rows."""
    states = stepper.initial_states(ids.shape[0])
    logits, hs = [], []
    for t in range(ids.shape[1]):
        step_logits, states = stepper.step(tf.constant(ids[:, t]), states)
        logits.append(step_logits.numpy())
        hs.append([np.asarray(layer[0]).T if stepper.batch_axis == 1 else np.asarray(layer[0]) for layer in states])
    return np.stack(logits, 1), [np.stack([h[i] for h in hs], 1) for i in range(len(hs[0]))]


def test_every_registered_cell_kind_is_a_model_cell_choice():
    assert set(CELLS) == {kind.name for kind in cells.kinds()} >= {"lstm", "gru", "simple_rnn", "peephole_lstm", "mgu"}
    for kind in cells.kinds():
        assert cells.get(kind.name) is kind and cells.for_cell(kind.make_cell(4, None)
                                                               if kind.layer_class is None else
                                                               kind.layer_class(4).cell) is kind


@pytest.mark.parametrize("cell", CELLS)
def test_row_and_column_steps_equal_the_keras_layers_in_float32(cell):
    model = model_of(cell)
    *expected_hs, expected_logits = layer_outputs(model, IDS)
    steppers = [make_stepper(model), PackedColumnStepper(model, tf.float32, one_hot=True),
                PackedColumnStepper(model, tf.float32, one_hot=False)]
    assert isinstance(steppers[0], RecurrentStepper)  # every kind has raw-op steps
    for stepper in steppers:
        logits, hs = run(stepper, IDS)
        np.testing.assert_allclose(logits, expected_logits, atol=2e-5, err_msg=type(stepper).__name__)
        for h, expected in zip(hs, expected_hs):
            np.testing.assert_allclose(h, expected, atol=2e-6, err_msg=type(stepper).__name__)


@pytest.mark.parametrize("cell", CELLS)
def test_row_and_column_steps_in_bfloat16_stay_close_to_the_keras_layers(cell):
    model = model_of(cell, scale=1.0)
    *expected_hs, expected_logits = layer_outputs(model, IDS)
    for stepper in (RecurrentStepper(model, tf.bfloat16), PackedColumnStepper(model, tf.bfloat16)):
        logits, hs = run(stepper, IDS)
        for h, expected in zip(hs, expected_hs):
            worst = np.abs(h - expected).max()
            assert 0 < worst < 3e-2, (type(stepper).__name__, worst)  # rounded, and only rounded
        probs, expected_probs = tf.nn.softmax(logits).numpy(), tf.nn.softmax(expected_logits).numpy()
        assert np.abs(probs - expected_probs).max() < 2e-2


def test_cells_with_options_no_kind_computes_step_through_the_keras_cell():
    ids = keras.Input((None,), dtype="int32")
    model = build_model(ModelConfig(cell="gru", embedding_dim=6, units=8), TOKENIZER)
    x = model.get_layer("token_embedding")(ids)
    x = keras.layers.GRU(8, reset_after=False, return_sequences=True)(x)
    x = keras.layers.LSTM(8, activation="relu", return_sequences=True)(x)
    odd = keras.Model(ids, keras.layers.Dense(len(TOKENIZER["vocabulary"]))(x))
    assert [cells.for_cell(layer.cell).supports(layer.cell) for layer in recurrent_layers(odd)] == [False, False]
    stepper = make_stepper(odd)
    assert isinstance(stepper, CellStepper) and not PackedColumnStepper.supports(odd)
    logits, _ = run(stepper, IDS)
    np.testing.assert_allclose(logits, odd(IDS).numpy(), atol=1e-5)


@pytest.mark.parametrize("name", [kind.name for kind in cells.kinds() if kind.fused_class])
def test_the_fused_backward_is_the_gradient_of_the_gates(name):
    """gates_backward against TensorFlow's own derivative of gates, at random points."""
    kind = cells.get(name)
    rng = np.random.default_rng(3)
    z = [tf.constant(rng.normal(size=(4, 5)) * 2, tf.float32) for _ in range(kind.blocks)]
    states = [tf.constant(rng.normal(size=(4, 5)), tf.float32) for _ in range(kind.states)]
    d_new = [tf.constant(rng.normal(size=(4, 5)), tf.float32) for _ in range(kind.states)]
    with tf.GradientTape() as tape:
        tape.watch(z + states)
        _, new_states, saved = kind.gates(z, states, None)
        loss = sum(tf.reduce_sum(s * d) for s, d in zip(new_states, d_new))
    expected = tape.gradient(loss, z + states, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    dz, d_previous = kind.gates_backward(saved, d_new)
    for got, want in zip(dz, expected[:kind.blocks]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if not kind.gates_read_h:  # h_{t-1} reaches the gates only through the recurrent product
        assert d_previous[0] is None and not np.any(expected[kind.blocks])
        d_previous = [expected[kind.blocks], *d_previous[1:]]
    for got, want in zip(d_previous, expected[kind.blocks:]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
