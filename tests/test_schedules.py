"""Learning-rate schedules and the optimizers built from `training:`."""

import math

import keras
import pytest

from textgen.config import load_config
from textgen.training.schedules import CosineSchedule, ExponentialSchedule, Schedule, make_optimizer


def training(*overrides):
    return load_config(None, list(overrides)).training


def rate_at(optimizer, step):
    optimizer.iterations.assign(step)
    return float(optimizer.learning_rate)


def test_constant_rate_is_the_learning_rate_at_every_step():
    optimizer = make_optimizer(training("training.learning_rate=0.003"), steps_per_epoch=10)
    assert [rate_at(optimizer, s) for s in (0, 7, 10_000)] == pytest.approx([0.003] * 3)


def test_exponential_is_char_rnn_decay_per_epoch_after_n_epochs():
    # char-rnn: full rate for 10 epochs, then x0.97 at the end of every epoch.
    optimizer = make_optimizer(training("training.lr_schedule=exponential"), steps_per_epoch=100)
    lr = 0.002
    assert rate_at(optimizer, 0) == pytest.approx(lr)
    assert rate_at(optimizer, 999) == pytest.approx(lr)  # last step of epoch 10
    assert rate_at(optimizer, 1000) == pytest.approx(lr * 0.97)  # epoch 11
    assert rate_at(optimizer, 1099) == pytest.approx(lr * 0.97)
    assert rate_at(optimizer, 1250) == pytest.approx(lr * 0.97 ** 3)  # epoch 13


def test_cosine_with_warm_up():
    t = training("training.lr_schedule=cosine", "training.learning_rate=0.01", "training.min_learning_rate=0.001",
                 "training.warmup_steps=10", "training.epochs=2")
    optimizer = make_optimizer(t, steps_per_epoch=55)  # 110 steps: 10 warm-up, 100 of cosine
    assert rate_at(optimizer, 0) == pytest.approx(0.001)  # 1/10 of the way up
    assert rate_at(optimizer, 4) == pytest.approx(0.005)
    assert rate_at(optimizer, 10) == pytest.approx(0.01)  # the peak
    assert rate_at(optimizer, 60) == pytest.approx(0.001 + 0.009 * 0.5)  # half-way down
    assert rate_at(optimizer, 85) == pytest.approx(0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    assert rate_at(optimizer, 110) == pytest.approx(0.001)
    assert rate_at(optimizer, 500) == pytest.approx(0.001)  # flat after the end


@pytest.mark.parametrize("name, cls", [("adam", keras.optimizers.Adam), ("adamw", keras.optimizers.AdamW),
                                       ("rmsprop", keras.optimizers.RMSprop)])
def test_optimizers_and_clipping(name, cls):
    optimizer = make_optimizer(training(f"training.optimizer={name}", "training.clipnorm=0",
                                        "training.clipvalue=0.5"), steps_per_epoch=10)
    assert type(optimizer) is cls
    assert optimizer.clipvalue == 0.5 and optimizer.clipnorm is None
    if name == "adamw":
        assert optimizer.weight_decay == pytest.approx(0.01)
    assert make_optimizer(training(f"training.optimizer={name}"), 10).clipnorm == 5.0


@pytest.mark.parametrize("schedule", [
    ExponentialSchedule(0.01, steps_per_epoch=7, decay=0.5, decay_after=2, warmup_steps=3),
    CosineSchedule(0.01, total_steps=100, min_learning_rate=0.002, warmup_steps=5),
])
def test_schedule_serialization_round_trip(schedule):
    config = schedule.get_config()
    again = type(schedule).from_config(config)
    assert again.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, Schedule) and restored.get_config() == config
    assert [float(restored(s)) for s in (0, 13, 40)] == pytest.approx([float(schedule(s)) for s in (0, 13, 40)])
