"""The fit loop: Keras's `fit` with textgen's callbacks, and how a run ends.

However a run started (fresh, fine-tuned or resumed), it arrives here as a `Run`. Its
batches come from a stream that can restart at any step, so a run resumed part-way through
an epoch first finishes that epoch in a `fit` call of its own and then runs whole epochs,
training on the same batches as a run never interrupted. A run ends by completing its
epochs, stopping early, a NaN loss, its time budget or a signal; each end saves what it can
(the checkpoint, the best model, the model card's history) and says how to go on.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import keras
import numpy as np

from textgen.config import Config
from textgen.data.dataset import make_dataset, make_training_stream, validation_steps
from textgen.data.unknown import encode_known
from textgen.data.tokenizer import Tokenizer
from textgen.errors import TextgenError, UsageError
from textgen.labels import LabelSpace
from textgen.saving import update_model_card
from textgen.training import advice
from textgen.training.averaging import WeightAverager
from textgen.training.callbacks import (CROSS_ENTROPY, Checkpointer, PairSamplePrinter, RunProgressBar, RunRecorder,
                                        SamplePrinter,
                                        StopGuard, TrainingStopped, global_step, metric_values, set_metric_values,
                                        stop_on_signals)
from textgen.training.checkpoint import has_checkpoint
from textgen.training.describe import describe_run
from textgen.training.distribute import DevicePlan
from textgen.training.plot import HISTORY_FILE
from textgen.training.rundir import LOGS_DIR, MODEL_FILE
from textgen.training.schedules import BudgetCosineSchedule, budget_clock, learning_rate_schedule
from textgen.training.tensorboard_log import TensorBoardLog

if TYPE_CHECKING:
    from textgen.training.pairs_run import PairSplit


@dataclass
class TrainResult:
    """What `train` returns: where the run is and how it went.

    `history` holds history.csv's rows as dicts (epoch from 1, loss, bpc or perplexity, and
    val_loss, val_bpc or val_perplexity when there is a validation split, seconds), over every
    session of the run, so a resumed run's result includes the epochs before the resume.
    `textgen.load(result.model_path)` gives a Generator for the kept model.
    """

    run_dir: Path  # the run directory (output.dir)
    model_path: Path  # run_dir/model.keras: the best weights, the file generation needs
    history: list[dict]
    best_epoch: int  # the epoch (from 1) whose weights model.keras holds; 0 if none finished
    stopped: str = "completed"  # completed | early_stopping | time_limit
    global_step: int = 0  # optimizer steps over every session of the run
    initial_val_loss: float | None = None  # fine-tuning: the saved model's loss on the new validation split
    chief: bool = True  # False on the other workers of a multi-worker run: the chief wrote the files
    best_step: int | None = None  # set when the kept weights are a budget stop's, part-way through an epoch
    best_loss: float | None = None  # the kept weights' validation loss (training loss without a validation split)

    @property
    def final_loss(self) -> float | None:
        """The last finished epoch's training loss (cross-entropy in nats per token)."""
        return self.history[-1]["loss"] if self.history else None

    @property
    def final_val_loss(self) -> float | None:
        """The last finished epoch's validation loss; None without a validation split."""
        return self.history[-1].get("val_loss") if self.history else None


class TrainingInterrupted(TextgenError):
    """Ctrl-C, SIGTERM or SIGHUP stopped training; `what` says what was kept, the message how to go on.

    `resumable` is False when no checkpoint was written yet: then only a new start can follow.
    """

    def __init__(self, what: str, resumable: bool = True):
        super().__init__(advice.interrupted(what, resumable))
        self.what, self.resumable = what, resumable


@dataclass
class Run:
    """Everything fit needs, however the run started."""

    config: Config
    run_dir: Path
    tokenizer: Tokenizer
    train_ids: np.ndarray
    val_ids: np.ndarray
    card: dict
    model: keras.Model
    steps_per_epoch: int
    corpus: dict  # token count and digest, checked on resume
    plan: DevicePlan
    state: dict | None = None  # the checkpoint being resumed
    parent: keras.Model | None = None  # the model being fine-tuned
    averages: list[np.ndarray] | None = None  # the averaged weights the checkpoint holds
    previous_model: bool = False  # model.keras still holds the model of the run this one replaces
    train_labels: np.ndarray | None = None  # a conditioned model: each training token's label ids (tokens, groups)
    val_labels: np.ndarray | None = None  # ... and each validation token's
    label_space: LabelSpace | None = None  # a conditioned model's label groups
    pairs: "PairSplit | None" = None  # a seq2seq model's pairs (textgen.training.pairs_run), instead of ids

    @property
    def first_step(self) -> int:
        return self.state["global_step"] if self.state else 0


def fit(run: Run, started: float, echo, verbose: int, extra_callbacks: tuple = ()) -> TrainResult:
    """Train `run` to its last epoch (or until it stops) and save the results into its run directory."""
    training = run.config.training
    describe_run(run, echo)
    val_ds, val_steps = _validation_data(run)
    initial_val_loss = None
    if run.parent is not None and val_ds is not None:
        initial_val_loss = _validation_loss(run.model, val_ds, val_steps)
        echo(f"starting point: val_loss {initial_val_loss:.4f} on the new corpus")
    averager = _averager(run, echo)
    weights = averager.averaged if averager else contextlib.nullcontext
    recorder = RunRecorder(run.run_dir / MODEL_FILE, run.run_dir / HISTORY_FILE, run.card, run.tokenizer.level,
                           echo, patience=training.patience, resumed=run.state["recorder"] if run.state else None,
                           weights=weights)
    schedule = learning_rate_schedule(run.model.optimizer)
    deadline, clock = budget_clock(schedule, training, started, (run.state or {}).get("budget_progress"))
    checkpointer = _checkpointer(run, recorder, averager, lambda: _budget_progress(schedule, clock))
    samples = _sample_printer(run, weights, echo)
    tensorboard = TensorBoardLog(run.run_dir / LOGS_DIR, run.tokenizer.level, training.log_every_steps,
                                 schedule, run.config.to_yaml())
    with stop_on_signals(echo) as request, contextlib.closing(tensorboard):
        guard = StopGuard(run.steps_per_epoch, training.epochs, deadline, request)
        # Keras appends its progress bar after these unless given one: first, it finishes the
        # epoch's bar before the recorder prints the epoch's summary and samples follow.
        callbacks = [*([RunProgressBar(training.epochs)] if verbose else []), *([clock] if clock else []),
                     *([averager] if averager else []), recorder, checkpointer, samples, tensorboard, guard,
                     *extra_callbacks]
        try:
            stopped = _fit_epochs(run, callbacks, recorder, val_ds, val_steps, verbose)
        except TrainingStopped as stop:
            stopped = stop.reason
            if stopped == "time" and val_ds is not None:
                with weights():
                    _validate_partial_epoch(run, recorder, val_ds, val_steps, echo)
        except KeyboardInterrupt:
            if averager:  # a second Ctrl-C during validation: give the model its trained weights back
                averager.on_test_end()
            if not has_checkpoint(run.run_dir):
                raise TrainingInterrupted("training stopped at once, before its first checkpoint: there is "
                                          "nothing to resume from", resumable=False) from None
            raise TrainingInterrupted(f"training stopped at once without saving its last steps; "
                                      f"{_kept(run, recorder)} and the last checkpoint is kept") from None
    return _finish(run, recorder, checkpointer, stopped, initial_val_loss, echo)


def _fit_epochs(run: Run, callbacks: list, recorder: RunRecorder, val_ds, val_steps: int, verbose: int) -> str:
    """Run `fit` over the epochs left; "early_stopping" or "completed"."""
    training, steps = run.config.training, run.steps_per_epoch
    first_epoch, offset = divmod(run.first_step, steps)
    calls = fit_calls(first_epoch, offset, training.epochs, steps)
    if not calls:  # resumed after its last epoch was saved: nothing to fit, the end of the run to write
        for callback in callbacks:
            callback.set_model(run.model)
    for start_epoch, end_epoch, epoch_steps in calls:
        first = start_epoch * steps + steps - epoch_steps
        corpus = run.config.corpus
        stream = run.pairs.training_stream(training.batch_size, training.seed, first) if run.pairs else \
            distributed(run.plan, lambda context, first=first: make_training_stream(
            run.train_ids, training.seq_length, training.batch_size, seed=training.seed, start_step=first,
            shift_windows=training.shift_windows, input_context=context, labels=run.train_labels,
            label_balance=corpus.label_balance, label_dropout=corpus.label_dropout))
        run.model.fit(stream, validation_data=val_ds, validation_steps=val_steps or None,
                      initial_epoch=start_epoch, epochs=end_epoch, steps_per_epoch=epoch_steps,
                      callbacks=callbacks, verbose=verbose, shuffle=False)  # the stream shuffles itself
        if recorder.stopped_early:
            return "early_stopping"
    return "completed"


def fit_calls(first_epoch: int, offset: int, epochs: int, steps: int) -> list[tuple[int, int, int]]:
    """(initial_epoch, epochs, steps_per_epoch) for each fit call.

    A run resumed part-way through an epoch first finishes that epoch's remaining steps in
    a fit call of its own, then runs whole epochs.
    """
    calls = []
    if offset:
        calls.append((first_epoch, first_epoch + 1, steps - offset))
        first_epoch += 1
    if first_epoch < epochs:
        calls.append((first_epoch, epochs, steps))
    return calls


def distributed(plan: DevicePlan, make: Callable):
    """make(None) on one device; otherwise each input pipeline's part of the same batches.

    `distribute_datasets_from_function` leaves the pipeline as it is, where
    `experimental_distribute_dataset` would rewrite it (copying the memory-mapped corpus).
    """
    if plan.distribute == "none":
        return make(None)
    return plan.strategy.distribute_datasets_from_function(make)


def _validation_data(run: Run):
    """The validation dataset and its steps per pass, or (None, 0) without a validation split.

    Validation runs a fixed number of steps over a repeated dataset: a distributed pipeline
    that simply ends can hand replicas empty batches that still count in the mean.
    """
    training = run.config.training
    if run.pairs is not None:
        return run.pairs.validation(training.batch_size)
    val_steps = validation_steps(len(run.val_ids), training.seq_length, training.batch_size, run.plan.replicas)
    if not val_steps:
        return None, 0
    return distributed(run.plan, lambda context: make_dataset(
        run.val_ids, training.seq_length, training.batch_size, shuffle=False, input_context=context,
        labels=run.val_labels).repeat()), val_steps


def _checkpointer(run: Run, recorder: RunRecorder, averager: WeightAverager | None,
                  budget_progress: Callable[[], float | None]) -> Checkpointer:
    """The Checkpointer saving everything a resume of this run reads."""
    config, offset = run.config, run.first_step % run.steps_per_epoch

    def state() -> dict:
        return {"config": config.to_dict(), "card": run.card, "corpus": run.corpus,
                "steps_per_epoch": run.steps_per_epoch, "recorder": recorder.state(),
                "metrics": metric_values(run.model), "precision": run.plan.precision,
                "averaging": averager.state() if averager else None, "finished": None,
                "previous_model": _holds_previous_model(run, recorder), "budget_progress": budget_progress()}

    return Checkpointer(run.run_dir, config.training.checkpoint_every, run.steps_per_epoch, state,
                        restore_metrics=run.state["metrics"] if run.state and offset else None,
                        averages_fn=averager.arrays if averager else (lambda: None))


def _budget_progress(schedule, clock) -> float | None:
    """The fraction of its time budget a run decaying over it has used (None for other schedules)."""
    if clock is not None:
        return clock.progress()
    return float(schedule.progress.numpy()) if isinstance(schedule, BudgetCosineSchedule) else None


def _sample_printer(run: Run, weights, echo) -> SamplePrinter:
    training = run.config.training
    if run.pairs is not None:
        return PairSamplePrinter(training.sample_every if run.plan.chief else 0, run.pairs.val_or_train_sources(3),
                                 echo, weights=weights)
    seed_text = training.sample_seed or default_sample_seed(run.tokenizer, run.val_ids, run.train_ids)
    every = _sample_every(run, seed_text, echo) if run.plan.chief else 0
    return SamplePrinter(every, training.sample_temperatures, training.sample_length, seed_text, echo,
                         weights=weights)


def _sample_every(run: Run, seed_text: str, echo) -> int:
    """training.sample_every, or 0 with a warning before training for a seed the model cannot read."""
    every = run.config.training.sample_every
    if every and run.tokenizer.unk_id is None:  # word models read unknown words as <unk>
        try:
            encode_known(run.tokenizer, seed_text, "error")
        except UsageError as exc:
            echo(f"warning: training.sample_seed: {exc}; samples switched off")
            return 0
    return every


def default_sample_seed(tokenizer: Tokenizer, val_ids: np.ndarray, train_ids: np.ndarray) -> str:
    """The first whole line with text in it of the validation text (the training text when
    there is none), at most 80 characters; the first 40 characters when no line is whole."""
    ids = val_ids if len(val_ids) else train_ids
    text = tokenizer.decode(ids[:400])
    whole = text.split("\n")[1:-1]  # the split may start mid-line; the 400 tokens may end mid-line
    line = next((line for line in whole if line.strip()), None)
    return line[:80] + "\n" if line is not None else text[:40]


def _averager(run: Run, echo) -> WeightAverager | None:
    """The weight average training keeps (training.ema_momentum), continuing a resumed run's."""
    momentum = run.config.training.ema_momentum
    if not momentum:
        return None
    saved = (run.state or {}).get("averaging") or {}
    if run.state and run.averages is None:
        echo(f"weight averaging (momentum {momentum:g}) starts now: the run being resumed kept no average")
    else:
        echo(f"weight averaging: momentum {momentum:g}; validation, samples and {MODEL_FILE} use the averaged "
             "weights, training continues from the trained ones")
    return WeightAverager(momentum, run.averages, saved.get("count", 0) if run.averages is not None else 0)


def _validation_loss(model: keras.Model, val_ds, val_steps: int) -> float:
    scores = model.evaluate(val_ds, steps=val_steps, verbose=0, return_dict=True)
    return float(scores.get(CROSS_ENTROPY, scores["loss"]))


def _validate_partial_epoch(run: Run, recorder: RunRecorder, val_ds, val_steps: int, echo) -> None:
    """The budget ran out part-way through an epoch: score the weights reached and keep them if
    they beat every finished epoch, so the steps since the last epoch end are not lost."""
    step = global_step(run.model)
    epoch, within = divmod(step, run.steps_per_epoch)
    if not within:  # stopped at an epoch end: that epoch is validated and recorded already
        return
    running = metric_values(run.model)  # evaluate resets the epoch's running loss, which a resume carries on
    val_loss = _validation_loss(run.model, val_ds, val_steps)
    set_metric_values(run.model, running)
    kept = recorder.consider_partial(step, val_loss, stopped="time_limit", steps=step)
    echo(f"step {step} (epoch {epoch + 1}, step {within} of {run.steps_per_epoch}): val_loss {val_loss:.4f}, "
         + ("better than every finished epoch: saved as the model" if kept else "not better"))


def _finish(run: Run, recorder: RunRecorder, checkpointer: Checkpointer, stopped: str,
            initial_val_loss: float | None, echo) -> TrainResult:
    """Save the state a run ended in, then raise or report as the way it ended calls for."""
    model_path, training = run.run_dir / MODEL_FILE, run.config.training
    step = global_step(run.model)
    epoch, within = divmod(step, run.steps_per_epoch)
    where = f"epoch {epoch + 1}, step {within} of {run.steps_per_epoch}" if within else f"the end of epoch {epoch}"
    if stopped == "nan":
        raise TextgenError(f"the loss became NaN or infinite at {where}; {_kept(run, recorder)}; "
                           f"{advice.steadier_training(training)}, then "
                           f"{advice.start_again_or_resume(has_checkpoint(run.run_dir))}")
    reason = {"time": "time_limit"}.get(stopped, stopped)
    if stopped in ("interrupt", "time"):
        checkpointer.save()
        if not model_path.exists():  # no epoch finished yet: keep what there is, so a model always exists
            recorder.save(stopped=reason, steps=step)
    else:
        checkpointer.save(finished=stopped)
    if recorder.best_epoch == 0 and stopped in ("completed", "early_stopping"):
        raise TextgenError(f"training produced no finite loss; {advice.steadier_training(training)}")
    if model_path.exists() and recorder.best_epoch:  # the kept model's card says what ended the run
        update_model_card(model_path, recorder.card_with_history(stopped=reason, steps=step))
    if stopped == "interrupt":
        raise TrainingInterrupted(f"training interrupted at {where}; the training state is saved and "
                                  f"{_kept(run, recorder)}")
    if reason == "time_limit":
        echo(advice.budget_spent(where, _kept(run, recorder), training.max_minutes))
    if recorder.rows:
        _plot_if_possible(run.run_dir, echo)
    return TrainResult(run.run_dir, model_path, recorder.rows, recorder.best_epoch, reason, step, initial_val_loss,
                       chief=run.plan.chief, best_step=recorder.best_step,
                       best_loss=None if math.isinf(recorder.best_loss) else recorder.best_loss)


def _holds_previous_model(run: Run, recorder: RunRecorder) -> bool:
    """Whether model.keras is still the replaced run's: this run has saved no model of its own yet."""
    return run.previous_model and not recorder.best_epoch and recorder.best_step is None


def _kept(run: Run, recorder: RunRecorder) -> str:
    """Which weights model.keras holds now, for the messages that end a run."""
    path = run.run_dir / MODEL_FILE
    if recorder.best_step is not None:
        epoch = recorder.best_step // run.steps_per_epoch + 1
        return (f"{path} keeps the weights at step {recorder.best_step}, part-way through epoch {epoch} "
                f"(val_loss {recorder.best_loss:.4f})")
    if recorder.best_epoch:
        kind = "val_loss" if len(run.val_ids) else "loss"
        return f"{path} keeps epoch {recorder.best_epoch} ({kind} {recorder.best_loss:.4f})"
    if _holds_previous_model(run, recorder):
        return f"{path} still holds the model of the run this one replaces"
    if path.exists():
        return f"{path} holds the weights before any epoch finished"
    return "no epoch finished, so there is no model yet"


def _plot_if_possible(run_dir: Path, echo) -> None:
    from textgen.training.plot import matplotlib_available, plot_history

    if not matplotlib_available():
        return
    try:
        echo(f"wrote {plot_history(run_dir)}")
    except TextgenError as exc:
        echo(f"no plot: {exc}")
