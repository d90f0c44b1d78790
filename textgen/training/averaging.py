"""Weight averaging: an exponential moving average of the weights, kept beside training.

With `training.ema_momentum` m > 0, after every optimizer step

    average <- mu * average + (1 - mu) * weights,   mu = min(m, (1 + t) / (10 + t))

where t counts the steps averaged so far. The ramp lets the average leave the random initial
weights quickly (TensorFlow's ExponentialMovingAverage ramps its decay the same way when given
the step count); from about 9 / (1 - m) steps on (1,800 at 0.995), mu is m.

The optimizer always continues from the trained weights. The averages are what validation
scores (fit's epoch-end pass and a time budget's part-epoch score), what model.keras keeps and
what training samples are drawn from: averaged weights lie nearer the middle of the valley the
optimizer bounces around in, and score lower (docs/architectures.md has the measurements). The
checkpoint stores the averages and t beside the trained weights, so a resumed run continues
the same average.

Keras's own `use_ema` is not used: it copies the averages over the weights at the end of every
`fit` call, and a run resumed part-way through an epoch makes two calls.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf

RAMP = 10  # mu = (1 + t) / (RAMP + t) until that exceeds the momentum


def momentum_at(momentum: float, count: int) -> float:
    """The momentum of the `count`-th averaging step (counting from 1)."""
    return min(momentum, (1.0 + count) / (RAMP + count))


class WeightAverager(keras.callbacks.Callback):
    """Keeps the average of the trainable weights and swaps it in wherever the model is judged.

    `averages` and `count` continue a resumed run's average; without them the average starts
    from the weights training starts with. Goes first in fit's callback list, so a checkpoint
    saved at the end of a step holds that step's average.
    """

    def __init__(self, momentum: float, averages: list[np.ndarray] | None = None, count: int = 0):
        super().__init__()
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        self.momentum = momentum
        self.count = count
        self._restored = averages
        self._averages: list[tf.Variable] | None = None
        self._swapped = False
        self._validation = contextlib.ExitStack()
        self._update = tf.function(self._update_step)

    # ------------------------------------------------------------------ averaging

    def on_train_begin(self, logs=None):
        self._ensure_averages()

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1
        self._update(tf.constant(momentum_at(self.momentum, self.count), tf.float32))

    def _ensure_averages(self) -> None:
        if self._averages is not None:  # a run resumed mid-epoch calls fit twice
            return
        weights = self.model.trainable_variables
        start = self._restored
        if start is None or [a.shape for a in start] != [tuple(w.shape) for w in weights]:
            start, self.count = [np.asarray(w.numpy(), np.float32) for w in weights], 0
        # Plain variables outside any distribution strategy: callbacks run in cross-replica
        # context, where reading a mirrored weight gives its (synchronised) value.
        self._averages = [tf.Variable(value, trainable=False, dtype=tf.float32) for value in start]
        self._restored = None

    def _update_step(self, mu):
        for average, weight in zip(self._averages, self.model.trainable_variables):
            average.assign_sub((1.0 - mu) * (average - tf.cast(weight, tf.float32)))

    # ------------------------------------------------------------------ using the average

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """The averages in the model's weights for the duration; the trained weights after.

        Re-entrant: inside another `averaged` block it changes nothing.
        """
        if self._averages is None or self._swapped:
            yield
            return
        weights = self.model.trainable_variables
        trained = [w.numpy() for w in weights]
        for weight, average in zip(weights, self._averages):
            weight.assign(tf.cast(average, weight.dtype))
        self._swapped = True
        try:
            yield
        finally:
            for weight, value in zip(weights, trained):
                weight.assign(value)
            self._swapped = False

    def on_test_begin(self, logs=None):  # fit's validation pass scores the averages
        self._validation.enter_context(self.averaged())

    def on_test_end(self, logs=None):
        self._validation.close()

    # ------------------------------------------------------------------ checkpointing

    def arrays(self) -> list[np.ndarray] | None:
        """The averages, for the checkpoint (None before training has begun)."""
        if self._averages is None:
            return self._restored
        return [average.numpy() for average in self._averages]

    def state(self) -> dict:
        return {"momentum": self.momentum, "count": self.count}
