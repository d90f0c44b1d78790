"""A workaround that lets Keras 3's `fit` train under MultiWorkerMirroredStrategy.

Written against Keras 3.15 with TensorFlow 2.21. Keras 3 does not support the multi-worker
strategy in `fit` (keras-team/keras#20585, open; also tensorflow/tensorflow#72388), and two
places fail:

1. The first `fit` builds the loss, metrics and optimizer from a batch it averages across
   the workers (`Trainer._maybe_symbolic_build` in keras/src/backend/tensorflow/trainer.py),
   which fails for (input, target) pairs of token ids.
2. Each step's logs are averaged over all replicas along axis 0 (`reduce_per_replica` with
   "mean" under a collective multi-worker strategy), which scalar logs lack.

It relies on two private members of `keras.Model`: `_symbolic_build(data_batch=...)`, called
here from a local example batch, and `_maybe_symbolic_build`, replaced on the instance so
`fit` skips its own build. The public `train_step` and `test_step` are wrapped to give every
log value that axis. Only the model instance given is changed. When a Keras version supports
the strategy, or renames those members, tests/test_distribute.py's two-worker test shows it.
"""

from __future__ import annotations

import keras


def prepare_for_multi_worker_fit(model: keras.Model, plan, training) -> None:
    """Build `model`'s loss, metrics and optimizer locally and give its step logs a replica axis.

    Call it once, after `compile` (and a checkpoint restore) and before `fit`, for a model
    built in `plan.strategy`'s scope. The logs then average to the loss of the whole global
    batch, the same on every worker.
    """
    example = keras.ops.zeros((training.batch_size // plan.replicas, training.seq_length), dtype="int32")
    with plan.strategy.scope():
        model._symbolic_build(data_batch=(example, example))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    model.train_step = _with_replica_axis(model.train_step)
    model.test_step = _with_replica_axis(model.test_step)


def _with_replica_axis(step):
    """`step` returning each log value as a one-entry vector, for the average over replicas."""
    def run(data):
        return {name: keras.ops.reshape(value, (1,)) for name, value in step(data).items()}
    return run
