"""Training: config -> corpus -> tokenizer -> datasets -> model.fit -> run directory.

The run directory holds:
    model.keras   the best model by validation loss (the single artifact generation needs)
    config.yaml   the resolved config the run used
    history.csv   per-epoch loss, validation loss, per-token metrics; `best` marks model.keras's epoch
    checkpoint/   the training state `--resume` continues from (see textgen/training/checkpoint.py)
    logs/         TensorBoard logs
    loss.png      training and validation curves, when matplotlib is installed

    cache/        the corpus encoded as memory-mapped token ids (see textgen/data/prepare.py)

A run starts fresh (fitting a tokenizer), from a saved model (`training.init_from`: its
tokenizer and architecture are reused) or from its own checkpoint (`resume=True`: the
saved tokenizer, weights, optimizer slots, step and history). The corpus is encoded once
into the cache and read from it by tf.data, so it never has to fit in memory. The batches
come from a stream that can be restarted at any step, so a resumed run trains on the same
batches and ends at the same epoch as one that was never interrupted.

Where it runs (one device, several, several machines), the precision and XLA are chosen by
textgen/training/distribute.py; only the chief worker writes the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import keras
import numpy as np

from textgen import __version__
from textgen.training.averaging import WeightAverager
from textgen.training.callbacks import (CROSS_ENTROPY, Checkpointer, RunProgressBar, RunRecorder, SamplePrinter, StopGuard,
                               TrainingStopped, global_step, metric_values, per_token_metrics, set_metric_values,
                               stop_on_signals)

__all__ = ["train", "TrainResult", "TrainingInterrupted", "per_token_metrics"]
from textgen.training.checkpoint import (checkpoint_dir, has_checkpoint, read_averages, read_state, read_tokenizer,
                                restore_checkpoint, write_tokenizer)
from textgen.config import (ARCHITECTURE_KEYS, STDIN, Config, ModelConfig, TokenizerConfig, absolute_path,
                            config_from_dict, ignored_settings, model_config_from_dict)
from textgen.data.dataset import (make_dataset, make_training_stream, replica_batch_size, split_ids,
                             steps_per_pass, validation_steps)
from textgen.data.unknown import encode_known
from textgen.training.distribute import DevicePlan, check_resumable_precision, kernel_report, plan_devices, private_dir
from textgen.errors import ConfigError, ModelFileError, TextgenError, UsageError
from textgen.models.layers import FORMAT_VERSION, find_token_embedding
from textgen.models.builder import architecture_summary, build_model
from textgen.training.plot import HISTORY_FILE
from textgen.data.prepare import PreparedCorpus, cache_dir, describe_cache, prepare_corpus
from textgen.training.rundir import RunDirectory, check_outside_corpus
from textgen.saving import update_model_card, write_file_atomic, write_text_atomic
from textgen.training.schedules import make_optimizer
from textgen.data.tokenizer import Tokenizer, tokenizer_from_config

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.yaml"
LOGS_DIR = "logs"
STDIN_FILE = "stdin.txt"  # its copy in the token cache

# Keys a resumed run must share with the run it continues: they fix the data, the batches,
# the architecture and the optimizer's slots. Every other key may change on resume.
FROZEN_ON_RESUME = {
    "corpus": None,  # None: the whole section
    "tokenizer": None,
    "model": ARCHITECTURE_KEYS,
    "training": ("seq_length", "batch_size", "shift_windows", "steps_per_epoch", "seed", "optimizer",
                 "unknown_tokens"),
}
KEPT_ON_RESUME = {("training", "init_from")}  # taken from the run being resumed; the flag is not needed again


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    history: list[dict]
    best_epoch: int
    stopped: str = "completed"  # completed | early_stopping | time_limit
    global_step: int = 0
    initial_val_loss: float | None = None  # fine-tuning: the saved model's loss on the new validation split
    chief: bool = True  # False on the other workers of a multi-worker run: the chief wrote the files
    best_step: int | None = None  # set when the kept weights are a budget stop's, part-way through an epoch


class TrainingInterrupted(TextgenError):
    """Ctrl-C, SIGTERM or SIGHUP stopped training; `what` says what was kept, the message how to go on.

    `resumable` is False when no checkpoint was written yet: then only a new start can follow.
    """

    def __init__(self, what: str, resumable: bool = True):
        super().__init__(f"{what}; " + ("add --resume to the same command to continue" if resumable
                                        else "run the same command again to start over"))
        self.what, self.resumable = what, resumable


@dataclass
class _Run:
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


def train(config: Config, *, overwrite: bool = False, resume: bool = False,
          echo: Callable[[str], None] = print, verbose: int = 1, callbacks: tuple = (),
          progress: TextIO | bool | None = True) -> TrainResult:
    """Train a model as `config` says and save it into the run directory.

    resume: continue the run in `config.output.dir` from its checkpoint instead of starting.
    callbacks: extra Keras callbacks, after textgen's own (e.g. to time steps).
    progress: where preparing the corpus shows its progress (True: stderr; None: nowhere).
    Raises TrainingInterrupted after Ctrl-C (the state is saved) and TextgenError on a NaN loss.
    """
    started = time.monotonic()
    if resume and overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it; pass only one")
    plan = plan_devices(config.training)  # first: a multi-worker strategy must set up TensorFlow itself
    replica_batch_size(config.training.batch_size, plan.replicas)
    if not plan.chief:  # only the chief reports and writes the run directory
        echo, verbose, progress = (lambda _: None), 0, None
    own_dir = None if plan.chief else private_dir()
    if not resume:
        check_new_run(config, overwrite=overwrite)
    try:
        with plan.policy(), _writer(config, plan, "textgen train" + (" --resume" if resume else "")) as directory:
            run = _resume_run(config, plan, own_dir, echo, progress) if resume else \
                _start_run(config, plan, own_dir, directory, echo, progress)
            return _fit(run, started, echo, verbose, callbacks)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


# --------------------------------------------------------------------------- starting a run


def check_new_run(config: Config, *, overwrite: bool = False) -> Path:
    """Check, before anything is written, that the run directory may take a new run.

    Only reads: the directory is taken (and an old run in it cleared) by `_start_run`,
    once the new run's corpus has been read and its model built.
    """
    run_dir = Path(config.output.dir)
    check_outside_corpus(run_dir, config.corpus.paths)
    if not overwrite:
        if _unfinished(run_dir):
            raise UsageError(f"{run_dir} holds an unfinished run; pass --resume to continue it, --overwrite "
                             "to start again, or --output to train into another directory")
        if (run_dir / MODEL_FILE).exists():
            raise UsageError(f"{run_dir} already holds a trained model; pass --overwrite to replace it "
                             "or --output to train into another directory")
    return run_dir


def _writer(config: Config, plan: DevicePlan, command: str):
    """The run directory, owned and locked for this process; on a non-chief worker nothing
    (the chief writes the run directory, the others their private ones)."""
    return RunDirectory(config.output.dir, command) if plan.chief else contextlib.nullcontext()


def _unfinished(run_dir: Path) -> bool:
    if not has_checkpoint(run_dir):
        return False
    try:
        return not read_state(run_dir).get("finished")
    except TextgenError:
        return True


def _start_run(config: Config, plan: DevicePlan, own_dir: Path | None, directory: RunDirectory | None, echo,
               progress) -> _Run:
    """A new run in `directory`; `own_dir` (a non-chief worker's private directory) takes the files instead."""
    run_dir = own_dir or Path(config.output.dir)
    parent, tokenizer = None, None
    if config.training.init_from:
        from textgen.generation.generate import load_keras_model

        parent = load_keras_model(config.training.init_from)
        given, config = config, adopt_architecture(config, parent)
        tokenizer = tokenizer_from_config(find_token_embedding(parent).tokenizer)
        before, after = given.to_dict(), config.to_dict()
        overridden = [f"{section}.{key}={value}" for section in ("model", "tokenizer")
                      for key, value in before[section].items() if value != after[section][key]]
        echo(f"fine-tuning {config.training.init_from}: its tokenizer and architecture "
             f"({architecture_summary(config.model)}) are reused"
             + (f"; the config's {', '.join(overridden)} {'does' if len(overridden) == 1 else 'do'} not apply"
                if overridden else ""))
    options = "drop to leave them out" + (" or unk to map them to <unk>"
                                          if tokenizer is not None and tokenizer.unk_id is not None else "")
    prepared = prepare_corpus(corpus_from_stdin(config, run_dir), cache_dir(run_dir), tokenizer=tokenizer,
                              unknown=config.training.unknown_tokens, hint=f"; set training.unknown_tokens={options}",
                              progress=progress)
    if parent is not None:
        _report_unknown(prepared, config, echo)
    echo(describe_cache(prepared))
    tokenizer, ids = prepared.tokenizer, prepared.ids
    train_ids, val_ids = split_ids(ids, config.corpus.validation_fraction, config.training.seq_length)
    card = {"format_version": FORMAT_VERSION, "textgen_version": __version__, "config": config.to_dict(),
            "corpus_tokens": int(len(ids)), "coverage": prepared.coverage, "precision": plan.precision}
    if parent is not None:
        card["init_from"] = {"path": str(config.training.init_from),
                             "history": find_token_embedding(parent).model_card.get("history")}
    steps = _steps_per_epoch(config, train_ids)
    model = _compiled_model(config, tokenizer, card, steps, plan)
    if parent is not None:
        try:
            model.set_weights(parent.get_weights())
        except ValueError:
            raise ModelFileError(f"{config.training.init_from}: its weights do not fit the architecture its "
                                 f"config describes ({architecture_summary(config.model)})") from None
    # Only once the new run can start (its corpus read, its model built) does an old one go:
    # a corpus too short or a network too big for memory keeps the old run whole, and its
    # model.keras stays until the new run's first good model replaces it.
    previous_model = directory.clear_previous_run() if directory is not None else False
    write_tokenizer(run_dir, tokenizer.get_config())  # first: it creates checkpoint/, which marks the run as ours
    write_text_atomic(run_dir / CONFIG_FILE, config.to_yaml())
    return _Run(config, run_dir, tokenizer, train_ids, val_ids, card, model, steps, prepared.fingerprint, plan,
                parent=parent, previous_model=previous_model)


def prepare(config: Config, *, progress: TextIO | bool | None = True) -> PreparedCorpus:
    """Encode the corpus into the run directory's token cache as a new run of `config` would.

    `train` does this itself and reuses the cache; running it first separates the long
    encoding pass from training (`textgen prepare`).
    """
    check_outside_corpus(Path(config.output.dir), config.corpus.paths)
    with RunDirectory(config.output.dir, "textgen prepare") as directory:
        return _prepare(config, directory.path, progress)


def _prepare(config: Config, run_dir: Path, progress) -> PreparedCorpus:
    tokenizer = None
    if config.training.init_from:
        from textgen.generation.generate import load_keras_model

        parent = load_keras_model(config.training.init_from)
        config = adopt_architecture(config, parent)
        tokenizer = tokenizer_from_config(find_token_embedding(parent).tokenizer)
    return prepare_corpus(corpus_from_stdin(config, run_dir), cache_dir(run_dir), tokenizer=tokenizer,
                          unknown=config.training.unknown_tokens,
                          hint="; set training.unknown_tokens=drop to leave them out", progress=progress)


def corpus_from_stdin(config: Config, run_dir: Path) -> Config:
    """`config` with its corpus path `-` (standard input) read from a copy in the run's cache.

    The corpus is read twice (the vocabulary, then the ids) and the cache is keyed on files,
    so standard input is copied once into cache/stdin.txt, a file of textgen's own, and the
    copy is read in its place. The config keeps `-`, which a resumed run gives again.
    """
    if STDIN not in config.corpus.paths:
        return config
    stream = sys.stdin
    example = "cat book.txt | textgen train --set \"corpus.paths=['-']\""
    if stream is None or stream.closed:
        raise UsageError(f"corpus path - reads standard input, which is closed; pipe the text in: {example}")
    if stream.isatty():
        raise UsageError(f"corpus path - reads standard input, which is a terminal; pipe the text in: {example}")
    target = cache_dir(run_dir) / STDIN_FILE
    target.parent.mkdir(parents=True, exist_ok=True)

    def copy(tmp: str) -> None:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(getattr(stream, "buffer", stream), out, 1 << 20)

    write_file_atomic(target, copy)
    paths = tuple(str(target) if path == STDIN else path for path in config.corpus.paths)
    return dataclasses.replace(config, corpus=dataclasses.replace(config.corpus, paths=paths))


def adopt_architecture(config: Config, parent: keras.Model) -> Config:
    """`config` with the architecture and tokenizer settings of the model being fine-tuned.

    The architecture keys come from the config in the parent's model card (every model
    `textgen train` saves holds one), so any architecture can be fine-tuned; dropout stays
    the new config's.
    """
    embedding = find_token_embedding(parent)
    saved = (embedding.model_card.get("config") or {}).get("model")
    if not isinstance(saved, dict):
        raise ModelFileError(f"{config.training.init_from} holds no training config, so its architecture is "
                             "unknown; fine-tune a model saved by textgen train")
    defaults = ModelConfig()  # keys added since the parent was saved had these values then
    try:
        shape = model_config_from_dict({key: saved.get(key, getattr(defaults, key)) for key in ARCHITECTURE_KEYS})
    except ConfigError as exc:
        raise ModelFileError(f"{config.training.init_from} holds a config this version cannot read ({exc})") from None
    model = dataclasses.replace(config.model, **{key: getattr(shape, key) for key in ARCHITECTURE_KEYS})
    known = {f.name for f in dataclasses.fields(TokenizerConfig)}
    tokenizer = dataclasses.replace(config.tokenizer, **{k: v for k, v in embedding.tokenizer.items() if k in known})
    return dataclasses.replace(config, model=model, tokenizer=tokenizer)


def _report_unknown(prepared: PreparedCorpus, config: Config, echo) -> None:
    if prepared.unknown:
        action = "left out" if config.training.unknown_tokens == "drop" else "mapped to <unk>"
        missing = prepared.missing
        shown = ", ".join(repr(t) for t in missing[:10])
        echo(f"{prepared.unknown:,} tokens of the corpus are not in the model's vocabulary and were {action}: "
             f"{shown}{' ...' if len(missing) > 10 else ''}")


def corpus_fingerprint(ids: np.ndarray) -> dict:
    """What --resume compares; textgen.data.prepare computes the same while writing the cache."""
    return {"tokens": int(len(ids)), "sha1": hashlib.sha1(np.ascontiguousarray(ids).tobytes()).hexdigest()}


def _steps_per_epoch(config: Config, train_ids: np.ndarray) -> int:
    return config.training.steps_per_epoch or steps_per_pass(len(train_ids), config.training.seq_length,
                                                             config.training.batch_size)


def _compiled_model(config: Config, tokenizer: Tokenizer, card: dict, steps_per_epoch: int,
                    plan: DevicePlan, state: dict | None = None, run_dir: Path | None = None) -> keras.Model:
    """The model built and compiled in the plan's strategy (and restored from `state`, if given)."""
    keras.utils.set_random_seed(config.training.seed)
    with plan.strategy.scope():
        model = build_model(config.model, tokenizer.get_config(), model_card=card, l2=config.training.l2,
                            fused_kernels=plan.fused_kernels)
        # With an L2 penalty Keras's `loss` includes it (validation too); the plain cross-entropy is
        # tracked beside it so history, bits per character and early stopping measure the text alone.
        metrics = [keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name=CROSS_ENTROPY)] \
            if config.training.l2 else []
        model.compile(optimizer=make_optimizer(config.training, steps_per_epoch),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=metrics,
                      jit_compile=plan.jit_compile)
        if state is not None:
            restore_checkpoint(run_dir, model, state)
    if plan.distribute == "multi_worker":
        _build_before_fit(model, plan, config.training)
    return model


def _build_before_fit(model: keras.Model, plan: DevicePlan, training) -> None:
    """Work around the two places where Keras 3's `fit` fails under MultiWorkerMirroredStrategy
    (keras-team/keras#20585), on this model instance only.

    1. The first `fit` builds the loss, metrics and optimizer from a batch it reduces across
       workers, which fails for (input, target) pairs: build them here from a local example
       batch, so that step has nothing left to do, and skip it.
    2. Each step's logs are averaged over all replicas along axis 0, which scalars lack:
       give every log value that axis (one entry per replica), so the average is the loss
       of the whole global batch, the same on every worker.
    """
    example = keras.ops.zeros((training.batch_size // plan.replicas, training.seq_length), dtype="int32")
    with plan.strategy.scope():
        model._symbolic_build(data_batch=(example, example))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

    def with_replica_axis(step):
        def run(data):
            return {name: keras.ops.reshape(value, (1,)) for name, value in step(data).items()}
        return run

    model.train_step = with_replica_axis(model.train_step)
    model.test_step = with_replica_axis(model.test_step)


# --------------------------------------------------------------------------- resuming a run


def _resume_run(config: Config, plan: DevicePlan, own_dir: Path | None, echo, progress) -> _Run:
    """The run in `config.output.dir` from its checkpoint; `own_dir` (a non-chief worker's
    private directory) takes the files written from here on."""
    saved_dir = Path(config.output.dir)
    state = read_state(saved_dir)
    config = merge_for_resume(config, with_absolute_paths(config_from_dict(state["config"])), saved_dir)
    _check_can_continue(config, state, saved_dir)
    check_resumable_precision(state.get("precision"), plan.precision)
    run_dir = own_dir or saved_dir
    tokenizer = tokenizer_from_config(read_tokenizer(saved_dir))  # never refitted
    changed = "; the corpus changed since the run started: resume with the same files or start again with --overwrite"
    unknown = config.training.unknown_tokens if config.training.init_from else \
        ("unk" if tokenizer.unk_id is not None else "error")
    prepared = prepare_corpus(corpus_from_stdin(config, run_dir), cache_dir(run_dir), tokenizer=tokenizer,
                              unknown=unknown, hint=changed, progress=progress)
    echo(describe_cache(prepared))
    fingerprint = prepared.fingerprint
    if fingerprint != state["corpus"]:
        raise UsageError(f"the corpus changed since the run in {saved_dir} started ({state['corpus']['tokens']:,} "
                         f"tokens then, {fingerprint['tokens']:,} now); resume with the same files or start again "
                         "with --overwrite")
    train_ids, val_ids = split_ids(prepared.ids, config.corpus.validation_fraction, config.training.seq_length)
    steps = _steps_per_epoch(config, train_ids)
    card = {**state["card"], "config": config.to_dict(), "precision": plan.precision}
    model = _compiled_model(config, tokenizer, card, steps, plan, state, saved_dir)
    write_text_atomic(run_dir / CONFIG_FILE, config.to_yaml())
    step = state["global_step"]
    echo(f"resuming {saved_dir} at epoch {step // steps + 1}, step {step % steps} of {steps} "
         f"(global step {step:,})")
    return _Run(config, run_dir, tokenizer, train_ids, val_ids, card, model, steps, fingerprint, plan, state=state,
                averages=read_averages(saved_dir, state), previous_model=bool(state.get("previous_model")))


def with_absolute_paths(saved: Config) -> Config:
    """A saved run config with its corpus paths and init_from absolute, as configs are loaded now.

    Runs started before configs held absolute paths saved them relative to the working
    directory they were started from; read from it again, they compare equal on resume.
    """
    cwd = os.getcwd()
    paths = tuple(absolute_path(p, cwd) for p in saved.corpus.paths)
    init_from = saved.training.init_from and absolute_path(saved.training.init_from, cwd)
    return dataclasses.replace(saved, corpus=dataclasses.replace(saved.corpus, paths=paths),
                               training=dataclasses.replace(saved.training, init_from=init_from))


def merge_for_resume(given: Config, saved: Config, run_dir: Path) -> Config:
    """The saved config with the keys that may change on resume taken from `given`.

    A frozen key that differs is a UsageError naming it. In a fine-tuning run the model shape
    and tokenizer come from the fine-tuned model, so those keys are not compared.
    """
    given_d, merged = given.to_dict(), saved.to_dict()
    for section, keys in FROZEN_ON_RESUME.items():
        for key in (keys or merged[section]):
            if saved.training.init_from and (section == "tokenizer" or section == "model"):
                continue
            if given_d[section][key] != merged[section][key]:
                raise UsageError(f"--resume: {section}.{key} is {merged[section][key]!r} in the run being resumed "
                                 f"({run_dir / CONFIG_FILE}) but {given_d[section][key]!r} now; resume with the "
                                 "original settings or start a new run with --overwrite")
    for section, values in given_d.items():
        frozen = FROZEN_ON_RESUME.get(section, ())
        if frozen is None:
            continue
        for key, value in values.items():
            if key not in frozen and (section, key) not in KEPT_ON_RESUME:
                merged[section][key] = value
    return config_from_dict(merged)


def _check_can_continue(config: Config, state: dict, run_dir: Path) -> None:
    done = state["recorder"]["rows"]
    if state.get("finished") == "early_stopping" and config.training.patience and \
            state["recorder"]["waited"] >= config.training.patience:
        raise UsageError(f"the run in {run_dir} stopped early after {len(done)} epochs (no better validation "
                         f"loss for {state['recorder']['waited']}); raise training.patience to train further")
    if len(done) >= config.training.epochs and state["global_step"] % state["steps_per_epoch"] == 0:
        raise UsageError(f"the run in {run_dir} already finished its {len(done)} epoch{'s' if len(done) != 1 else ''}; "
                         f"raise training.epochs to train further")


# --------------------------------------------------------------------------- fitting


def _fit(run: _Run, started: float, echo, verbose: int, extra_callbacks: tuple = ()) -> TrainResult:
    config, model, steps, plan = run.config, run.model, run.steps_per_epoch, run.plan
    training = config.training
    first_step = run.state["global_step"] if run.state else 0
    first_epoch, offset = divmod(first_step, steps)
    _describe_run(run, echo)
    # Validation runs a fixed number of steps over a repeated dataset: a distributed pipeline
    # that simply ends can hand replicas empty batches that still count in the mean.
    val_steps = validation_steps(len(run.val_ids), training.seq_length, training.batch_size, plan.replicas)
    val_ds = (_distributed(plan, lambda context: make_dataset(run.val_ids, training.seq_length, training.batch_size,
                                                              shuffle=False, input_context=context).repeat())
              if val_steps else None)
    initial_val_loss = None
    if run.parent is not None and val_ds is not None:
        initial_val_loss = _validation_loss(model, val_ds, val_steps)
        echo(f"starting point: val_loss {initial_val_loss:.4f} on the new corpus")

    averager = _averager(run, echo)
    weights = averager.averaged if averager else contextlib.nullcontext
    resumed = run.state["recorder"] if run.state else None
    recorder = RunRecorder(run.run_dir / MODEL_FILE, run.run_dir / HISTORY_FILE, run.card, run.tokenizer.level,
                           echo, patience=training.patience, resumed=resumed, weights=weights)

    def state() -> dict:
        return {"config": config.to_dict(), "card": run.card, "corpus": run.corpus, "steps_per_epoch": steps,
                "recorder": recorder.state(), "metrics": metric_values(model), "precision": plan.precision,
                "averaging": averager.state() if averager else None, "finished": None,
                "previous_model": _holds_previous_model(run, recorder)}

    checkpointer = Checkpointer(run.run_dir, training.checkpoint_every, steps, state,
                                restore_metrics=run.state["metrics"] if run.state and offset else None,
                                averages_fn=averager.arrays if averager else (lambda: None))
    seed_text = training.sample_seed or default_sample_seed(run.tokenizer, run.val_ids, run.train_ids)
    samples = SamplePrinter(_sample_every(run, seed_text, echo) if plan.chief else 0, training.sample_temperatures,
                            training.sample_length, seed_text, echo, weights=weights)
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(run.run_dir / LOGS_DIR), write_graph=False)
    deadline = started + training.max_minutes * 60 if training.max_minutes else None
    with stop_on_signals(echo) as request:
        guard = StopGuard(steps, training.epochs, deadline, request)
        # Keras appends its progress bar after these unless given one: first, it finishes the
        # epoch's bar before the recorder prints the epoch's summary and samples follow.
        callbacks = [*([RunProgressBar(training.epochs)] if verbose else []), *([averager] if averager else []),
                     recorder, checkpointer, samples, tensorboard, guard, *extra_callbacks]
        stopped = "completed"
        try:
            for start_epoch, end_epoch, epoch_steps in _epoch_plan(first_epoch, offset, training.epochs, steps):
                first = start_epoch * steps + steps - epoch_steps
                stream = _distributed(plan, lambda context, first=first: make_training_stream(
                    run.train_ids, training.seq_length, training.batch_size, seed=training.seed, start_step=first,
                    shift_windows=training.shift_windows, input_context=context))
                model.fit(stream, validation_data=val_ds, validation_steps=val_steps or None,
                          initial_epoch=start_epoch, epochs=end_epoch,
                          steps_per_epoch=epoch_steps, callbacks=callbacks, verbose=verbose,
                          shuffle=False)  # the stream shuffles itself
                if recorder.stopped_early:
                    stopped = "early_stopping"
                    break
        except TrainingStopped as stop:
            stopped = stop.reason
            _close(tensorboard)
            if stopped == "time" and val_ds is not None:
                with weights():
                    _validate_partial_epoch(run, recorder, val_ds, val_steps, echo)
        except KeyboardInterrupt:
            _close(tensorboard)
            if averager:  # a second Ctrl-C during validation: give the model its trained weights back
                averager.on_test_end()
            if not has_checkpoint(run.run_dir):
                raise TrainingInterrupted("training stopped at once, before its first checkpoint: there is "
                                          "nothing to resume from", resumable=False) from None
            raise TrainingInterrupted(f"training stopped at once without saving its last steps; "
                                      f"{_kept(run, recorder)} and the last checkpoint is kept") from None
    return _finish(run, recorder, checkpointer, stopped, initial_val_loss, echo)


def _sample_every(run: _Run, seed_text: str, echo) -> int:
    """training.sample_every, or 0 with a warning before training for a seed the model cannot read."""
    every = run.config.training.sample_every
    if every and run.tokenizer.unk_id is None:  # word models read unknown words as <unk>
        try:
            encode_known(run.tokenizer, seed_text, unknown="error")
        except UsageError as exc:
            echo(f"warning: training.sample_seed: {exc}; samples switched off")
            return 0
    return every


def _averager(run: _Run, echo) -> WeightAverager | None:
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


def _describe_run(run: _Run, echo) -> None:
    """The corpus, the model, where it trains and which recurrent kernels it can use."""
    config, plan = run.config, run.plan
    echo(f"corpus: {len(run.train_ids) + len(run.val_ids):,} tokens ({run.tokenizer.level} level, vocabulary "
         f"{run.tokenizer.vocab_size}); training on {len(run.train_ids):,}, validating on {len(run.val_ids):,}; "
         f"{run.steps_per_epoch} steps per epoch")
    if config.corpus.validation_fraction and not len(run.val_ids):
        echo(f"warning: the validation tail ({config.corpus.validation_fraction:g} of the corpus) is shorter than "
             f"one window of training.seq_length + 1 = {config.training.seq_length + 1} tokens, so nothing is held "
             "out and the kept model is the one with the lowest training loss; use a longer corpus, raise "
             "corpus.validation_fraction or lower training.seq_length")
    echo(f"model: {architecture_summary(config.model)}, {run.model.count_params():,} parameters")
    ignored = ignored_settings(config)
    if ignored:
        echo(f"note: not read by this model, so ignored: {', '.join(ignored)}")
    echo(plan.describe(config.training.batch_size))
    for line in kernel_report(run.model, plan):
        echo(line)


def _distributed(plan: DevicePlan, make: Callable):
    """make(None) on one device; otherwise each input pipeline's part of the same batches.

    `distribute_datasets_from_function` leaves the pipeline as it is, where
    `experimental_distribute_dataset` would rewrite it (copying the memory-mapped corpus).
    """
    if plan.distribute == "none":
        return make(None)
    return plan.strategy.distribute_datasets_from_function(make)


def _epoch_plan(first_epoch: int, offset: int, epochs: int, steps: int) -> list[tuple[int, int, int]]:
    """(initial_epoch, epochs, steps_per_epoch) for each fit call.

    A run resumed part-way through an epoch first finishes that epoch's remaining steps in
    a fit call of its own, then runs whole epochs.
    """
    plan = []
    if offset:
        plan.append((first_epoch, first_epoch + 1, steps - offset))
        first_epoch += 1
    if first_epoch < epochs:
        plan.append((first_epoch, epochs, steps))
    return plan


def _validation_loss(model: keras.Model, val_ds, val_steps: int) -> float:
    scores = model.evaluate(val_ds, steps=val_steps, verbose=0, return_dict=True)
    return float(scores.get(CROSS_ENTROPY, scores["loss"]))


def _validate_partial_epoch(run: _Run, recorder: RunRecorder, val_ds, val_steps: int, echo) -> None:
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


def _finish(run: _Run, recorder: RunRecorder, checkpointer: Checkpointer, stopped: str,
            initial_val_loss: float | None, echo) -> TrainResult:
    model, model_path, config = run.model, run.run_dir / MODEL_FILE, run.config
    step = global_step(model)
    epoch, within = divmod(step, run.steps_per_epoch)
    where = f"epoch {epoch + 1}, step {within} of {run.steps_per_epoch}" if within else f"the end of epoch {epoch}"
    if stopped == "nan":
        lr = config.training.learning_rate
        clip = (f"lower training.clipnorm (now {config.training.clipnorm:g})" if config.training.clipnorm
                else "set training.clipnorm (e.g. 1.0)")
        again = ("start again with --overwrite, or continue from the last checkpoint with --resume"
                 if has_checkpoint(run.run_dir) else "start again with --overwrite")
        raise TextgenError(f"the loss became NaN or infinite at {where}; {_kept(run, recorder)}; lower "
                           f"training.learning_rate (now {lr:g}, try {lr / 4:g}) or {clip}, then {again}")
    reason = {"time": "time_limit"}.get(stopped, stopped)
    if stopped in ("interrupt", "time"):
        checkpointer.save()
        if not model_path.exists():  # no epoch finished yet: keep what there is, so a model always exists
            recorder.save(stopped=reason, steps=step)
    else:
        checkpointer.save(finished=stopped)
    if recorder.best_epoch == 0 and stopped in ("completed", "early_stopping"):
        raise TextgenError("training produced no finite loss; lower training.learning_rate or set training.clipnorm")
    if model_path.exists() and recorder.best_epoch:  # the kept model's card says what ended the run
        update_model_card(model_path, recorder.card_with_history(stopped=reason, steps=step))
    if stopped == "interrupt":
        raise TrainingInterrupted(f"training interrupted at {where}; the training state is saved and "
                                  f"{_kept(run, recorder)}")
    if reason == "time_limit":
        echo(f"stopped at {where} after the {config.training.max_minutes:g}-minute budget "
             f"(training.max_minutes); {_kept(run, recorder)}; add --resume to continue "
             "(the budget starts again; change it with --set training.max_minutes=...)")
    if recorder.rows:
        _plot_if_possible(run.run_dir, echo)
    return TrainResult(run.run_dir, model_path, recorder.rows, recorder.best_epoch, reason, step, initial_val_loss,
                       chief=run.plan.chief, best_step=recorder.best_step)


def _holds_previous_model(run: _Run, recorder: RunRecorder) -> bool:
    """Whether model.keras is still the replaced run's: this run has saved no model of its own yet."""
    return run.previous_model and not recorder.best_epoch and recorder.best_step is None


def _kept(run: _Run, recorder: RunRecorder) -> str:
    if recorder.best_step is not None:
        epoch = recorder.best_step // run.steps_per_epoch + 1
        return (f"{run.run_dir / MODEL_FILE} keeps the weights at step {recorder.best_step}, part-way through "
                f"epoch {epoch} (val_loss {recorder.best_loss:.4f})")
    if recorder.best_epoch:
        kind = "val_loss" if len(run.val_ids) else "loss"
        return f"{run.run_dir / MODEL_FILE} keeps epoch {recorder.best_epoch} ({kind} {recorder.best_loss:.4f})"
    if _holds_previous_model(run, recorder):
        return f"{run.run_dir / MODEL_FILE} still holds the model of the run this one replaces"
    if (run.run_dir / MODEL_FILE).exists():
        return f"{run.run_dir / MODEL_FILE} holds the weights before any epoch finished"
    return "no epoch finished, so there is no model yet"


def _close(tensorboard) -> None:
    """fit left by an exception does not close TensorBoard's writers; close them so events are flushed."""
    try:
        tensorboard.on_train_end()
    except Exception:  # the writers may never have opened
        pass


def _plot_if_possible(run_dir: Path, echo) -> None:
    from textgen.training.plot import matplotlib_available, plot_history

    if not matplotlib_available():
        return
    try:
        echo(f"wrote {plot_history(run_dir)}")
    except TextgenError as exc:
        echo(f"no plot: {exc}")


def default_sample_seed(tokenizer: Tokenizer, val_ids: np.ndarray, train_ids: np.ndarray) -> str:
    """The first whole line with text in it of the validation text (the training text when
    there is none), at most 80 characters; the first 40 characters when no line is whole."""
    ids = val_ids if len(val_ids) else train_ids
    text = tokenizer.decode(ids[:400])
    whole = text.split("\n")[1:-1]  # the split may start mid-line; the 400 tokens may end mid-line
    line = next((line for line in whole if line.strip()), None)
    return line[:80] + "\n" if line is not None else text[:40]
