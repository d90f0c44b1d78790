"""A transformer with rotary positions (`model.positions: rotary`): each position attends to the
last context_length positions, and generation's ring of keys and values past the context
gives what the whole model gives over the whole text."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from textgen.config import ModelConfig, load_config
from textgen.errors import ConfigError
from textgen.generation.generate import Generator, load_keras_model
from textgen.generation.steppers import TransformerStepper
from textgen.models.builder import architecture_summary, build_model
from textgen.models.info import model_facts
from textgen.models.transformer import PositionEmbedding, TransformerBlock, rotate
from textgen.saving import save_model_atomic

TOKENIZER = {"level": "char", "vocabulary": list("abcdefghijklmnopqrstuvwxyz")}
CONTEXT = 8


def rotary(layers: int = 2, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    config = ModelConfig(type="transformer", embedding_dim=16, heads=2, layers=layers, context_length=CONTEXT,
                         positions="rotary")
    return build_model(config, TOKENIZER)


def test_a_turned_pair_of_vectors_scores_by_the_distance_of_their_positions():
    rng = np.random.default_rng(0)
    q, k = (tf.constant(rng.normal(size=(1, 1, 1, 8)), tf.float32) for _ in range(2))

    def score(i, j):
        return float(tf.reduce_sum(rotate(q, tf.constant([i])) * rotate(k, tf.constant([j]))))
    assert score(5, 2) == pytest.approx(score(103, 100), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)
    assert float(tf.reduce_sum(q * k)) == pytest.approx(score(7, 7), abs=1e-5)  # no turn at distance 0
    np.testing.assert_allclose(rotate(q, tf.constant([0])), q, atol=1e-7)


def test_the_model_has_no_position_embedding_and_attends_to_the_last_context_positions():
    model = rotary(layers=1)
    assert not [layer for layer in model.layers if isinstance(layer, PositionEmbedding)]
    ids = np.random.default_rng(1).integers(0, 26, size=(2, 30)).astype(np.int32)
    full = model(ids).numpy()
    # One block: position t reads positions t-7 .. t only, however long the text before them.
    np.testing.assert_allclose(full[:, -1], model(ids[:, -CONTEXT:]).numpy()[:, -1], atol=1e-5)
    changed = ids.copy()
    changed[:, -CONTEXT] = (changed[:, -CONTEXT] + 1) % 26  # inside the window: the output moves
    assert np.abs(model(changed).numpy()[:, -1] - full[:, -1]).max() > 1e-4
    # Inside the context it is an ordinary causal model: a later token leaves earlier outputs alone.
    changed = ids.copy()
    changed[:, 5] = (changed[:, 5] + 1) % 26
    np.testing.assert_allclose(model(changed).numpy()[:, :5], full[:, :5], atol=1e-6)


def test_ring_steps_equal_the_whole_model_over_the_whole_text_past_the_context():
    model = rotary(layers=2)
    stepper = TransformerStepper(model)
    assert stepper.position_limit is None and stepper.context == CONTEXT
    ids = np.random.default_rng(2).integers(0, 26, size=(2, 3 * CONTEXT + 5)).astype(np.int32)
    full = model(ids).numpy()
    states = stepper.initial_states(2)
    for t in range(ids.shape[1]):
        logits, states = stepper.step(tf.constant(ids[:, t]), states)
        np.testing.assert_allclose(logits, full[:, t], atol=1e-4)
    assert states[0][0].numpy().tolist() == [[ids.shape[1]]] * 2  # the position keeps counting past the ring's length
    # Two blocks see back 2 x 7 positions: the ring is not the last 8 tokens re-fed.
    assert np.abs(full[:, -1] - model(ids[:, -CONTEXT:]).numpy()[:, -1]).max() > 1e-4


@pytest.mark.slow  # make test holds the ring's steps to the whole model; this adds the Generator's loops
def test_greedy_text_past_the_context_equals_re_feeding_the_whole_text_each_token():
    model = rotary(layers=2, seed=3)
    generator = Generator(model)
    seed = "thequickbrownfox"  # longer than the context: priming runs through the ring too
    text = generator.generate(seed, length=3 * CONTEXT, temperature=0)[0]
    ids = list(generator.tokenizer.encode(seed))
    for _ in range(3 * CONTEXT):
        ids.append(int(np.argmax(model(np.array([ids], np.int32)).numpy()[0, -1])))
    assert text == generator.tokenizer.decode(ids[len(seed):])
    assert len(set(text)) > 2  # the untrained model does not write one letter over and over
    sampled = dict(length=2 * CONTEXT, temperature=1.0, random_seed=4, num_samples=3)
    assert generator.generate(seed, **sampled) == generator.generate(seed, **sampled)


def test_a_rotary_model_round_trips_through_its_file_and_says_what_it_is(tmp_path):
    model = rotary(layers=2, seed=5)
    path = tmp_path / "rotary.keras"
    save_model_atomic(model, path)
    loaded = load_keras_model(path)
    blocks = [layer for layer in loaded.layers if isinstance(layer, TransformerBlock)]
    assert [block.window for block in blocks] == [CONTEXT, CONTEXT]
    assert TransformerBlock.from_config(blocks[0].get_config()).get_config() == blocks[0].get_config()
    ids = np.random.default_rng(6).integers(0, 26, size=(1, 20)).astype(np.int32)
    np.testing.assert_allclose(loaded(ids).numpy(), model(ids).numpy(), atol=1e-6)
    facts = model_facts(loaded)
    assert facts["positions"] == "rotary" and facts["context_length"] == CONTEXT
    assert "one position a token" in facts["generation"]
    summary = architecture_summary(ModelConfig(type="transformer", embedding_dim=16, heads=2, positions="rotary"))
    assert summary.endswith("rotary positions")
    with pytest.raises(ValueError, match="always steps with its cache"):
        TransformerStepper(loaded, cached=False)


@pytest.mark.parametrize("overrides, message", [
    (["model.type=transformer", "model.positions=relative"], "model.positions must be one of learned, rotary"),
    (["model.type=transformer", "model.positions=rotary", "model.embedding_dim=12", "model.heads=4"],
     "each head's width (model.embedding_dim / model.heads = 3) must be even"),
])
def test_bad_positions_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    assert message in str(caught.value) and "\n" not in str(caught.value)
