"""textgen.saving: atomic writes that leave the old file or the new one, and the one loader of
.keras files, whose every refusal is one line naming the file."""

from __future__ import annotations

import errno
import io
import os
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from test_bad_input import rewrite_keras_config, with_embedding
from textgen.config import ModelConfig
from textgen.errors import ModelFileError, TextgenError
from textgen.models.builder import build_model
from textgen.models.layers import FORMAT_VERSION, find_token_embedding
from textgen.saving import load_keras_model, save_model_atomic, update_model_card
from textgen.files import remove_temporaries, write_bytes_atomic, write_file_atomic, write_text_atomic

TOKENIZER = {"level": "char", "vocabulary": list("abcdef")}


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --------------------------------------------------------------------------- atomic writes


def test_write_bytes_atomic_replaces_the_file_whole_with_normal_permissions(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("old")
    write_bytes_atomic(path, b"new contents")
    assert path.read_bytes() == b"new contents" and entries(tmp_path) == {"history.csv"}
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old")

    def half_then_full(tmp: str) -> None:
        with open(tmp, "wb") as out:
            out.write(b"half a fi")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(TextgenError) as caught:
        write_file_atomic(path, half_then_full)
    assert str(caught.value) == (f"{path} cannot be written ({os.strerror(errno.ENOSPC)}); free some space, "
                                 "then run again")
    assert path.read_text() == "old" and entries(tmp_path) == {"config.yaml"}


def test_an_interrupted_write_removes_its_temporary_and_goes_on_stopping(tmp_path):
    def interrupted(tmp: str) -> None:
        Path(tmp).write_bytes(b"part")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(tmp_path / "loss.png", interrupted, suffix=".tmp.png")
    assert entries(tmp_path) == set()


def test_write_failures_name_the_destination_not_the_temporary_file(tmp_path, monkeypatch):
    """A folder that refuses new files (read-only, as during a --resume there) and fsync's handle."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.fstat(fd))
        import fcntl
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY  # Windows refuses fsync on those
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_text_atomic(tmp_path / "a.txt", "text")
    assert synced and (tmp_path / "a.txt").read_text() == "text"

    def refused(*args, dir=None, prefix="", suffix="", **kwargs):
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), f"{dir}/{prefix}k2x9abcd{suffix}")

    monkeypatch.setattr("tempfile.mkstemp", refused)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text("{}")
    with pytest.raises(TextgenError) as caught:
        write_text_atomic(tmp_path / "config.yaml", "x")
    assert str(caught.value) == (f"{tmp_path / 'config.yaml'} cannot be written ({os.strerror(errno.EROFS)}); "
                                 f"make {tmp_path} writable, then continue with `textgen train --resume`")


def test_remove_temporaries_removes_only_the_names_the_writers_give(tmp_path):
    theirs = [".model.keras.k2x9ab_d.tmp.keras", ".config.yaml.0123abcd.tmp"]
    users = ["model.keras", ".config.yaml.bak", ".model.keras.notes.tmp.keras", ".config.yaml.0123abcd.tmp.old"]
    for name in theirs + users:
        (tmp_path / name).write_text("x")
    removed = remove_temporaries(tmp_path, {"model.keras": ".tmp.keras", "config.yaml": ".tmp"})
    assert sorted(p.name for p in removed) == sorted(theirs)
    assert entries(tmp_path) == set(users)
    assert remove_temporaries(tmp_path / "missing", {"model.keras": ".tmp.keras"}) == []


# --------------------------------------------------------------------------- saving models


def trained_model_with_optimizer():
    model = build_model(ModelConfig(cell="gru", embedding_dim=4, units=8), TOKENIZER, model_card={"note": "first"})
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).integers(0, 6, size=(4, 5)).astype("int32")
    model.train_on_batch(x, x)
    return model, x


def test_save_model_atomic_writes_an_inference_copy_with_its_card(tmp_path):
    model, x = trained_model_with_optimizer()
    path = tmp_path / "model.keras"
    card = {"format_version": FORMAT_VERSION, "note": "saved", "history": {"epochs": 1}}
    save_model_atomic(model, path, card)
    loaded = load_keras_model(path)
    assert entries(tmp_path) == {"model.keras"}
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert find_token_embedding(loaded).model_card == card
    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
        assert "layers" in weights and "optimizer" not in weights  # its slots stay in the training checkpoint


def test_update_model_card_keeps_the_weights(tmp_path):
    model, x = trained_model_with_optimizer()
    path = tmp_path / "model.keras"
    save_model_atomic(model, path)
    card = {"format_version": FORMAT_VERSION, "history": {"stopped": "time_limit", "steps": 3}}
    update_model_card(path, card)
    loaded = load_keras_model(path)
    assert find_token_embedding(loaded).model_card == card
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert entries(tmp_path) == {"model.keras"}


# --------------------------------------------------------------------------- loading models


def damaged_card(embedding):
    embedding["model_card"]["history"] = {**embedding["model_card"].get("history", {}), "epochs": "two"}


def shorter_vocabulary(embedding):
    embedding["tokenizer"]["vocabulary"] = embedding["tokenizer"]["vocabulary"][:-1]


def plain_keras_model(path: Path) -> None:
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path)


BROKEN = {
    "missing": (lambda src, path: None, "does not exist; train one with `textgen train`"),
    "a directory": (lambda src, path: path.mkdir(), "is a directory; give the model.keras file inside it"),
    "truncated": (lambda src, path: path.write_bytes(src.read_bytes()[: src.stat().st_size // 2]),
                  "is not a valid .keras archive (truncated or not a model)"),
    "a text file": (lambda src, path: path.write_text("ROMEO: not a model\n"), "is not a valid .keras archive"),
    "not a textgen model": (lambda src, path: plain_keras_model(path),
                            "is a Keras model but not a textgen model (it carries no tokenizer)"),
    "a damaged card": (lambda src, path: rewrite_keras_config(src, path, with_embedding(damaged_card)),
                       "is damaged: its model card's history.epochs is 'two', not a whole number"),
    "a vocabulary the network does not read": (
        lambda src, path: rewrite_keras_config(src, path, with_embedding(shorter_vocabulary)),
        "is damaged: its vocabulary has"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_a_broken_model_file_is_one_line_naming_it(case, trained_model, tmp_path):
    make, expected = BROKEN[case]
    path = tmp_path / "model.keras"
    make(trained_model, path)
    with pytest.raises(ModelFileError) as caught:
        load_keras_model(path)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    assert str(path) in message and expected in message, message


def test_a_file_without_the_keras_suffix_is_refused_before_it_is_read(trained_model, tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(trained_model.read_bytes())
    with pytest.raises(ModelFileError, match=r"model\.h5 is not a \.keras file; give the model\.keras of a run"):
        load_keras_model(path)


def test_load_keras_model_returns_the_saved_textgen_model(trained_model):
    model = load_keras_model(trained_model)
    embedding = find_token_embedding(model)
    assert embedding.tokenizer["level"] == "char" and embedding.model_card["config"]["model"]["cell"] == "gru"
    assert model.outputs[0].shape[-1] == embedding.input_dim
