"""TensorBoard logs that read like history.csv: RUN_DIR/logs/train and RUN_DIR/logs/validation.

Keras's own TensorBoard callback numbers epochs from 0 and restarts its step count at every
`fit`, so a resumed run would draw over its own past. This callback writes with tf.summary
into the same folders instead, and takes its x-axis from counters a resume restores:

    epoch_loss, epoch_bpc     per epoch, at the epoch counted from 1 (history.csv's `epoch`):
    (epoch_perplexity)        the cross-entropy and its bits per character (perplexity for
                              word models), in train/ and, when validated, in validation/,
                              so TensorBoard draws both on one chart
    epoch_learning_rate       the rate the epoch's last step used (train/)
    step_loss                 every `every` optimizer steps, at that step count: the mean
                              training loss since the previous point (or the epoch's start),
                              so each point averages the steps it stands for (train/)
    config                    the run's resolved config as text, once per session, at the
                              step the session starts from (train/)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import keras
import numpy as np

from textgen.training.callbacks import CROSS_ENTROPY, epoch_metrics, global_step

TRAIN, VALIDATION = "train", "validation"


class TensorBoardLog(keras.callbacks.Callback):
    """Writes the scalars above into `log_dir`; `close()` when training is over.

    `level` picks bits per character or perplexity as history.csv does; `every` (0 = never)
    spaces the per-step points; `schedule` maps a step to its learning rate (the optimizer's
    schedule, rebuilt from the config); `config_text` is the YAML of the resolved config.
    """

    def __init__(self, log_dir: Path, level: str, every: int, schedule: Callable, config_text: str):
        super().__init__()
        self.log_dir, self.level, self.every, self.schedule = Path(log_dir), level, every, schedule
        self.config_text = config_text
        self._writers: dict = {}
        self._since: tuple[float, float] = (0.0, 0.0)  # the loss sum and count at the last per-step point

    def _writer(self, name: str):
        import tensorflow as tf

        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(str(self.log_dir / name))
        return self._writers[name]

    def _scalars(self, name: str, values: dict, step: int) -> None:
        import tensorflow as tf

        with self._writer(name).as_default():
            for tag, value in values.items():
                tf.summary.scalar(tag, value, step=step)

    def on_train_begin(self, logs=None):
        if self.config_text is None:  # a resumed run finishing its epoch calls fit twice
            return
        import tensorflow as tf

        with self._writer(TRAIN).as_default():
            # Indented four spaces, the YAML shows as a code block in TensorBoard's markdown.
            text = "\n".join("    " + line for line in self.config_text.splitlines())
            tf.summary.text("config", text, step=global_step(self.model))
        self.config_text = None

    def on_epoch_begin(self, epoch, logs=None):
        # Keras has just reset the running loss, and Checkpointer may have put back an
        # interrupted epoch's: the next per-step point covers only the steps from here.
        self._since = self._loss_sums()

    def on_train_batch_end(self, batch, logs=None):
        if not self.every:
            return
        step = global_step(self.model)
        if step % self.every:
            return
        total, count = self._loss_sums()
        if count > self._since[1]:
            mean = (total - self._since[0]) / (count - self._since[1])
            self._scalars(TRAIN, {"step_loss": mean}, step)
        self._since = (total, count)

    def on_epoch_end(self, epoch, logs=None):
        row = epoch_metrics(epoch, logs, self.level)
        key = "bpc" if "bpc" in row else "perplexity"
        rate = float(self.schedule(max(global_step(self.model) - 1, 0)))
        self._scalars(TRAIN, {"epoch_loss": row["loss"], f"epoch_{key}": row[key], "epoch_learning_rate": rate},
                      row["epoch"])
        if "val_loss" in row:
            self._scalars(VALIDATION, {"epoch_loss": row["val_loss"], f"epoch_{key}": row["val_" + key]},
                          row["epoch"])
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        """Flush and close the event files (also after fit was left by an exception)."""
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def _loss_sums(self) -> tuple[float, float]:
        """The running training loss's sum and count: the cross-entropy alone when an L2
        penalty is tracked apart from it, as history.csv reports."""
        found = {}
        for variable in self.model.metrics_variables:
            metric, _, part = variable.path.rpartition("/")
            if metric in (CROSS_ENTROPY, "loss") and part in ("total", "count"):
                found[metric, part] = float(np.asarray(variable.numpy()))  # also a replicas' sum under a strategy
        metric = CROSS_ENTROPY if (CROSS_ENTROPY, "total") in found else "loss"
        return found.get((metric, "total"), 0.0), found.get((metric, "count"), 0.0)
