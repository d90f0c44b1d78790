"""Learning-rate schedules and the optimizer built from `training:` settings.

Every schedule is a function of the optimizer's step counter, which the training checkpoint
restores, so a resumed run continues on the same curve. A base `Schedule` owns the linear
warm-up; each kind overrides `rate(step)`:

    constant      learning_rate
    exponential   learning_rate * lr_decay ** (epochs finished beyond lr_decay_after),
                  char-rnn's "0.97 per epoch after epoch 10", changing at epoch boundaries
    cosine        from learning_rate down to min_learning_rate over the run's steps, by
                  Keras's CosineDecay; with decay_over: time, over the run's time budget
                  (training.max_minutes) instead, whatever the machine's step rate

The warm-up is textgen's own rather than CosineDecay's: Keras's warm-up climbs from its
initial rate at step 0, so warming up from nothing would spend the first update at rate 0,
while here the first update (step 0) already takes 1/warmup_steps of the rate, and every
kind of schedule warms up the same way.
"""

from __future__ import annotations

import math
import time

import keras
from keras import ops


class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up over `warmup_steps`, then `rate(step)`. Step 0 is the first update."""

    def __init__(self, learning_rate: float, warmup_steps: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)

    def rate(self, step):
        """The rate at `step` (a float tensor) ignoring warm-up. Default: constant."""
        return ops.ones_like(step) * self.learning_rate

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = self.rate(step)
        if self.warmup_steps:
            rate = rate * ops.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return rate

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="textgen")
class ConstantSchedule(Schedule):
    pass


@keras.saving.register_keras_serializable(package="textgen")
class ExponentialSchedule(Schedule):
    """char-rnn's decay: after `decay_after` full epochs, multiply by `decay` at every epoch end."""

    def __init__(self, learning_rate: float, steps_per_epoch: int, decay: float = 0.97, decay_after: int = 10,
                 warmup_steps: int = 0, **kwargs):
        super().__init__(learning_rate, warmup_steps, **kwargs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.decay = float(decay)
        self.decay_after = int(decay_after)

    def rate(self, step):
        epoch = ops.floor(step / self.steps_per_epoch)  # epochs finished before this step
        decays = ops.maximum(0.0, epoch - self.decay_after + 1.0)
        return self.learning_rate * ops.power(self.decay, decays)

    def get_config(self):
        return {**super().get_config(), "steps_per_epoch": self.steps_per_epoch, "decay": self.decay,
                "decay_after": self.decay_after}


@keras.saving.register_keras_serializable(package="textgen")
class CosineSchedule(Schedule):
    """Keras's CosineDecay from `learning_rate` to `min_learning_rate`, starting once the
    warm-up is over and reaching the minimum at `total_steps`; flat after that."""

    def __init__(self, learning_rate: float, total_steps: int, min_learning_rate: float = 0.0,
                 warmup_steps: int = 0, **kwargs):
        super().__init__(learning_rate, warmup_steps, **kwargs)
        self.total_steps = int(total_steps)
        self.min_learning_rate = float(min_learning_rate)
        # CosineDecay's alpha is the minimum as a fraction of the rate it decays from.
        self._decay = keras.optimizers.schedules.CosineDecay(
            self.learning_rate, decay_steps=max(self.total_steps - self.warmup_steps, 1),
            alpha=self.min_learning_rate / self.learning_rate if self.learning_rate else 0.0)

    def rate(self, step):
        return self._decay(ops.maximum(step - self.warmup_steps, 0.0))

    def get_config(self):
        return {**super().get_config(), "total_steps": self.total_steps,
                "min_learning_rate": self.min_learning_rate}


@keras.saving.register_keras_serializable(package="textgen")
class BudgetCosineSchedule(Schedule):
    """A cosine from `learning_rate` to `min_learning_rate` over the run's time budget.

    The curve is a function of `progress`, the fraction of the budget used, which a BudgetClock
    moves before every step. A step-counted schedule fitted to one machine is cut part-way,
    still at a high rate, on a slower one; this one reaches its floor when the budget runs out
    on any machine. The warm-up still counts steps.
    """

    def __init__(self, learning_rate: float, min_learning_rate: float = 0.0, warmup_steps: int = 0, **kwargs):
        super().__init__(learning_rate, warmup_steps, **kwargs)
        self.min_learning_rate = float(min_learning_rate)
        self.progress = keras.Variable(0.0, dtype="float32", trainable=False, name="budget_progress")

    def rate(self, step):
        progress = ops.clip(ops.convert_to_tensor(self.progress), 0.0, 1.0)
        return self.min_learning_rate + (self.learning_rate - self.min_learning_rate) * 0.5 * (
            1.0 + ops.cos(math.pi * progress)) * ops.ones_like(step)

    def get_config(self):
        return {**super().get_config(), "min_learning_rate": self.min_learning_rate}


class BudgetClock(keras.callbacks.Callback):
    """Sets a BudgetCosineSchedule's progress from the wall clock before every training step.

    Progress is `start` (the fraction a resumed run had used) plus the seconds since `started`
    (time.monotonic) over the budget's `seconds`, at most 1.
    """

    def __init__(self, schedule: BudgetCosineSchedule, started: float, seconds: float, start: float = 0.0):
        super().__init__()
        self.schedule, self.started, self.seconds, self.start = schedule, started, seconds, start

    def progress(self) -> float:
        return min(1.0, self.start + (time.monotonic() - self.started) / self.seconds)

    def on_train_batch_begin(self, batch, logs=None):
        self.schedule.progress.assign(self.progress())


def budget_clock(schedule, training, started: float, resumed_progress: float | None):
    """(deadline, clock) for a run: the time.monotonic() at which its budget ends (None: no
    budget) and the BudgetClock its schedule needs (None for a step-counted schedule).

    A run decaying over its budget spends max_minutes in all, across resumes: a resumed run
    gets what its curve has left. One that used it all continues at the floor for a new budget.
    """
    if not training.max_minutes:
        return None, None
    seconds = training.max_minutes * 60
    if not isinstance(schedule, BudgetCosineSchedule):
        return started + seconds, None
    start = resumed_progress or 0.0
    if start >= 1.0:
        schedule.progress.assign(1.0)
        return started + seconds, None
    return started + (1.0 - start) * seconds, BudgetClock(schedule, started, seconds, start)


def learning_rate_schedule(optimizer: keras.optimizers.Optimizer) -> Schedule:
    """The schedule make_optimizer gave `optimizer`, also once compile has wrapped it in a
    LossScaleOptimizer (mixed_float16). Keras keeps it without a public getter."""
    return getattr(optimizer, "inner_optimizer", optimizer)._learning_rate


def make_schedule(training, steps_per_epoch: int) -> Schedule:
    """The schedule `training.lr_schedule` names, for a run of `training.epochs` epochs."""
    common = {"learning_rate": training.learning_rate, "warmup_steps": training.warmup_steps}
    if training.lr_schedule == "exponential":
        return ExponentialSchedule(steps_per_epoch=steps_per_epoch, decay=training.lr_decay,
                                   decay_after=training.lr_decay_after, **common)
    if training.lr_schedule == "cosine" and training.decay_over == "time":
        return BudgetCosineSchedule(min_learning_rate=training.min_learning_rate, **common)
    if training.lr_schedule == "cosine":
        return CosineSchedule(total_steps=steps_per_epoch * training.epochs,
                              min_learning_rate=training.min_learning_rate, **common)
    return ConstantSchedule(**common)


def make_optimizer(training, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer `training.optimizer` names, with its schedule and gradient clipping."""
    clip = {"clipnorm": training.clipnorm or None, "clipvalue": training.clipvalue or None}
    schedule = make_schedule(training, steps_per_epoch)
    if training.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=training.weight_decay, **clip)
        optimizer.exclude_from_weight_decay(var_names=["bias"])
        return optimizer
    if training.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=schedule, **clip)
    return keras.optimizers.Adam(learning_rate=schedule, **clip)
