"""Which config a run trains with when it continues another: its own checkpoint (`--resume`)
or a saved model (`training.init_from`, fine-tuning).

A resumed run keeps every setting that fixes its data, batches, architecture and optimizer
slots (FROZEN_ON_RESUME) from the run it continues, and takes the others from the config it
is given now; a frozen setting given differently is refused by name. A fine-tuned run takes
its architecture and tokenizer from the model it starts from, whatever the config says.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import keras

from textgen.config import (ARCHITECTURE_KEYS, Config, ModelConfig, TokenizerConfig, absolute_path, config_from_dict,
                            model_config_from_dict)
from textgen.errors import ConfigError, ModelFileError, UsageError
from textgen.models.builder import architecture_summary
from textgen.models.layers import find_label_embedding, find_token_embedding
from textgen.training.advice import SAME_CORPUS
from textgen.training.rundir import CONFIG_FILE

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
# What preparing a resumed run's corpus adds to its error when the corpus no longer encodes.
CORPUS_CHANGED = f"; the corpus changed since the run started: {SAME_CORPUS}"


# --------------------------------------------------------------------------- resuming


def with_absolute_paths(saved: Config) -> Config:
    """A saved run config with its corpus paths and init_from absolute, as configs are loaded now.

    Runs started before configs held absolute paths saved them relative to the working
    directory they were started from; read from it again, they compare equal on resume.
    """
    cwd = os.getcwd()
    paths = tuple(absolute_path(p, cwd) for p in saved.corpus.paths)
    validation_paths = tuple(absolute_path(p, cwd) for p in saved.corpus.validation_paths)
    init_from = saved.training.init_from and absolute_path(saved.training.init_from, cwd)
    return dataclasses.replace(saved, corpus=dataclasses.replace(saved.corpus, paths=paths,
                                                                 validation_paths=validation_paths),
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


def check_can_continue(config: Config, state: dict, run_dir: Path) -> None:
    """Refuse to resume a run that has nothing left to do under `config`."""
    done = state["recorder"]["rows"]
    if state.get("finished") == "early_stopping" and config.training.patience and \
            state["recorder"]["waited"] >= config.training.patience:
        raise UsageError(f"the run in {run_dir} stopped early after {len(done)} epochs (no better validation "
                         f"loss for {state['recorder']['waited']}); raise training.patience to train further")
    # A run killed after its last epoch was saved but before it was marked finished resumes to
    # finish: no steps are left, and what it does is what the kill interrupted (the last save).
    if len(done) >= config.training.epochs and state["global_step"] % state["steps_per_epoch"] == 0 \
            and state.get("finished"):
        raise UsageError(f"the run in {run_dir} already finished its {len(done)} epoch{'s' if len(done) != 1 else ''}; "
                         f"raise training.epochs to train further")


def check_same_corpus(saved: dict, now: dict, run_dir: Path) -> None:
    """The corpus fingerprint (token count and digest) must be the one the run started with."""
    if now != saved:
        raise UsageError(f"the corpus changed since the run in {run_dir} started ({saved['tokens']:,} tokens "
                         f"then, {now['tokens']:,} now); {SAME_CORPUS}")


# --------------------------------------------------------------------------- fine-tuning


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
    labels = find_label_embedding(parent)
    if labels is not None:  # the layer knows how its labels join the embedding, also in files older than label_merge
        model = dataclasses.replace(model, label_merge=labels.merge)
    known = {f.name for f in dataclasses.fields(TokenizerConfig)}
    tokenizer = dataclasses.replace(config.tokenizer, **{k: v for k, v in embedding.tokenizer.items() if k in known})
    return dataclasses.replace(config, model=model, tokenizer=tokenizer)


def describe_adoption(given: Config, adopted: Config) -> str:
    """What fine-tuning reuses, and which of the given config's settings it therefore ignores."""
    before, after = given.to_dict(), adopted.to_dict()
    overridden = [f"{section}.{key}={value}" for section in ("model", "tokenizer")
                  for key, value in before[section].items() if value != after[section][key]]
    return (f"fine-tuning {adopted.training.init_from}: its tokenizer and architecture "
            f"({architecture_summary(adopted.model)}) are reused"
            + (f"; the config's {', '.join(overridden)} {'does' if len(overridden) == 1 else 'do'} not apply"
               if overridden else ""))
