"""Learning-rate schedules and the optimizers built from `training:`."""

import math

import keras
import pytest

from textgen.config import load_config
from textgen.errors import ConfigError
from textgen.training.schedules import (BudgetClock, BudgetCosineSchedule, CosineSchedule, ExponentialSchedule,
                                       Schedule, budget_clock, learning_rate_schedule, make_optimizer)


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
    BudgetCosineSchedule(0.01, min_learning_rate=0.002, warmup_steps=5),
])
def test_schedule_serialization_round_trip(schedule):
    config = schedule.get_config()
    again = type(schedule).from_config(config)
    assert again.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, Schedule) and restored.get_config() == config
    assert [float(restored(s)) for s in (0, 13, 40)] == pytest.approx([float(schedule(s)) for s in (0, 13, 40)])


def textgen_cosine(step, learning_rate, total_steps, min_learning_rate, warmup_steps):
    """The cosine curve with warm-up that textgen's runs have always followed, step by step."""
    progress = min(max((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0), 1.0)
    rate = min_learning_rate + (learning_rate - min_learning_rate) * 0.5 * (1 + math.cos(math.pi * progress))
    return rate * min(1.0, (step + 1) / warmup_steps) if warmup_steps else rate


@pytest.mark.parametrize("settings", [
    {"learning_rate": 0.01, "total_steps": 110, "min_learning_rate": 0.001, "warmup_steps": 10},
    {"learning_rate": 0.002, "total_steps": 50, "min_learning_rate": 0.0, "warmup_steps": 0},
    {"learning_rate": 0.003, "total_steps": 4, "min_learning_rate": 0.0001, "warmup_steps": 6},  # warm-up past the end
])
def test_cosine_follows_the_same_curve_as_before_keras_computed_it(settings):
    schedule = CosineSchedule(**settings)
    steps = [0, 1, 3, 5, 9, 10, 11, 30, 49, 50, 60, 85, 109, 110, 111, 10_000]
    assert [float(schedule(s)) for s in steps] == pytest.approx([textgen_cosine(s, **settings) for s in steps],
                                                                rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("serialized, rates", [
    # exactly as the schedules of earlier textgen versions serialised themselves, with their rates then
    ({"module": "textgen.training.schedules", "class_name": "CosineSchedule", "config": {
        "learning_rate": 0.01, "warmup_steps": 10, "total_steps": 110, "min_learning_rate": 0.001},
      "registered_name": "textgen>CosineSchedule"},
     {0: 0.001, 4: 0.005, 9: 0.01, 10: 0.01, 11: 0.009997778572142124, 60: 0.00549999950453639,
      85: 0.002318019513040781, 109: 0.0010022206697613, 110: 0.001, 500: 0.001}),
    ({"module": "textgen.training.schedules", "class_name": "ExponentialSchedule", "config": {
        "learning_rate": 0.01, "warmup_steps": 3, "steps_per_epoch": 7, "decay": 0.5, "decay_after": 2},
      "registered_name": "textgen>ExponentialSchedule"},
     {0: 0.0033333334140479565, 4: 0.01, 13: 0.01, 14: 0.005, 60: 7.812499825377017e-05, 109: 6.103515488575795e-07}),
    ({"module": "textgen.training.schedules", "class_name": "ConstantSchedule", "config": {
        "learning_rate": 0.003, "warmup_steps": 4}, "registered_name": "textgen>ConstantSchedule"},
     {0: 0.00075, 3: 0.003, 500: 0.003}),
])
def test_schedules_serialised_by_earlier_versions_load_with_the_same_rates(serialized, rates):
    schedule = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(schedule, Schedule) and schedule.get_config() == serialized["config"]
    assert [float(schedule(s)) for s in rates] == pytest.approx(list(rates.values()), rel=1e-5)


def test_cosine_over_the_time_budget_follows_the_fraction_used_not_the_step():
    t = training("training.lr_schedule=cosine", "training.decay_over=time", "training.max_minutes=10",
                 "training.learning_rate=0.01", "training.min_learning_rate=0.001", "training.warmup_steps=10")
    optimizer = make_optimizer(t, steps_per_epoch=5)
    schedule = optimizer._learning_rate
    assert isinstance(schedule, BudgetCosineSchedule)
    assert rate_at(optimizer, 0) == pytest.approx(0.001)  # warming up: 1/10 of the peak at progress 0
    for progress, expected in [(0.0, 0.01), (0.5, 0.0055), (0.75, 0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi * 0.75))),
                               (1.0, 0.001), (1.7, 0.001)]:
        schedule.progress.assign(progress)
        # the step is far past the 5 x 10 scheduled steps: only the budget's progress moves the rate
        assert rate_at(optimizer, 10_000) == pytest.approx(expected), progress


def test_decaying_over_time_needs_a_budget():
    with pytest.raises(ConfigError, match="training.decay_over is time, which decays over the time budget: set "
                                          "training.max_minutes"):
        training("training.lr_schedule=cosine", "training.decay_over=time")


def test_the_budget_clock_spends_max_minutes_across_resumes(monkeypatch):
    t = training("training.lr_schedule=cosine", "training.decay_over=time", "training.max_minutes=10")
    now = [1000.0]
    monkeypatch.setattr("textgen.training.schedules.time.monotonic", lambda: now[0])
    fresh = BudgetCosineSchedule(0.01)
    deadline, clock = budget_clock(fresh, t, started=1000.0, resumed_progress=None)
    assert deadline == 1600.0 and isinstance(clock, BudgetClock)
    now[0] = 1150.0
    clock.on_train_batch_begin(0)
    assert clock.progress() == pytest.approx(0.25) and float(fresh.progress.numpy()) == pytest.approx(0.25)
    # resumed a quarter of the way: the budget's remaining three quarters, on the same curve
    resumed = BudgetCosineSchedule(0.01)
    deadline, clock = budget_clock(resumed, t, started=1150.0, resumed_progress=0.25)
    assert deadline == pytest.approx(1600.0) and clock.progress() == pytest.approx(0.25)
    now[0] = 1600.0
    assert clock.progress() == pytest.approx(1.0)
    now[0] = 5000.0
    assert clock.progress() == 1.0
    # resumed after spending it all: a new budget at the floor, no clock to move it
    spent = BudgetCosineSchedule(0.01, min_learning_rate=0.002)
    deadline, clock = budget_clock(spent, t, started=2000.0, resumed_progress=1.0)
    assert deadline == 2600.0 and clock is None and float(spent(7)) == pytest.approx(0.002)
    # a step-counted schedule keeps the plain budget; no budget, no deadline
    assert budget_clock(CosineSchedule(0.01, total_steps=9), t, 2000.0, None) == (2600.0, None)
    assert budget_clock(CosineSchedule(0.01, total_steps=9), training(), 2000.0, None) == (None, None)


def test_the_schedule_is_found_inside_a_loss_scale_optimizer():
    # compile wraps the optimizer so under mixed_float16; the budget clock must still reach its schedule
    t = training("training.lr_schedule=cosine", "training.decay_over=time", "training.max_minutes=1")
    optimizer = make_optimizer(t, steps_per_epoch=5)
    for wrapped in (optimizer, keras.optimizers.LossScaleOptimizer(optimizer)):
        assert isinstance(learning_rate_schedule(wrapped), BudgetCosineSchedule)
        assert learning_rate_schedule(wrapped) is optimizer._learning_rate
