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
into the cache and read from it by tf.data, so it never has to fit in memory.

This module puts a run together; the jobs it hands out each have a module of their own:
    textgen/training/rundir.py        what may be written where, the lock, --overwrite, stdin
    textgen/training/reconcile.py     the config of a resumed or fine-tuned run
    textgen/training/fit.py           the fit loop and how a run ends
    textgen/training/distribute.py    devices, precision and XLA; only the chief worker writes
    textgen/training/multiworker.py   the workaround that lets Keras's fit run on several machines
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, NamedTuple, TextIO

import keras
import numpy as np

from textgen import __version__
from textgen.config import Config, config_from_dict
from textgen.data.dataset import replica_batch_size, split_ids, split_labelled, steps_per_pass
from textgen.data.labels import labels_for_model
from textgen.data.prepare import PreparedCorpus, cache_dir, describe_cache, prepare_corpus
from textgen.data.tokenizer import Tokenizer, tokenizer_from_config
from textgen.data.unknown import handled
from textgen.errors import ModelFileError, UsageError
from textgen.labels import LabelSpace
from textgen.models.architecture import architecture_card
from textgen.models.builder import architecture_summary, build_model
from textgen.models.layers import FORMAT_VERSION, find_label_embedding, find_token_embedding
from textgen.saving import load_keras_model
from textgen.files import write_text_atomic
from textgen.training.callbacks import CROSS_ENTROPY
from textgen.training.checkpoint import read_averages, read_state, read_tokenizer, restore_checkpoint, write_tokenizer
from textgen.training.distribute import DevicePlan, check_resumable_precision, plan_devices, private_dir
from textgen.training.fit import Run, TrainingInterrupted, TrainResult, fit
from textgen.training.multiworker import prepare_for_multi_worker_fit
from textgen.training.pairs_run import resume_pairs_run, start_pairs_run
from textgen.training.reconcile import (CORPUS_CHANGED, adopt_architecture, check_can_continue, check_same_corpus,
                                        describe_adoption, merge_for_resume, with_absolute_paths)
from textgen.training.rundir import (CONFIG_FILE, MODEL_FILE, RunDirectory, check_new_run, check_outside_corpus,
                                     corpus_from_stdin, open_for_writing)
from textgen.training.schedules import make_optimizer

__all__ = ["train", "prepare", "TrainResult", "TrainingInterrupted", "MODEL_FILE"]


def train(config: Config, *, overwrite: bool = False, resume: bool = False,
          echo: Callable[[str], None] | None = print, verbose: int = 1, callbacks: tuple = (),
          progress: TextIO | bool | None = True) -> TrainResult:
    """Train a model as `config` says, save it into the run directory and return a TrainResult.

    The same function as `textgen train`; docs/python.md shows it with configs and generation.
    overwrite: replace the files of an earlier run in `config.output.dir` (`--overwrite`).
    resume: continue the run in `config.output.dir` from its checkpoint instead of starting;
        `config` may raise training.epochs (keys that fix data and model must stay as they were).
    echo: where the run's report lines go (None: nowhere); verbose: Keras's progress bar (0: none).
    callbacks: extra Keras callbacks, after textgen's own (e.g. to time steps).
    progress: where preparing the corpus shows its progress (True: stderr; None: nowhere).
    Raises TrainingInterrupted after Ctrl-C (the state is saved), UsageError and ConfigError for
    a request that cannot run, and TextgenError on a NaN loss.
    """
    started = time.monotonic()
    echo = echo or (lambda _: None)
    if resume and overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it; pass only one")
    plan = plan_devices(config.training)  # first: a multi-worker strategy must set up TensorFlow itself
    replica_batch_size(config.training.batch_size, plan.replicas)
    if not plan.chief:  # only the chief reports and writes the run directory
        echo, verbose, progress = (lambda _: None), 0, None
    own_dir = None if plan.chief else private_dir()
    if not resume:
        check_new_run(config, overwrite=overwrite)
    command = "textgen train" + (" --resume" if resume else "")
    try:
        with plan.policy(), open_for_writing(config, plan.chief, command) as directory:
            run = _resume_run(config, plan, own_dir, echo, progress) if resume else \
                _start_run(config, plan, own_dir, directory, echo, progress)
            return fit(run, started, echo, verbose, callbacks)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def prepare(config: Config, *, progress: TextIO | bool | None = True) -> PreparedCorpus:
    """Encode the corpus into the run directory's token cache as a new run of `config` would.

    `train` does this itself and reuses the cache; running it first separates the long
    encoding pass from training (`textgen prepare`).
    """
    if config.model.type == "seq2seq":
        raise UsageError("a seq2seq run reads its pairs into memory when it starts, so there is no token cache "
                         "to prepare; run textgen train")
    check_outside_corpus(Path(config.output.dir), config.corpus.paths)
    with RunDirectory(config.output.dir, "textgen prepare") as directory:
        _, config, tokenizer = _fine_tuned(config)
        return prepare_corpus(corpus_from_stdin(config, directory.path), cache_dir(directory.path),
                              tokenizer=tokenizer, on_unknown=config.training.unknown_tokens,
                              hint="; set training.unknown_tokens=drop to leave them out", progress=progress)


# --------------------------------------------------------------------------- starting a run


def _start_run(config: Config, plan: DevicePlan, own_dir: Path | None, directory: RunDirectory | None, echo,
               progress) -> Run:
    """A new run in `directory`; `own_dir` (a non-chief worker's private directory) takes the files instead."""
    if config.model.type == "seq2seq":
        return start_pairs_run(config, plan, own_dir, directory, echo)
    run_dir = own_dir or Path(config.output.dir)
    given = config
    parent, config, tokenizer = _fine_tuned(config)
    if parent is not None:
        echo(describe_adoption(given, config))
        if config.corpus.labels != "none" and find_label_embedding(parent) is None:  # before the long encoding
            raise UsageError(f"training.init_from {config.training.init_from} has no labels, so it cannot learn "
                             f"a labelled corpus (corpus.labels={config.corpus.labels}); set corpus.labels=none, "
                             "or train a new model")
    options = "drop to leave them out" + (" or unk to map them to <unk>"
                                          if tokenizer is not None and tokenizer.unk_id is not None else "")
    prepared = prepare_corpus(corpus_from_stdin(config, run_dir), cache_dir(run_dir), tokenizer=tokenizer,
                              on_unknown=config.training.unknown_tokens, hint=f"; set training.unknown_tokens={options}",
                              progress=progress)
    if parent is not None and prepared.unknown_count:
        echo(handled(prepared.unknown_count, prepared.unknown_tokens, config.training.unknown_tokens))
    echo(describe_cache(prepared))
    tokenizer = prepared.tokenizer
    space = prepared.label_space
    if parent is not None:  # fine-tuning keeps the model's labels, whatever the corpus has
        layer = find_label_embedding(parent)
        space = LabelSpace.from_card(layer.groups) if layer is not None else None
    split = _split(config, prepared, space, f"training.init_from {config.training.init_from}")
    card = _model_card(config, prepared, plan, parent, space)
    steps = _steps_per_epoch(config, split.train_ids)
    model = _compiled_model(config, tokenizer, card, steps, plan, labels=space)
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
    return Run(config, run_dir, tokenizer, split.train_ids, split.val_ids, card, model, steps, prepared.fingerprint,
               plan, parent=parent, previous_model=previous_model, **split.labels(space))


def _fine_tuned(config: Config) -> tuple[keras.Model | None, Config, Tokenizer | None]:
    """The model `training.init_from` names, `config` with its architecture, and its tokenizer;
    without init_from, (None, config, None)."""
    if not config.training.init_from:
        return None, config, None
    parent = load_keras_model(config.training.init_from)
    return parent, adopt_architecture(config, parent), tokenizer_from_config(find_token_embedding(parent).tokenizer)


class _Split(NamedTuple):
    train_ids: np.ndarray
    val_ids: np.ndarray
    train_labels: np.ndarray | None
    val_labels: np.ndarray | None

    def labels(self, space: LabelSpace | None) -> dict:
        """The label fields of a `Run`."""
        return {"train_labels": self.train_labels, "val_labels": self.val_labels, "label_space": space}


def _split(config: Config, prepared: PreparedCorpus, space: LabelSpace | None, model: str) -> _Split:
    """The training and validation splits, with each token's labels numbered as the model's
    `space` numbers them (None for an unconditioned model)."""
    fraction, seq_length = config.corpus.validation_fraction, config.training.seq_length
    labels = labels_for_model(prepared.labels, prepared.label_space, space, len(prepared.ids), model) \
        if space is not None or prepared.label_space is not None else None
    if labels is None:
        return _Split(*split_ids(prepared.ids, fraction, seq_length), None, None)
    segments = prepared.segments or [(0, len(prepared.ids))]  # an unlabelled corpus: one segment of `any`
    return _Split(*split_labelled(prepared.ids, labels, segments, fraction, seq_length))


def _model_card(config: Config, prepared: PreparedCorpus, plan: DevicePlan, parent: keras.Model | None,
                space: LabelSpace | None = None) -> dict:
    """What model.keras records about how it was made."""
    card = {"format_version": FORMAT_VERSION, "textgen_version": __version__, "config": config.to_dict(),
            "corpus_tokens": int(len(prepared.ids)), "coverage": prepared.coverage, "precision": plan.precision,
            "architecture": architecture_card(config.model)}
    if space is not None:
        card["labels"] = space.to_card()
    if parent is not None:
        card["init_from"] = {"path": str(config.training.init_from),
                             "history": find_token_embedding(parent).model_card.get("history")}
    return card


def _steps_per_epoch(config: Config, train_ids: np.ndarray) -> int:
    return config.training.steps_per_epoch or steps_per_pass(len(train_ids), config.training.seq_length,
                                                             config.training.batch_size)


def _compiled_model(config: Config, tokenizer: Tokenizer, card: dict, steps_per_epoch: int,
                    plan: DevicePlan, state: dict | None = None, run_dir: Path | None = None,
                    labels: LabelSpace | None = None) -> keras.Model:
    """The model built and compiled in the plan's strategy (and restored from `state`, if given);
    conditioned on `labels` when given."""
    keras.utils.set_random_seed(config.training.seed)
    with plan.strategy.scope():
        model = build_model(config.model, tokenizer.get_config(), model_card=card, l2=config.training.l2,
                            fused_kernels=plan.fused_kernels, labels=labels)
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
        prepare_for_multi_worker_fit(model, plan, config.training)
    return model


# --------------------------------------------------------------------------- resuming a run


def _resume_run(config: Config, plan: DevicePlan, own_dir: Path | None, echo, progress) -> Run:
    """The run in `config.output.dir` from its checkpoint; `own_dir` (a non-chief worker's
    private directory) takes the files written from here on."""
    saved_dir = Path(config.output.dir)
    state = read_state(saved_dir)
    if state["config"]["model"]["type"] == "seq2seq":
        return resume_pairs_run(config, plan, own_dir, echo)
    config = merge_for_resume(config, with_absolute_paths(config_from_dict(state["config"])), saved_dir)
    check_can_continue(config, state, saved_dir)
    check_resumable_precision(state.get("precision"), plan.precision)
    run_dir = own_dir or saved_dir
    tokenizer = tokenizer_from_config(read_tokenizer(saved_dir))  # never refitted
    unknown = config.training.unknown_tokens if config.training.init_from else \
        ("unk" if tokenizer.unk_id is not None else "error")
    prepared = prepare_corpus(corpus_from_stdin(config, run_dir), cache_dir(run_dir), tokenizer=tokenizer,
                              on_unknown=unknown, hint=CORPUS_CHANGED, progress=progress)
    echo(describe_cache(prepared))
    check_same_corpus(state["corpus"], prepared.fingerprint, saved_dir)
    space = LabelSpace.from_card(state["card"].get("labels"))
    split = _split(config, prepared, space, f"the run being resumed ({saved_dir})")
    steps = _steps_per_epoch(config, split.train_ids)
    card = {**state["card"], "config": config.to_dict(), "precision": plan.precision}
    model = _compiled_model(config, tokenizer, card, steps, plan, state, saved_dir, labels=space)
    write_text_atomic(run_dir / CONFIG_FILE, config.to_yaml())
    step = state["global_step"]
    echo(f"resuming {saved_dir} at epoch {step // steps + 1}, step {step % steps} of {steps} "
         f"(global step {step:,})")
    return Run(config, run_dir, tokenizer, split.train_ids, split.val_ids, card, model, steps, prepared.fingerprint,
               plan, state=state, averages=read_averages(saved_dir, state),
               previous_model=bool(state.get("previous_model")), **split.labels(space))
