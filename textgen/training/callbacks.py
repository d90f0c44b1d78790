"""Keras callbacks that run a textgen training session.

Listed in the order `train` hands them to `fit`, which is the order they act at an epoch end
(textgen/training/averaging.py's WeightAverager, when weights are averaged, goes before them all):
    RunRecorder    history.csv, the best model in model.keras, early stopping
    Checkpointer   the resumable training state, every N steps and at every epoch end
    SamplePrinter  a few samples every N epochs so users see the model learn
    TensorBoardLog the TensorBoard scalars (its own module, textgen/training/tensorboard_log.py)
    StopGuard      NaN loss, the wall-clock budget and Ctrl-C end training between steps

Nothing here reads module globals: every callback gets what it needs in its constructor.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import keras
import numpy as np

from textgen.evaluation.metrics import per_token_metrics
from textgen.training.checkpoint import save_checkpoint
from textgen.errors import TextgenError
from textgen.saving import save_model_atomic
from textgen.files import write_text_atomic


CROSS_ENTROPY = "cross_entropy"  # a metric compiled in when `loss` also holds an L2 penalty


def global_step(model: keras.Model) -> int:
    """Optimizer updates so far: the one step counter that a checkpoint restores."""
    return int(model.optimizer.iterations.numpy())


def epoch_metrics(epoch: int, logs: dict | None, level: str) -> dict:
    """Keras's 0-based `epoch` and its end-of-epoch `logs` as history.csv and TensorBoard report
    them: the epoch counted from 1, the cross-entropy (without an L2 penalty) and its bits per
    character or perplexity, then the same for validation when the epoch was validated."""
    logs = logs or {}
    loss = float(logs.get(CROSS_ENTROPY, logs.get("loss", math.nan)))
    row = {"epoch": epoch + 1, "loss": loss, **per_token_metrics(loss, level)}
    val = logs.get("val_" + CROSS_ENTROPY, logs.get("val_loss"))
    if val is not None:
        row.update(val_loss=float(val), **{"val_" + k: v for k, v in per_token_metrics(float(val), level).items()})
    return row


class RunRecorder(keras.callbacks.Callback):
    """Writes history.csv each epoch, saves the best model atomically and stops early.

    The score is the validation loss (the training loss when there is no validation split).
    `patience` > 0 stops training after that many epochs without a better score; model.keras
    then already holds the best epoch's weights and history.csv marks that epoch.
    `weights` is the context in which the model holds the weights to save (the averaged
    weights, when training keeps an average).
    """

    def __init__(self, model_path: Path, history_path: Path, card: dict, level: str,
                 echo: Callable[[str], None], patience: int = 0, resumed: dict | None = None,
                 weights: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        super().__init__()
        self.model_path, self.history_path, self.card, self.level, self.echo = (
            model_path, history_path, card, level, echo)
        self.weights = weights
        self.patience = patience
        resumed = resumed or {}
        self.rows: list[dict] = list(resumed.get("rows", []))
        best = resumed.get("best_loss")
        self.best_loss = math.inf if best is None else best
        self.best_epoch = resumed.get("best_epoch", 0)
        # Set when the best weights are those a time budget stopped part-way through an epoch.
        self.best_step: int | None = resumed.get("best_step")
        self.waited = resumed.get("waited", 0)  # epochs since the best one
        self.seconds_before = resumed.get("seconds", 0.0)
        self.stopped_early = False
        self._started: float | None = None

    @property
    def seconds(self) -> float:
        """Training time over all sessions of this run."""
        running = time.monotonic() - self._started if self._started is not None else 0.0
        return self.seconds_before + running

    def on_train_begin(self, logs=None):
        if self._started is None:  # a run resumed mid-epoch calls fit twice
            self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        row = {**epoch_metrics(epoch, logs, self.level), "seconds": round(self.seconds, 1)}
        loss, val_loss = row["loss"], row.get("val_loss")
        self.rows.append(row)
        score = val_loss if val_loss is not None else loss
        improved = bool(np.isfinite(score) and score < self.best_loss)
        if improved:
            self.best_loss, self.best_epoch, self.best_step, self.waited = score, epoch + 1, None, 0
            self.save()
        else:
            self.waited += 1
        write_text_atomic(self.history_path, history_csv(self.rows, self.best_epoch))
        self.echo(_epoch_line(row, self.level, improved))
        if self.patience and self.waited >= self.patience:
            self.stopped_early = True
            self.model.stop_training = True
            self.echo(f"early stopping: no better {'validation ' if val_loss is not None else ''}loss for "
                      f"{self.waited} epochs; model.keras holds epoch {self.best_epoch}")

    def consider_partial(self, step: int, val_loss: float, **card_extra) -> bool:
        """A time budget stopped training part-way through an epoch, at `step`, and these weights
        scored `val_loss`: keep them as the model if they beat every finished epoch.

        Without this the steps since the last epoch end would be thrown away, and a budget that
        ends just before an epoch does would cost nearly a whole epoch of training.
        """
        if not (math.isfinite(val_loss) and val_loss < self.best_loss):
            return False
        self.best_loss, self.best_step = val_loss, step
        self.save(**card_extra)
        return True

    def save(self, **card_extra) -> None:
        """The model as it stands (averaged, if weights are averaged) into model.keras."""
        with self.weights():
            save_model_atomic(self.model, self.model_path, self.card_with_history(**card_extra))

    def state(self) -> dict:
        return {"rows": self.rows, "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
                "best_epoch": self.best_epoch, "best_step": self.best_step, "waited": self.waited,
                "seconds": round(self.seconds, 1)}

    def history_summary(self, **extra) -> dict:
        last = self.rows[-1] if self.rows else {}
        partial = {} if self.best_step is None else {"best_step": self.best_step}
        return {"epochs": len(self.rows), "best_epoch": self.best_epoch, **partial,
                "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
                "final_loss": last.get("loss"), "final_val_loss": last.get("val_loss"),
                "seconds": round(self.seconds, 1), **extra}

    def card_with_history(self, **extra) -> dict:
        return {**self.card, "history": self.history_summary(**extra)}


class Checkpointer(keras.callbacks.Callback):
    """Saves the resumable training state every `every` steps and at the end of every epoch.

    Mid-epoch saves skip the last step of an epoch: the epoch-end save follows once the
    epoch is validated and recorded, so a checkpoint never holds an unrecorded epoch.
    `restore_metrics` (the running loss of an epoch interrupted part-way) is put back when
    the first epoch begins, so that epoch reports the same mean loss as an uninterrupted one.
    `averages_fn` gives the averaged weights to store beside the trained ones (None: none).
    """

    def __init__(self, run_dir: Path, every: int, steps_per_epoch: int, state_fn: Callable[[], dict],
                 restore_metrics: list | None = None, averages_fn: Callable[[], list | None] = lambda: None):
        super().__init__()
        self.run_dir, self.every, self.steps_per_epoch, self.state_fn = run_dir, every, steps_per_epoch, state_fn
        self._restore_metrics = restore_metrics
        self.averages_fn = averages_fn

    def on_epoch_begin(self, epoch, logs=None):
        if self._restore_metrics is not None:  # fit has just reset the metrics
            set_metric_values(self.model, self._restore_metrics)
            self._restore_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        step = global_step(self.model)
        if self.every and step % self.every == 0 and step % self.steps_per_epoch:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def save(self, **extra) -> None:
        """Save the state, unless the last step left a weight NaN or infinite: then the last
        good checkpoint stays the one --resume continues from (StopGuard ends the run)."""
        if not all(np.isfinite(w).all() for w in self.model.get_weights()):
            return
        save_checkpoint(self.run_dir, self.model, {**self.state_fn(), **extra}, self.averages_fn())


def metric_values(model: keras.Model) -> list:
    """The running state of the model's metrics (the epoch's loss so far)."""
    return [[np.asarray(v.numpy()).tolist() for v in metric.variables] for metric in model.metrics]


def set_metric_values(model: keras.Model, values: list) -> None:
    metrics = model.metrics
    if len(metrics) != len(values):
        return
    for metric, saved in zip(metrics, values):
        if len(metric.variables) == len(saved):
            for variable, value in zip(metric.variables, saved):
                variable.assign(np.asarray(value, dtype=variable.dtype))


class RunProgressBar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, numbering epochs out of the run's total. A resumed run finishes
    its interrupted epoch in a fit call of its own, whose `epochs` would otherwise show as
    the total ("Epoch 2/2", then "Epoch 3/3")."""

    def __init__(self, epochs: int):
        super().__init__()
        self.run_epochs = epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.run_epochs


class SamplePrinter(keras.callbacks.Callback):
    """Prints one sample per temperature at the end of every `every` epochs, from the weights
    `weights` puts in the model (the ones model.keras would keep)."""

    def __init__(self, every: int, temperatures: tuple[float, ...], length: int, seed_text: str,
                 echo: Callable[[str], None],
                 weights: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        super().__init__()
        self.every, self.temperatures, self.length, self.seed_text, self.echo = (
            every, temperatures, length, seed_text, echo)
        self.weights = weights

    def on_epoch_end(self, epoch, logs=None):
        if not self.every or (epoch + 1) % self.every:
            return
        from textgen.generation.generate import Generator

        try:
            with self.weights():
                generator = Generator(self.model)  # built afresh: a generator may copy the weights it starts with
                samples = [generator.generate(self.seed_text, length=self.length, temperature=temperature,
                                              random_seed=epoch)[0] for temperature in self.temperatures]
            for temperature, text in zip(self.temperatures, samples):
                self.echo(f"--- sample at temperature {temperature:g} after epoch {epoch + 1}:\n"
                          f"{self.seed_text}{text}\n---")
        except TextgenError as exc:  # a bad sample seed must not end a training run
            self.echo(f"samples switched off: {exc}")
            self.every = 0


class PairSamplePrinter(keras.callbacks.Callback):
    """A seq2seq run's samples: a few sources and the model's greedy output for each, at the end
    of every `every` epochs, from the weights `weights` puts in the model."""

    def __init__(self, every: int, sources: list[str], echo: Callable[[str], None],
                 weights: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        super().__init__()
        self.every, self.sources, self.echo, self.weights = every, sources, echo, weights

    def on_epoch_end(self, epoch, logs=None):
        if not self.every or (epoch + 1) % self.every or not self.sources:
            return
        from textgen.generation.seq2seq import Translator

        with self.weights():
            outputs = Translator(self.model).translate(self.sources)
        lines = [f"{source}  ->  {output}" for source, output in zip(self.sources, outputs)]
        self.echo(f"--- greedy outputs after epoch {epoch + 1}:\n" + "\n".join(lines) + "\n---")


class TrainingStopped(Exception):
    """Raised by StopGuard out of `fit`; `reason` is interrupt, time or nan."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class StopRequest:
    """Set by a signal handler; read by StopGuard between steps. `reason` names the signal (SIGINT)."""

    def __init__(self):
        self.reason: str | None = None


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopGuard(keras.callbacks.Callback):
    """Ends training between steps on a NaN loss, an exhausted time budget or a stop request.

    An exception leaves `fit` at once (no validation pass on half an epoch); train() then
    saves the state. At the last step of an epoch it waits for the epoch end instead, so the
    finished epoch is validated and recorded first.
    """

    def __init__(self, steps_per_epoch: int, epochs: int, deadline: float | None, request: StopRequest):
        super().__init__()
        self.steps_per_epoch, self.epochs, self.deadline, self.request = steps_per_epoch, epochs, deadline, request

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingStopped("nan")
        if global_step(self.model) % self.steps_per_epoch:
            self._check()

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 < self.epochs and not self.model.stop_training:
            self._check()

    def _check(self):
        if self.request.reason:
            raise TrainingStopped("interrupt")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TrainingStopped("time")


@contextlib.contextmanager
def stop_on_signals(echo: Callable[[str], None]) -> Iterator[StopRequest]:
    """Turn the first Ctrl-C, SIGTERM or SIGHUP into a stop request; a second one stops at once.

    SIGHUP (the terminal or ssh session went away) is a request to stop like SIGTERM, so a
    run started without nohup still saves its state. A signal the process ignores (under
    nohup, or Ctrl-C in a background job) stays ignored. Signal handlers can only be set from
    the main thread; elsewhere the signals keep what they had.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request.reason:
            raise KeyboardInterrupt
        request.reason = signal.Signals(signum).name
        echo("\nstopping after this step and saving the training state "
             "(press Ctrl-C again to quit at once without saving)")

    watched = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, handler) for sig in watched}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def history_csv(rows: list[dict], best_epoch: int) -> str:
    fields = list(dict.fromkeys(k for row in rows for k in row)) + ["best"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()},
                         "best": int(row["epoch"] == best_epoch)})
    return out.getvalue()


def _epoch_line(row: dict, level: str, improved: bool) -> str:
    unit = "bits/char" if level == "char" else "perplexity"
    key = "bpc" if level == "char" else "perplexity"
    parts = [f"epoch {row['epoch']}: loss {row['loss']:.4f} ({row[key]:.3f} {unit})"]
    if "val_loss" in row:
        parts.append(f"val_loss {row['val_loss']:.4f} ({row['val_' + key]:.3f} {unit})")
    parts.append("saved best model" if improved else "not better")
    return ", ".join(parts)
