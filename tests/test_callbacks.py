"""textgen.training.callbacks, one callback at a time, on a tiny real model."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import textgen.training.callbacks as callbacks
from textgen.config import ModelConfig
from textgen.models.builder import build_model
from textgen.models.layers import find_token_embedding
from textgen.saving import load_keras_model
from textgen.training.callbacks import (CROSS_ENTROPY, Checkpointer, RunProgressBar, RunRecorder, SamplePrinter,
                                        StopGuard, StopRequest, TrainingStopped, global_step, metric_values,
                                        stop_on_signals)
from textgen.training.checkpoint import read_state

TOKENIZER = {"level": "char", "vocabulary": list("\n abcdefgh")}  # sorted by code point


def run_state() -> dict:
    """What train() hands the checkpointer to save, in its smallest valid form."""
    return {"config": {}, "card": {}, "corpus": {"tokens": 40, "sha1": "ab"}, "steps_per_epoch": 5,
            "recorder": {"rows": []}, "metrics": []}


def compiled_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(cell="gru", embedding_dim=4, units=8), TOKENIZER)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def batches(count: int = 40) -> tf.data.Dataset:
    x = np.random.default_rng(2).integers(0, 10, size=(count, 6)).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, x)).batch(4).repeat()


def history_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- RunRecorder


def recorder_for(tmp_path, model, lines, **options) -> RunRecorder:
    recorder = RunRecorder(tmp_path / "model.keras", tmp_path / "history.csv", {"config": {}}, "char", lines.append,
                           **options)
    recorder.set_model(model)
    recorder.on_train_begin()
    return recorder


def saved_weights(path) -> list[np.ndarray]:
    return load_keras_model(path).get_weights()


def test_the_recorder_keeps_the_best_epoch_and_marks_it_in_history(tmp_path):
    model, lines = compiled_model(), []
    recorder = recorder_for(tmp_path, model, lines)
    recorder.on_epoch_end(0, {"loss": 2.0, "val_loss": 1.5})
    best = model.get_weights()
    model.set_weights([w + 1.0 for w in best])
    recorder.on_epoch_end(1, {"loss": 1.8, "val_loss": 1.7})  # worse: model.keras keeps epoch 1
    for a, b in zip(saved_weights(tmp_path / "model.keras"), best):
        np.testing.assert_array_equal(a, b)
    rows = history_rows(tmp_path / "history.csv")
    assert [(r["epoch"], r["best"]) for r in rows] == [("1", "1"), ("2", "0")]
    assert float(rows[0]["bpc"]) == pytest.approx(2.0 / math.log(2), rel=1e-5)
    assert lines[0].startswith("epoch 1: loss 2.0000") and lines[0].endswith("saved best model")
    assert lines[1].endswith("not better")
    recorder.on_epoch_end(2, {"loss": 1.6, "val_loss": 1.2})
    for a, b in zip(saved_weights(tmp_path / "model.keras"), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [r["best"] for r in history_rows(tmp_path / "history.csv")] == ["0", "0", "1"]
    card = find_token_embedding(load_keras_model(tmp_path / "model.keras")).model_card
    assert card["history"]["best_epoch"] == 3 and card["history"]["final_val_loss"] == 1.2


def test_the_recorder_scores_cross_entropy_not_the_l2_penalty(tmp_path):
    model, lines = compiled_model(), []
    recorder = recorder_for(tmp_path, model, lines)
    recorder.on_epoch_end(0, {"loss": 9.0, CROSS_ENTROPY: 2.0, "val_loss": 9.5, "val_" + CROSS_ENTROPY: 1.5})
    assert recorder.rows[0]["loss"] == 2.0 and recorder.rows[0]["val_loss"] == 1.5 and recorder.best_loss == 1.5


def test_the_recorder_stops_early_after_patience_and_its_state_resumes(tmp_path):
    model, lines = compiled_model(), []
    recorder = recorder_for(tmp_path, model, lines, patience=2)
    for epoch, val in enumerate([1.5, 1.6]):
        recorder.on_epoch_end(epoch, {"loss": 2.0, "val_loss": val})
    assert not model.stop_training and recorder.waited == 1
    state = recorder.state()
    again = recorder_for(tmp_path, model, lines, patience=2, resumed=state)  # as a resumed run builds it
    assert again.rows == recorder.rows and again.best_epoch == 1 and again.best_loss == 1.5
    again.on_epoch_end(2, {"loss": 2.0, "val_loss": 1.55})
    assert again.stopped_early and model.stop_training
    assert lines[-1] == "early stopping: no better validation loss for 2 epochs; model.keras holds epoch 1"
    assert [r["epoch"] for r in history_rows(tmp_path / "history.csv")] == ["1", "2", "3"]


def test_part_of_an_epoch_is_kept_only_when_it_scores_better(tmp_path):
    model, lines = compiled_model(), []
    recorder = recorder_for(tmp_path, model, lines)
    recorder.on_epoch_end(0, {"loss": 2.0, "val_loss": 1.5})
    assert not recorder.consider_partial(7, 1.6, stopped="time_limit", steps=7)
    assert recorder.best_step is None
    assert recorder.consider_partial(8, 1.4, stopped="time_limit", steps=8)
    card = find_token_embedding(load_keras_model(tmp_path / "model.keras")).model_card["history"]
    assert recorder.best_step == 8 and card["best_step"] == 8 and card["stopped"] == "time_limit"
    assert not recorder.consider_partial(9, math.nan)


# --------------------------------------------------------------------------- Checkpointer


def test_the_checkpointer_saves_every_n_steps_and_at_every_epoch_end(tmp_path, monkeypatch):
    saved_at = []
    real_save = callbacks.save_checkpoint

    def recording(run_dir, model, state, averages=None):
        saved_at.append(global_step(model))
        real_save(run_dir, model, state, averages)

    monkeypatch.setattr(callbacks, "save_checkpoint", recording)
    model = compiled_model()
    checkpointer = Checkpointer(tmp_path, every=2, steps_per_epoch=5, state_fn=lambda: {**run_state(), "note": "mine"})
    model.fit(batches(), steps_per_epoch=5, epochs=2, callbacks=[checkpointer], verbose=0)
    # every 2 steps, skipping step 10, the last of an epoch, whose save follows at the epoch end
    assert saved_at == [2, 4, 5, 6, 8, 10]
    state = read_state(tmp_path)
    assert state["global_step"] == 10 and state["note"] == "mine"


def test_the_checkpointer_never_saves_weights_that_went_nan(tmp_path):
    model = compiled_model()
    checkpointer = Checkpointer(tmp_path, every=1, steps_per_epoch=5, state_fn=run_state)
    checkpointer.set_model(model)
    model.fit(batches(), steps_per_epoch=1, epochs=1, verbose=0)
    checkpointer.save()
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    model.optimizer.iterations.assign(2)
    checkpointer.save()
    assert read_state(tmp_path)["global_step"] == 1  # the last good checkpoint stays


def test_the_checkpointer_restores_the_running_loss_of_an_interrupted_epoch(tmp_path):
    model = compiled_model()
    model.fit(batches(), steps_per_epoch=3, epochs=1, verbose=0)
    running = metric_values(model)
    fresh = compiled_model()
    fresh.fit(batches(), steps_per_epoch=1, epochs=1, verbose=0)
    checkpointer = Checkpointer(tmp_path, every=0, steps_per_epoch=5, state_fn=dict, restore_metrics=running)
    checkpointer.set_model(fresh)
    checkpointer.on_epoch_begin(0)
    assert metric_values(fresh) == running
    fresh.fit(batches(), steps_per_epoch=1, epochs=1, verbose=0)  # later epochs start from zero as fit makes them
    checkpointer.on_epoch_begin(1)
    assert metric_values(fresh) != running


# --------------------------------------------------------------------------- StopGuard and signals


def guard_for(model, deadline=None, reason=None) -> StopGuard:
    request = StopRequest()
    request.reason = reason
    guard = StopGuard(steps_per_epoch=5, epochs=3, deadline=deadline, request=request)
    guard.set_model(model)
    return guard


def test_the_stop_guard_ends_on_a_nan_loss_a_spent_budget_and_a_request():
    model = compiled_model()
    model.optimizer.iterations.assign(3)  # part-way through the first epoch
    with pytest.raises(TrainingStopped, match="nan"):
        guard_for(model).on_train_batch_end(2, {"loss": float("nan")})
    with pytest.raises(TrainingStopped, match="time"):
        guard_for(model, deadline=time.monotonic() - 1).on_train_batch_end(2, {"loss": 1.0})
    with pytest.raises(TrainingStopped, match="interrupt"):
        guard_for(model, reason="SIGINT").on_train_batch_end(2, {"loss": 1.0})
    guard_for(model, deadline=time.monotonic() + 60).on_train_batch_end(2, {"loss": 1.0})  # goes on


def test_the_stop_guard_lets_the_last_step_of_an_epoch_be_validated_first():
    model = compiled_model()
    model.optimizer.iterations.assign(5)  # the epoch's last step: its end (validation, history) comes first
    guard = guard_for(model, reason="SIGTERM")
    guard.on_train_batch_end(4, {"loss": 1.0})
    with pytest.raises(TrainingStopped, match="interrupt"):
        guard.on_epoch_end(0)
    guard.on_epoch_end(2)  # the run's last epoch ends anyway: nothing is left to stop


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name == "nt", reason="POSIX signals")
def test_the_first_signal_asks_to_stop_and_a_second_stops_at_once():
    lines = []
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(lines.append) as request:
        signal.raise_signal(signal.SIGTERM)
        assert request.reason == "SIGTERM" and "stopping after this step" in lines[0]
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_a_signal_ignored_before_training_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with stop_on_signals(lambda _: None) as request:
            signal.raise_signal(signal.SIGHUP)
            assert request.reason is None
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


# --------------------------------------------------------------------------- progress and samples


def test_the_progress_bar_counts_epochs_out_of_the_whole_run():
    bar = RunProgressBar(epochs=5)
    bar.set_params({"epochs": 2, "steps": 10, "verbose": 1})  # the fit call finishing an interrupted epoch
    assert bar.epochs == 5


def test_samples_are_drawn_every_n_epochs_from_the_weights_model_keras_would_keep():
    model, lines, entered = compiled_model(), [], []

    @contextlib.contextmanager
    def weights():
        entered.append(True)
        yield

    printer = SamplePrinter(2, (0.0, 1.0), 12, "abc", lines.append, weights=weights)
    printer.set_model(model)
    printer.on_epoch_end(0)
    assert lines == [] and entered == []
    printer.on_epoch_end(1)
    assert len(lines) == 2 and entered == [True]
    assert lines[0].startswith("--- sample at temperature 0 after epoch 2:\nabc") and lines[1].endswith("\n---")


def test_a_sample_seed_the_model_cannot_read_switches_samples_off_without_ending_training():
    lines = []
    printer = SamplePrinter(1, (1.0,), 12, "xyz", lines.append)  # x, y and z are not in the vocabulary
    printer.set_model(compiled_model())
    printer.on_epoch_end(0)
    assert printer.every == 0 and lines[0].startswith("samples switched off: ")
