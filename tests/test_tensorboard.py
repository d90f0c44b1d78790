"""TensorBoard logs read back from their event files: epochs from 1 like history.csv, bits per
character beside loss, the learning rate, per-step loss, the config as text, and a resume that
continues both axes."""

from __future__ import annotations

import csv
import math

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from textgen.config import load_config
from textgen.training.train import train

from conftest import tiny_overrides

STEPS = 6  # steps per epoch


def read_events(folder):
    """{tag: [(step, value), ...]} for the scalars and text in one TensorBoard run folder."""
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    found = {}
    for tag in accumulator.Tags()["tensors"]:
        values = [(e.step, tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]
        found[tag] = [(step, value.item().decode() if value.dtype == object else float(value))
                      for step, value in values]
    return found


@pytest.fixture
def config_for(small_corpus, tmp_path):
    def make(**extra):
        settings = {"training.steps_per_epoch": STEPS, "training.log_every_steps": 2,
                    "training.lr_schedule": "exponential", "training.lr_decay": 0.5, "training.lr_decay_after": 1,
                    **extra}
        return load_config(None, tiny_overrides(small_corpus, tmp_path / "run", **settings))
    return make


def test_tensorboard_counts_epochs_like_history_and_resume_continues(config_for):
    result = train(config_for(), echo=lambda _: None, verbose=0, progress=None)
    logs = result.run_dir / "logs"
    train_tags, val_tags = read_events(logs / "train"), read_events(logs / "validation")
    rows = list(csv.DictReader((result.run_dir / "history.csv").open()))

    assert [step for step, _ in train_tags["epoch_loss"]] == [1, 2] == [int(r["epoch"]) for r in rows]
    for (_, loss), (_, bpc), row in zip(train_tags["epoch_loss"], train_tags["epoch_bpc"], rows):
        assert loss == pytest.approx(float(row["loss"]), abs=1e-5)
        assert bpc == pytest.approx(float(row["bpc"]), abs=1e-5)
        assert bpc == pytest.approx(loss / math.log(2), rel=1e-5)
    for (step, val_loss), (_, val_bpc), row in zip(val_tags["epoch_loss"], val_tags["epoch_bpc"], rows):
        assert val_loss == pytest.approx(float(row["val_loss"]), abs=1e-5)
        assert val_bpc == pytest.approx(float(row["val_bpc"]), abs=1e-5)
    assert "epoch_learning_rate" not in val_tags and "step_loss" not in val_tags
    # exponential decay: the full rate for lr_decay_after = 1 epoch, then halved at every epoch end
    assert [rate for _, rate in train_tags["epoch_learning_rate"]] == pytest.approx([0.01, 0.005])
    assert [step for step, _ in train_tags["step_loss"]] == [2, 4, 6, 8, 10, 12]
    first_epoch = [loss for step, loss in train_tags["step_loss"] if step <= STEPS]
    # each point is the mean of its two steps, so the epoch's mean is the mean of its points
    assert sum(first_epoch) / len(first_epoch) == pytest.approx(float(rows[0]["loss"]), rel=1e-4)
    (config_step, text), = train_tags["config"]
    assert config_step == 0 and "log_every_steps: 2" in text and "steps_per_epoch: 6" in text

    resumed = train(config_for(**{"training.epochs": 3}), resume=True, echo=lambda _: None, verbose=0,
                    progress=None)
    train_tags, val_tags = read_events(logs / "train"), read_events(logs / "validation")
    assert [step for step, _ in train_tags["epoch_loss"]] == [1, 2, 3]
    assert [step for step, _ in val_tags["epoch_loss"]] == [1, 2, 3]
    assert [rate for _, rate in train_tags["epoch_learning_rate"]] == pytest.approx([0.01, 0.005, 0.0025])
    assert [step for step, _ in train_tags["step_loss"]] == [2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert [step for step, _ in train_tags["config"]] == [0, 2 * STEPS]
    assert "epochs: 3" in train_tags["config"][1][1]
    assert resumed.global_step == 3 * STEPS


def test_log_every_steps_zero_writes_epoch_scalars_only(config_for):
    result = train(config_for(**{"training.log_every_steps": 0, "training.epochs": 1}), echo=lambda _: None,
                   verbose=0, progress=None)
    tags = read_events(result.run_dir / "logs" / "train")
    assert "step_loss" not in tags
    assert [step for step, _ in tags["epoch_loss"]] == [1]


def test_step_loss_measures_the_cross_entropy_without_the_l2_penalty(config_for):
    result = train(config_for(**{"training.l2": 0.5, "training.epochs": 1, "training.log_every_steps": STEPS}),
                   echo=lambda _: None, verbose=0, progress=None)
    tags = read_events(result.run_dir / "logs" / "train")
    (step, loss), = tags["step_loss"]
    assert step == STEPS
    assert loss == pytest.approx(result.history[0]["loss"], rel=1e-4)  # the cross-entropy, as history.csv
