"""What a run says before its first step: its data, its network, where it trains and with which kernels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textgen.config import ignored_settings
from textgen.labels import ANY
from textgen.models.builder import architecture_summary
from textgen.training.distribute import kernel_report

if TYPE_CHECKING:
    from textgen.training.fit import Run


def describe_run(run: "Run", echo) -> None:
    """The corpus, the model, where it trains and which recurrent kernels it can use."""
    config, plan = run.config, run.plan
    if run.pairs is not None:
        echo(f"{run.pairs.describe()}; {run.steps_per_epoch} steps per epoch")
    else:
        _describe_corpus(run, echo)
    if run.label_space is not None:
        echo(f"labels: {run.label_space.describe().replace(chr(10), '; ')}"
             + ("" if config.corpus.labels != "none" else f" (this corpus has none: it trains as {ANY})"))
    echo(f"model: {architecture_summary(config.model)}, {run.model.count_params():,} parameters")
    ignored = ignored_settings(config)
    if ignored:
        echo(f"note: not read by this model, so ignored: {', '.join(ignored)}")
    echo(plan.describe(config.training.batch_size))
    for line in kernel_report(run.model, plan):
        echo(line)


def _describe_corpus(run: "Run", echo) -> None:
    """A language model's corpus line, and a warning when nothing could be held out."""
    config = run.config
    echo(f"corpus: {len(run.train_ids) + len(run.val_ids):,} tokens ({run.tokenizer.level} level, vocabulary "
         f"{run.tokenizer.vocab_size}); training on {len(run.train_ids):,}, validating on {len(run.val_ids):,}; "
         f"{run.steps_per_epoch} steps per epoch")
    if config.corpus.validation_fraction and not len(run.val_ids):
        echo(f"warning: the validation tail ({config.corpus.validation_fraction:g} of the corpus) is shorter than "
             f"one window of training.seq_length + 1 = {config.training.seq_length + 1} tokens, so nothing is held "
             "out and the kept model is the one with the lowest training loss; use a longer corpus, raise "
             "corpus.validation_fraction or lower training.seq_length")
