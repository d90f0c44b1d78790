"""Every architecture: builds, trains with falling loss, saves, loads in a fresh process and
generates; steppers agree with the full model; the transformer's cache changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from textgen.config import ARCHITECTURE_KEYS, ModelConfig, load_config
from textgen.errors import ConfigError, ModelFileError
from textgen.generation.generate import Generator, load_keras_model
from textgen.models.architecture import _legacy_architecture, architecture, architecture_card
from textgen.models.layers import find_token_embedding
from textgen.models.builder import build_model, recurrent_layers
from textgen.models.info import describe_model
from textgen.generation.steppers import CellStepper, RecurrentStepper, TransformerStepper, WindowStepper, make_stepper
from textgen.models.window import AttentionPooling, WindowFrames, WindowUnframe

from conftest import tiny_overrides
from test_bad_input import rewrite_keras_config, walk

TOKENIZER = {"level": "char", "vocabulary": list("abcdefghijklmnopqrstuvwxyz")}

ARCHITECTURES = {
    "simple_rnn": {"model.cell": "simple_rnn"},
    "gru_stacked": {"model.cell": "gru", "model.layers": 2},
    "lstm": {"model.cell": "lstm"},
    "peephole_lstm": {"model.cell": "peephole_lstm"},
    "window": {"model.cell": "gru", "model.mode": "window", "model.window": 8, "model.bidirectional": "true",
               "model.attention": "true", "model.layers": 2, "model.units": 16},
    "transformer": {"model.type": "transformer", "model.embedding_dim": 32, "model.heads": 4, "model.layers": 2,
                    "model.context_length": 32, "model.dropout": 0.0},
}


@pytest.fixture(scope="module")
def trained(small_corpus, tmp_path_factory):
    """Each architecture trained for three short epochs: {name: (model path, history rows, lines echoed)}."""
    from textgen.training.train import train

    results = {}
    for name, overrides in ARCHITECTURES.items():
        out = tmp_path_factory.mktemp(name) / "run"
        settings = {"training.epochs": 3, "training.steps_per_epoch": 8, "training.batch_size": 16,
                    "training.seq_length": 24, "training.learning_rate": 0.01, **overrides}
        config = load_config(None, tiny_overrides(small_corpus, out, **settings))
        lines = []
        result = train(config, echo=lines.append, verbose=0)
        results[name] = (result.model_path, result.history, lines)
    return results


@pytest.mark.slow
def test_every_architecture_trains_with_falling_loss(trained):
    for name, (_, history, _) in trained.items():
        losses = [row["loss"] for row in history]
        assert losses[-1] < losses[0] - 0.1, (name, losses)


@pytest.mark.slow
def test_keys_an_architecture_does_not_read_are_named_when_training_starts(trained):
    notes = {name: [line for line in lines if line.startswith("note: not read")]
             for name, (_, _, lines) in trained.items()}
    # tiny_overrides sets a GRU of 32 units, which the transformer has no use for
    assert notes.pop("transformer") == [
        "note: not read by this model, so ignored: model.cell=gru (rnn only), model.units=32 (rnn only)"]
    assert notes == {name: [] for name in notes}


@pytest.mark.slow
def test_every_architecture_loads_in_a_fresh_process_and_generates(trained):
    """One subprocess: load each file, check stepped logits against the Keras model, generate by CLI code."""
    paths = {name: str(path) for name, (path, _, _) in trained.items()}
    script = f"""
import json, numpy as np, tensorflow as tf, textgen
from textgen.generation.generate import load_keras_model, Generator
out = {{}}
for name, path in json.loads({json.dumps(json.dumps(paths))}).items():
    model = load_keras_model(path)
    gen = Generator(model)
    ids = gen.tokenizer.encode("First Citizen:\\nBefore we proceed")[:20].astype(np.int32)
    full = model(ids[None]).numpy()[0]
    states = gen.stepper.initial_states(1)
    worst = 0.0
    for t, token in enumerate(ids):
        logits, states = gen.stepper.step(tf.constant([token]), states)
        worst = max(worst, float(np.abs(logits.numpy()[0] - full[t]).max()))
    texts = gen.generate("First", length=40, temperature=0.8, random_seed=3, num_samples=2)
    again = gen.generate("First", length=40, temperature=0.8, random_seed=3, num_samples=2)
    out[name] = {{"worst": worst, "texts": texts, "same": texts == again, "stepper": type(gen.stepper).__name__}}
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report) == set(ARCHITECTURES)
    for name, facts in report.items():
        assert facts["worst"] < 1e-3, (name, facts["worst"])
        assert all(len(text) == 40 for text in facts["texts"]), (name, facts["texts"])
        assert facts["same"], name
    assert report["peephole_lstm"]["stepper"] == "RecurrentStepper"
    assert report["window"]["stepper"] == "WindowStepper"
    assert report["transformer"]["stepper"] == "TransformerStepper"
    assert report["gru_stacked"]["stepper"] == "RecurrentStepper"


@pytest.mark.slow
def test_every_architecture_fine_tunes_from_its_saved_config(trained, small_corpus, tmp_path):
    """--init-from rebuilds whatever architecture the parent has, from the config in its card,
    and starts from its weights, whatever the new config's model section says (a GRU 32)."""
    from textgen.training.train import train

    for name, (path, _, _) in trained.items():
        parent = find_token_embedding(load_keras_model(path)).model_card
        settings = {"training.epochs": 1, "training.steps_per_epoch": 2, "training.batch_size": 16,
                    "training.seq_length": 24, "training.init_from": str(path)}
        result = train(load_config(None, tiny_overrides(small_corpus, tmp_path / name, **settings)),
                       echo=lambda _: None, verbose=0)
        assert result.initial_val_loss == pytest.approx(parent["history"]["best_loss"], abs=1e-4), name
        child = find_token_embedding(load_keras_model(result.model_path)).model_card["config"]["model"]
        assert {k: child[k] for k in ARCHITECTURE_KEYS} == {k: parent["config"]["model"][k] for k in ARCHITECTURE_KEYS}


def _transformer(context=8):
    keras.utils.set_random_seed(0)
    return build_model(ModelConfig(type="transformer", embedding_dim=16, heads=2, layers=2, context_length=context),
                       TOKENIZER)


def test_transformer_cached_steps_equal_window_refeed_past_the_context():
    model = _transformer(context=8)
    cached, uncached = TransformerStepper(model), TransformerStepper(model, cached=False)
    ids = np.random.default_rng(0).integers(0, 26, size=(2, 20)).astype(np.int32)
    s1, s2 = cached.initial_states(2), uncached.initial_states(2)
    for t in range(ids.shape[1]):
        a, s1 = cached.step(tf.constant(ids[:, t]), s1)
        b, s2 = uncached.step(tf.constant(ids[:, t]), s2)
        np.testing.assert_allclose(a, b, atol=1e-4)
        # Both equal the Keras model on the last (at most) 8 tokens.
        window = ids[:, max(0, t - 7): t + 1]
        np.testing.assert_allclose(a, model(window).numpy()[:, -1], atol=1e-4)


@pytest.mark.slow  # test_transformer checks the cached steps against the full pass in make test
def test_transformer_cached_generation_equals_uncached_generation():
    model = _transformer(context=8)
    cached = Generator(model)
    reference = Generator(model)
    reference.stepper = TransformerStepper(model, cached=False)
    reference._steppers = {key: reference.stepper for key in reference._steppers}
    for options in ({"temperature": 0}, {"temperature": 1.0, "random_seed": 5, "num_samples": 3}):
        assert cached.generate("abc", length=30, **options) == reference.generate("abc", length=30, **options)


def test_window_stepper_matches_the_model_and_pads_like_training():
    keras.utils.set_random_seed(1)
    model = build_model(ModelConfig(cell="lstm", mode="window", window=5, units=8, embedding_dim=6,
                                    bidirectional=True, attention=True), TOKENIZER)
    stepper = make_stepper(model)
    assert isinstance(stepper, WindowStepper)
    ids = np.random.default_rng(2).integers(0, 26, size=(3, 12)).astype(np.int32)
    full = model(ids).numpy()
    states = stepper.initial_states(3)
    for t in range(12):
        logits, states = stepper.step(tf.constant(ids[:, t]), states)
        np.testing.assert_allclose(logits, full[:, t], atol=1e-5)
    # Position t depends only on the window ending at t.
    changed = ids.copy()
    changed[:, :4] = (changed[:, :4] + 1) % 26
    np.testing.assert_allclose(model(changed).numpy()[:, 9:], full[:, 9:], atol=1e-5)
    assert not np.allclose(model(changed).numpy()[:, 4], full[:, 4])


def test_peephole_model_steps_statefully():
    """The raw-op peephole step (what generation uses) and the Keras cell called per token
    (CellStepper, the fallback for cells without one) both equal the whole model's logits."""
    keras.utils.set_random_seed(2)
    model = build_model(ModelConfig(cell="peephole_lstm", units=8, embedding_dim=6, layers=2), TOKENIZER)
    # Larger peephole weights, so a step that dropped or swapped a peephole would show.
    for layer in recurrent_layers(model):
        layer.cell.peephole_kernel.assign(layer.cell.peephole_kernel * 4)
    raw = make_stepper(model)
    assert isinstance(raw, RecurrentStepper)
    ids = np.random.default_rng(3).integers(0, 26, size=(2, 10)).astype(np.int32)
    full = model(ids).numpy()
    for stepper in (raw, CellStepper(model)):
        states = stepper.initial_states(2)
        for t in range(10):
            logits, states = stepper.step(tf.constant(ids[:, t]), states)
            np.testing.assert_allclose(logits, full[:, t], atol=1e-5)


def test_describe_model_names_each_kind():
    window = build_model(ModelConfig(cell="gru", mode="window", window=7, units=8, embedding_dim=4), TOKENIZER)
    facts = describe_model(window)
    assert facts["mode"] == "window" and facts["window"] == 7 and "re-feeds the last 7 tokens" in facts["generation"]
    assert facts["cell"] == "GRU (window)"  # textgen info tells it from a sequence GRU
    facts = describe_model(_transformer(context=8))
    assert facts["type"] == "transformer" and facts["context_length"] == 8 and facts["heads"] == 2


def test_window_layers_round_trip():
    for layer in (WindowFrames(5, name="f"), WindowUnframe(name="u"), AttentionPooling(name="a")):
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config
    x = np.arange(2 * 4 * 3, dtype="float32").reshape(2, 4, 3)
    frames = WindowFrames(3)(x).numpy().reshape(2, 4, 3, 3)
    np.testing.assert_array_equal(frames[0, 0, :2], 0)  # before the start: zero vectors
    np.testing.assert_array_equal(frames[1, 3], x[1, 1:4])


@pytest.mark.parametrize("overrides, message", [
    (["model.bidirectional=true"], "model.bidirectional would let sequence mode see the future"),
    (["model.attention=true"], "model.attention averages over a window's outputs; set model.mode=window"),
    (["model.type=transformer", "model.embedding_dim=30", "model.heads=4"],
     "model.heads (4) must divide model.embedding_dim (30)"),
    (["model.type=transformer", "model.mode=window"], "model.mode applies to model.type=rnn"),
    (["model.type=transformer", "model.context_length=64", "training.seq_length=100"],
     "training.seq_length (100) exceeds model.context_length (64)"),
    (["model.cell=peephole"], "did you mean peephole_lstm?"),
    (["model.mode=window", "model.window=40", "training.seq_length=32"],
     "model.window (40) is longer than training.seq_length (32): training would never show the model a full "
     "window of text"),
    (["model.type=cnn"], "model.type must be one of rnn, transformer"),
])
def test_invalid_combinations_are_explained(overrides, message):
    with pytest.raises(ConfigError, match=None) as caught:
        load_config(None, overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_info_says_window_models_refeed_their_window():
    from textgen.models.info import model_facts

    window = build_model(ModelConfig(cell="gru", mode="window", window=7, units=8, embedding_dim=4), TOKENIZER)
    facts = model_facts(window)
    assert facts["mode"] == "window" and facts["window"] == 7
    assert facts["generation"] == "re-feeds the last 7 tokens through the network for every new token"
    sequence = model_facts(build_model(ModelConfig(cell="gru", units=8, embedding_dim=4), TOKENIZER))
    assert sequence["mode"] == "sequence" and "generation" not in sequence
    assert sequence["units"] == [8] and sequence["cell"] == "GRU"
    transformer = model_facts(_transformer(context=8))
    assert "cell" not in transformer and "units" not in transformer  # blocks, not recurrent cells
    assert transformer["heads"] == 2 and transformer["layers"] == 2 and "re-fed" in transformer["generation"]


CARD_CASES = {
    "lstm": dict(cell="lstm", layers=2),
    "mgu": dict(cell="mgu"),
    "window": dict(cell="gru", mode="window", window=5, bidirectional=True, attention=True, layers=2),
    "transformer": dict(type="transformer", embedding_dim=16, heads=2, layers=2, context_length=8),
    "transformer_rotary": dict(type="transformer", embedding_dim=16, heads=2, layers=2, context_length=8,
                               positions="rotary"),
}


def _without_architecture(config):
    for node in walk(config):
        if isinstance(node.get("model_card"), dict):
            node["model_card"].pop("architecture", None)
    return config


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name == "transformer_rotary" else name
                                  for name in CARD_CASES])  # test_rotary round-trips a rotary file in make test
def test_the_model_card_names_the_architecture_and_older_files_read_the_same(name, tmp_path):
    keras.utils.set_random_seed(4)
    config = ModelConfig(**{"embedding_dim": 8, "units": 8, **CARD_CASES[name]})
    model = build_model(config, TOKENIZER, model_card={"note": "kept"})
    embedding = find_token_embedding(model)
    written = embedding.model_card["architecture"]
    assert written == architecture_card(config) and embedding.model_card["note"] == "kept"
    assert written["type"] == config.type and written.get("mode", "sequence") == config.mode
    assert _legacy_architecture(model) == written  # what a file without the entry is read as
    path, old_path = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(path)
    rewrite_keras_config(path, old_path, _without_architecture)
    new, old = load_keras_model(path), load_keras_model(old_path)
    assert "architecture" not in find_token_embedding(old).model_card
    assert architecture(old) == architecture(new) == written
    assert describe_model(old) == describe_model(new)
    generate = dict(length=25, temperature=0.8, random_seed=3, num_samples=2)
    assert Generator(old).generate("abc", **generate) == Generator(new).generate("abc", **generate)


def test_a_damaged_architecture_entry_is_refused_in_one_line(tmp_path):
    model = build_model(ModelConfig(cell="gru", embedding_dim=4, units=4), TOKENIZER)
    path = tmp_path / "m.keras"
    model.save(path)
    for damage, words in (({"type": "cnn"}, "architecture.type is 'cnn'"),
                          ({"type": "rnn", "mode": "sequence", "cell": "lstn"}, "architecture.cell is 'lstn'"),
                          ({"type": "rnn", "mode": "sequence", "cell": "gru", "units": "8"}, "architecture.units"),
                          ("rnn", "architecture is 'rnn', not a mapping")):
        def change(config, damage=damage):
            for node in walk(config):
                if isinstance(node.get("model_card"), dict):
                    node["model_card"]["architecture"] = damage
            return config

        rewrite_keras_config(path, tmp_path / "damaged.keras", change)
        with pytest.raises(ModelFileError) as caught:
            load_keras_model(tmp_path / "damaged.keras")
        assert words in str(caught.value) and "damaged" in str(caught.value) and "\n" not in str(caught.value)
