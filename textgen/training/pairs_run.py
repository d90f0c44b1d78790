"""A sequence-to-sequence run: pairs files -> two tokenizers -> encoded pairs -> the encoder-decoder.

`train` hands a run with `model.type: seq2seq` here to start or resume; what comes back is
the same `Run` language models fill, with its `pairs` set, so the fit loop, checkpoints,
the time budget, the recorder and the run directory's rules are the ones every run has.
Pairs are read whole into memory (a pairs file is sentences, not books), so there is no
token cache: the fingerprint a resume compares is a digest of the encoded pairs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from textgen import __version__
from textgen.config import Config, config_from_dict
from textgen.data.pairs import (PAD, EncodedPairs, PairTokenizers, encode_pairs, pair_dataset, pair_steps, read_pairs,
                                split_pairs)
from textgen.errors import CorpusError, UsageError
from textgen.models.architecture import architecture_card
from textgen.models.layers import FORMAT_VERSION
from textgen.models.seq2seq import build_seq2seq
from textgen.files import write_text_atomic
from textgen.training.checkpoint import read_averages, read_state, read_tokenizer, restore_checkpoint, write_tokenizer
from textgen.training.distribute import DevicePlan, check_resumable_precision
from textgen.training.fit import Run
from textgen.training.reconcile import check_can_continue, check_same_corpus, merge_for_resume, with_absolute_paths
from textgen.training.rundir import CONFIG_FILE, RunDirectory
from textgen.training.schedules import make_optimizer


@dataclass
class PairSplit:
    """A seq2seq run's data: its tokenizers and the encoded training and validation pairs."""

    tokenizers: PairTokenizers
    train: EncodedPairs
    val: EncodedPairs

    def describe(self) -> str:
        sizes = (f"vocabulary {self.tokenizers.source.vocab_size} shared" if self.tokenizers.shared else
                 f"vocabularies {self.tokenizers.source.vocab_size} source, {self.tokenizers.target.vocab_size} target")
        return (f"pairs: {len(self.train.sources):,} training, {len(self.val.sources):,} validating "
                f"({self.tokenizers.target.level} level, {sizes})")

    def training_stream(self, batch_size: int, seed: int, start_step: int):
        """Endless shuffled batches, from `start_step` on (a resumed run sees the batches it would have)."""
        stream = pair_dataset(self.train, batch_size, shuffle=True, seed=seed, repeat=True)
        return stream.skip(start_step) if start_step else stream

    def validation(self, batch_size: int):
        """(the validation batches, repeated; steps per pass), or (None, 0) without validation pairs."""
        steps = pair_steps(len(self.val.sources), batch_size) if len(self.val.sources) else 0
        if not steps:
            return None, 0
        return pair_dataset(self.val, batch_size, shuffle=False).repeat(), steps

    def val_or_train_sources(self, n: int) -> list[str]:
        """The first `n` validation sources as text (training sources without validation pairs)."""
        part = self.val if len(self.val.sources) else self.train
        return [self.tokenizers.decode_source(ids) for ids in part.sources[:n]]

    def fingerprint(self) -> dict:
        """{"tokens", "sha1"} of the encoded pairs, as a language model's corpus has, for --resume."""
        digest, tokens = hashlib.sha1(), 0
        for part in (self.train, self.val):
            for row in (*part.sources, *part.targets):
                digest.update(np.ascontiguousarray(row, dtype="<i4"))
                digest.update(b"|")
                tokens += len(row)
            digest.update(b"#")
        return {"tokens": tokens, "sha1": digest.hexdigest()}


def read_split(config: Config, tokenizers: PairTokenizers | None = None) -> PairSplit:
    """The pairs of corpus.paths (and corpus.validation_paths), encoded with `tokenizers`, or with
    tokenizers fitted on every pair read when none are given."""
    corpus = config.corpus
    pairs = read_pairs(corpus.paths, corpus.encoding)
    held = read_pairs(corpus.validation_paths, corpus.encoding) if corpus.validation_paths else []
    if tokenizers is None:  # the held-out side too: a vocabulary is not a peek at the answers
        tokenizers = PairTokenizers.fit(pairs + held, config.tokenizer, config.tokenizer.shared_vocabulary)
    max_length, long_pairs = config.training.seq_length, corpus.long_pairs
    encoded = encode_pairs(pairs, tokenizers, max_length, long_pairs)
    if held:
        train, val = encoded, encode_pairs(held, tokenizers, max_length, long_pairs)
    else:
        train, val = split_pairs(encoded, corpus.validation_fraction)
    if not len(train.sources):
        raise CorpusError(f"no training pair has both sides within training.seq_length ({max_length}) tokens; "
                          "raise training.seq_length or set corpus.long_pairs=truncate")
    return PairSplit(tokenizers, train, val)


def start_pairs_run(config: Config, plan: DevicePlan, own_dir: Path | None, directory: RunDirectory | None,
                    echo) -> Run:
    """A new seq2seq run in config.output.dir (`own_dir`, a non-chief worker's directory, takes the files)."""
    if config.training.init_from:
        raise UsageError("training.init_from fine-tunes language models; a seq2seq run starts from a new model "
                         "(drop training.init_from)")
    run_dir = own_dir or Path(config.output.dir)
    split = read_split(config)
    for what, part in (("training", split.train), ("validation", split.val)):
        if part.dropped or part.truncated:
            echo(f"{what} {part.describe()}")
    card = {"format_version": FORMAT_VERSION, "textgen_version": __version__, "config": config.to_dict(),
            "corpus_tokens": split.fingerprint()["tokens"], "precision": plan.precision,
            "architecture": architecture_card(config.model)}
    steps = _steps_per_epoch(config, split)
    model = compiled_seq2seq(config, split.tokenizers, card, steps, plan)
    previous_model = directory.clear_previous_run() if directory is not None else False
    write_tokenizer(run_dir, split.tokenizers.get_config())  # first: it creates checkpoint/, which marks the run as ours
    write_text_atomic(run_dir / CONFIG_FILE, config.to_yaml())
    return Run(config, run_dir, split.tokenizers.target, _NO_IDS, _NO_IDS, card, model, steps, split.fingerprint(),
               plan, previous_model=previous_model, pairs=split)


def resume_pairs_run(config: Config, plan: DevicePlan, own_dir: Path | None, echo) -> Run:
    """The seq2seq run in config.output.dir from its checkpoint, on the tokenizers it started with."""
    saved_dir = Path(config.output.dir)
    state = read_state(saved_dir)
    config = merge_for_resume(config, with_absolute_paths(config_from_dict(state["config"])), saved_dir)
    check_can_continue(config, state, saved_dir)
    check_resumable_precision(state.get("precision"), plan.precision)
    run_dir = own_dir or saved_dir
    split = read_split(config, PairTokenizers.from_config(read_tokenizer(saved_dir)))
    check_same_corpus(state["corpus"], split.fingerprint(), saved_dir)
    steps = _steps_per_epoch(config, split)
    card = {**state["card"], "config": config.to_dict(), "precision": plan.precision}
    model = compiled_seq2seq(config, split.tokenizers, card, steps, plan, state, saved_dir)
    write_text_atomic(run_dir / CONFIG_FILE, config.to_yaml())
    step = state["global_step"]
    echo(f"resuming {saved_dir} at epoch {step // steps + 1}, step {step % steps} of {steps} "
         f"(global step {step:,})")
    return Run(config, run_dir, split.tokenizers.target, _NO_IDS, _NO_IDS, card, model, steps, split.fingerprint(),
               plan, state=state, averages=read_averages(saved_dir, state),
               previous_model=bool(state.get("previous_model")), pairs=split)


def compiled_seq2seq(config: Config, tokenizers: PairTokenizers, card: dict, steps_per_epoch: int, plan: DevicePlan,
                     state: dict | None = None, run_dir: Path | None = None) -> keras.Model:
    """The encoder-decoder built and compiled in the plan's strategy (restored from `state`, if given).

    The loss skips PAD, the filler of a batch's shorter rows, so a pair's loss does not
    depend on the pairs it is batched with.
    """
    keras.utils.set_random_seed(config.training.seed)
    with plan.strategy.scope():
        model = build_seq2seq(config.model, tokenizers.source.get_config(), tokenizers.target.get_config(),
                              model_card=card, fused_kernels=plan.fused_kernels)
        model.compile(optimizer=make_optimizer(config.training, steps_per_epoch),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=PAD),
                      jit_compile=plan.jit_compile)
        if state is not None:
            restore_checkpoint(run_dir, model, state)
    return model


def _steps_per_epoch(config: Config, split: PairSplit) -> int:
    return config.training.steps_per_epoch or pair_steps(len(split.train.sources), config.training.batch_size)


_NO_IDS = np.zeros(0, np.int32)  # a seq2seq run has pairs instead of a token stream
