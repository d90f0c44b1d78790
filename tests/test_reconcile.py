"""textgen.training.reconcile: the config a resumed or fine-tuned run trains with."""

from __future__ import annotations

import dataclasses
import os

import pytest

from test_bad_input import rewrite_keras_config, with_embedding
from textgen.config import load_config
from textgen.errors import ModelFileError, UsageError
from textgen.saving import load_keras_model
from textgen.training.reconcile import (adopt_architecture, check_can_continue, check_same_corpus, describe_adoption,
                                        merge_for_resume, with_absolute_paths)


# --------------------------------------------------------------------------- resuming


@pytest.mark.parametrize("key, saved, given", [
    ("model.window", 40, 20), ("model.mode", "window", "sequence"), ("model.type", "transformer", "rnn"),
    ("model.heads", 4, 2), ("model.context_length", 256, 128), ("model.attention", True, False),
])
def test_resume_refuses_a_changed_architecture_key(key, saved, given, tmp_path):
    """Every key that shapes the network is frozen on resume; dropout may change."""
    base = ["model.mode=window"] if key in ("model.window", "model.attention") else \
        ["model.type=transformer", "model.embedding_dim=32"] if key in ("model.heads", "model.context_length") else []
    old = load_config(None, [*base, f"{key}={saved}".lower(), "model.dropout=0.1"])
    new = load_config(None, [*base, f"{key}={given}".lower(), "model.dropout=0.3"])
    with pytest.raises(UsageError, match=rf"--resume: {key} is .* in the run being resumed"):
        merge_for_resume(new, old, tmp_path)
    same = load_config(None, [*base, f"{key}={saved}".lower(), "model.dropout=0.3"])
    assert merge_for_resume(same, old, tmp_path).model.dropout == 0.3


@pytest.mark.parametrize("key, saved, given", [
    ("training.shift_windows", "false", "true"), ("training.seed", 1, 2), ("training.seq_length", 40, 50),
])
def test_resume_refuses_a_changed_batching_key(key, saved, given, tmp_path):
    """The keys that decide which windows each step trains on are frozen; the learning rate is not."""
    old = load_config(None, [f"{key}={saved}", "training.learning_rate=0.01"])
    with pytest.raises(UsageError, match=rf"--resume: {key} is .* in the run being resumed"):
        merge_for_resume(load_config(None, [f"{key}={given}"]), old, tmp_path)
    same = merge_for_resume(load_config(None, [f"{key}={saved}", "training.learning_rate=0.02"]), old, tmp_path)
    assert same.training.learning_rate == 0.02


def test_resume_refuses_a_changed_corpus_key_and_keeps_init_from(tmp_path):
    old = load_config(None, ["corpus.paths=['a.txt']", "training.init_from=parent.keras", "model.units=64"])
    with pytest.raises(UsageError, match=r"--resume: corpus\.paths is .* in the run being resumed \(.*config\.yaml\)"):
        merge_for_resume(load_config(None, ["corpus.paths=['b.txt']"]), old, tmp_path)
    merged = merge_for_resume(load_config(None, ["corpus.paths=['a.txt']", "model.units=32"]), old, tmp_path)
    # fine-tuning took the architecture from the parent, so the given one is not compared; init_from is kept
    assert merged.training.init_from == old.training.init_from and merged.model.units == 64


def test_saved_relative_paths_are_read_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = load_config(None, ["corpus.paths=['a.txt']"])
    saved = dataclasses.replace(saved, corpus=dataclasses.replace(saved.corpus, paths=("a.txt", "/abs/b.txt")),
                                training=dataclasses.replace(saved.training, init_from="runs/parent.keras"))
    absolute = with_absolute_paths(saved)
    assert absolute.corpus.paths == (os.path.join(tmp_path, "a.txt"), "/abs/b.txt")
    assert absolute.training.init_from == os.path.join(tmp_path, "runs", "parent.keras")


def state_of(rows: int, step: int, finished=None, waited: int = 0) -> dict:
    return {"recorder": {"rows": [{}] * rows, "waited": waited}, "global_step": step, "steps_per_epoch": 10,
            "finished": finished}


def test_a_run_with_nothing_left_to_do_is_refused_until_its_limit_is_raised(tmp_path):
    two = load_config(None, ["training.epochs=2"])
    with pytest.raises(UsageError, match=f"the run in {tmp_path} already finished its 2 epochs; raise training.epochs"):
        check_can_continue(two, state_of(2, 20, finished="completed"), tmp_path)
    check_can_continue(two, state_of(2, 20), tmp_path)  # killed before it was marked finished: resume ends it
    check_can_continue(load_config(None, ["training.epochs=3"]), state_of(2, 20), tmp_path)
    check_can_continue(two, state_of(2, 25), tmp_path)  # stopped part-way through its last epoch's steps
    patient = load_config(None, ["training.epochs=9", "training.patience=2"])
    early = state_of(4, 40, finished="early_stopping", waited=2)
    with pytest.raises(UsageError, match="stopped early after 4 epochs .* raise training.patience to train further"):
        check_can_continue(patient, early, tmp_path)
    check_can_continue(load_config(None, ["training.epochs=9", "training.patience=3"]), early, tmp_path)


def test_a_changed_corpus_is_refused_with_both_token_counts(tmp_path):
    check_same_corpus({"tokens": 1000, "sha1": "ab"}, {"tokens": 1000, "sha1": "ab"}, tmp_path)
    with pytest.raises(UsageError) as caught:
        check_same_corpus({"tokens": 1000, "sha1": "ab"}, {"tokens": 1000, "sha1": "cd"}, tmp_path)
    assert str(caught.value) == (f"the corpus changed since the run in {tmp_path} started (1,000 tokens then, "
                                 "1,000 now); resume with the same files or start again with --overwrite")


# --------------------------------------------------------------------------- fine-tuning


def test_fine_tuning_adopts_the_parents_architecture_and_tokenizer(trained_model):
    parent = load_keras_model(trained_model)
    given = load_config(None, ["model.cell=lstm", "model.units=512", "model.dropout=0.25", "tokenizer.level=word",
                               f"training.init_from={trained_model}"])
    adopted = adopt_architecture(given, parent)
    assert (adopted.model.cell, adopted.model.units, adopted.model.embedding_dim) == ("gru", 32, 16)
    assert adopted.model.dropout == 0.25  # not part of the architecture: the new config's
    assert adopted.tokenizer.level == "char" and adopted.training == given.training
    assert describe_adoption(given, adopted) == (
        f"fine-tuning {trained_model}: its tokenizer and architecture (gru x 1, 32 units) are reused; the config's "
        "model.cell=lstm, model.embedding_dim=256, model.units=512, tokenizer.level=word do not apply")
    assert describe_adoption(adopted, adopted).endswith("are reused")


def test_a_parent_without_a_training_config_cannot_be_fine_tuned(trained_model, tmp_path):
    path = tmp_path / "bare.keras"
    rewrite_keras_config(trained_model, path, with_embedding(lambda layer: layer["model_card"].pop("config")))
    config = load_config(None, [f"training.init_from={path}"])
    with pytest.raises(ModelFileError, match="holds no training config, so its architecture is unknown"):
        adopt_architecture(config, load_keras_model(path))
