"""Weight averaging (training.ema_momentum) with real training runs: the average follows its
formula, validation and model.keras use it, the checkpoint keeps it and a resumed run
continues it exactly."""

import json

import keras
import numpy as np
import pytest

from conftest import tiny_overrides, validation_loss_of
from textgen.training.averaging import WeightAverager, momentum_at
from textgen.training.callbacks import StopGuard, TrainingStopped, global_step
from textgen.training.checkpoint import checkpoint_dir, read_averages, read_state
from textgen.config import load_config
from textgen.errors import ConfigError
from textgen.saving import load_keras_model
from textgen.models.info import model_facts
from textgen.models.layers import find_token_embedding
from textgen.training.train import TrainingInterrupted, train

MOMENTUM = 0.9


def quiet(_):
    pass


def config_for(corpus, out, **extra):
    return load_config(None, tiny_overrides(corpus, out, **{"training.ema_momentum": MOMENTUM, **extra}))


class WeightLog(keras.callbacks.Callback):
    """The trained weights at the start and after every step (runs after textgen's callbacks)."""

    def __init__(self):
        super().__init__()
        self.steps: list[list[np.ndarray]] = []

    def on_train_begin(self, logs=None):
        if not self.steps:
            self.steps.append(self.snapshot())

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self.snapshot())

    def snapshot(self):
        return [v.numpy().copy() for v in self.model.trainable_variables]


def expected_average(steps: list[list[np.ndarray]], momentum: float, upto: int) -> list[np.ndarray]:
    average = [w.astype(np.float64) for w in steps[0]]
    for t in range(1, upto + 1):
        mu = momentum_at(momentum, t)
        average = [mu * a + (1 - mu) * w for a, w in zip(average, steps[t])]
    return average


def saved_weights(path) -> list[np.ndarray]:
    return [v.numpy() for v in load_keras_model(path).trainable_variables]


def assert_weights_close(actual, expected, atol=1e-6):
    assert [a.shape for a in actual] == [e.shape for e in expected]
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=0, atol=atol)


def test_momentum_ramps_up_to_its_setting():
    assert momentum_at(0.995, 1) == pytest.approx(2 / 11)
    assert momentum_at(0.995, 100) == pytest.approx(101 / 110)
    assert momentum_at(0.995, 10_000) == 0.995
    with pytest.raises(ValueError, match="momentum"):
        WeightAverager(1.0)


def test_model_keras_and_validation_hold_the_average_and_the_checkpoint_both(small_corpus, tmp_path):
    log = WeightLog()
    messages = []
    settings = {"training.epochs": 1, "training.steps_per_epoch": 12, "training.sample_every": 1}
    result = train(config_for(small_corpus, tmp_path / "run", **settings), echo=messages.append, verbose=0,
                   callbacks=(log,))
    assert any("weight averaging: momentum 0.9" in m for m in messages)
    assert any(m.startswith("--- sample at temperature") for m in messages)  # drawn inside the swap
    assert result.global_step == 12 and len(log.steps) == 13
    average = expected_average(log.steps, MOMENTUM, 12)
    assert_weights_close(saved_weights(result.model_path), average)
    # The average is not the trained weights: they moved on; the checkpoint keeps both.
    assert max(np.abs(a - w).max() for a, w in zip(average, log.steps[-1])) > 1e-3
    state = read_state(tmp_path / "run")
    assert state["averaging"] == {"momentum": MOMENTUM, "count": 12}
    assert_weights_close(read_averages(tmp_path / "run", state), average)
    # history's val_loss is the averaged model's, the model generation loads.
    np.testing.assert_allclose(result.history[0]["val_loss"], validation_loss_of(result.model_path, small_corpus),
                               rtol=1e-5)
    assert model_facts(load_keras_model(result.model_path))["weights"] == f"averaged, ema_momentum {MOMENTUM}"


def test_a_budget_stop_part_way_scores_and_keeps_the_average(small_corpus, tmp_path, monkeypatch):
    original = StopGuard._check
    log = WeightLog()

    def check(self):
        if global_step(self.model) == 8:
            log.on_train_batch_end(7)  # the guard stops fit before the log's own turn
            raise TrainingStopped("time")
        original(self)

    monkeypatch.setattr(StopGuard, "_check", check)
    # float32: the card's loss is scored in training's precision and compared below with a float32
    # evaluation of the saved model, which bfloat16 products (auto on CPUs with bfloat16 units) move by ~1e-4.
    settings = {"training.steps_per_epoch": 5, "training.epochs": 3, "training.learning_rate": 0.02,
                "training.max_minutes": 60, "training.precision": "float32"}
    stopped = train(config_for(small_corpus, tmp_path / "run", **settings), echo=quiet, verbose=0, callbacks=(log,))
    assert stopped.stopped == "time_limit" and stopped.best_step == 8
    assert_weights_close(saved_weights(stopped.model_path), expected_average(log.steps, MOMENTUM, 8))
    card = find_token_embedding(load_keras_model(stopped.model_path)).model_card["history"]
    np.testing.assert_allclose(card["best_loss"], validation_loss_of(stopped.model_path, small_corpus), rtol=1e-5)


def test_a_resumed_run_continues_the_same_average(small_corpus, tmp_path, monkeypatch):
    settings = {"training.epochs": 3, "training.steps_per_epoch": 6, "training.checkpoint_every": 0}
    straight = train(config_for(small_corpus, tmp_path / "straight", **settings), echo=quiet, verbose=0)

    original = StopGuard.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        if global_step(self.model) == 9:  # the middle of epoch 2
            self.request.reason = "SIGINT"
        original(self, batch, logs)

    monkeypatch.setattr(StopGuard, "on_train_batch_end", on_train_batch_end)
    config = config_for(small_corpus, tmp_path / "run", **settings)
    with pytest.raises(TrainingInterrupted):
        train(config, echo=quiet, verbose=0)
    monkeypatch.undo()
    state = read_state(tmp_path / "run")
    assert state["global_step"] == 9 and state["averaging"]["count"] == 9
    assert sorted(p.name for p in checkpoint_dir(tmp_path / "run").glob("step-*")) == \
        ["step-000000009.average.npz", "step-000000009.weights.h5"]

    resumed = train(config, resume=True, echo=quiet, verbose=0)
    assert resumed.global_step == straight.global_step == 18
    np.testing.assert_allclose([r["val_loss"] for r in resumed.history], [r["val_loss"] for r in straight.history],
                               rtol=1e-5)
    assert_weights_close(saved_weights(resumed.model_path), saved_weights(straight.model_path), atol=1e-5)
    assert read_state(tmp_path / "run")["averaging"]["count"] == 18


def test_averaging_switched_on_at_resume_starts_from_the_weights_then(small_corpus, tmp_path):
    settings = {"training.epochs": 1, "training.steps_per_epoch": 4}
    plain = load_config(None, tiny_overrides(small_corpus, tmp_path / "run", **settings))
    train(plain, echo=quiet, verbose=0)
    assert read_state(tmp_path / "run")["average"] is None
    messages = []
    more = config_for(small_corpus, tmp_path / "run", **{**settings, "training.epochs": 2})
    result = train(more, resume=True, echo=messages.append, verbose=0)
    assert any("starts now" in m for m in messages)
    assert result.global_step == 8 and read_state(tmp_path / "run")["averaging"]["count"] == 4


@pytest.mark.parametrize("value", ["1.0", "-0.1", "2"])
def test_momentum_outside_0_1_is_a_config_error(small_corpus, tmp_path, value):
    with pytest.raises(ConfigError, match=r"training.ema_momentum must be 0 \(off\) or between 0 and 1"):
        load_config(None, tiny_overrides(small_corpus, tmp_path, **{"training.ema_momentum": value}))


def test_a_damaged_averages_file_is_a_clear_error(small_corpus, tmp_path):
    settings = {"training.epochs": 1, "training.steps_per_epoch": 3}
    train(config_for(small_corpus, tmp_path / "run", **settings), echo=quiet, verbose=0)
    state = read_state(tmp_path / "run")
    (checkpoint_dir(tmp_path / "run") / state["average"]).write_bytes(b"not a zip")
    more = config_for(small_corpus, tmp_path / "run", **{**settings, "training.epochs": 2})
    with pytest.raises(Exception, match="cannot be loaded.*--overwrite"):
        train(more, resume=True, echo=quiet, verbose=0)
    (checkpoint_dir(tmp_path / "run") / state["average"]).unlink()
    with pytest.raises(Exception, match="names average file .* missing"):
        train(more, resume=True, echo=quiet, verbose=0)
    assert json.loads((checkpoint_dir(tmp_path / "run") / "state.json").read_text())["global_step"] == 3
