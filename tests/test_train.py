import csv
import io
import json
import zipfile

import h5py
import numpy as np

import keras

from textgen.config import TokenizerConfig
from textgen.generation.generate import load_keras_model
from textgen.models.info import model_facts
from textgen.data.tokenizer import fit_tokenizer_stream
from textgen.training.train import default_sample_seed, train


def test_short_training_run_lowers_the_loss(tiny_config):
    config = tiny_config(**{"training.epochs": 3})
    result = train(config, echo=lambda _: None, verbose=0)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] - 0.2
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    run = result.run_dir
    assert {p.name for p in run.iterdir()} >= {"model.keras", "config.yaml", "history.csv", "logs"}
    hidden = sorted(p.name for p in run.iterdir() if p.name.startswith("."))
    assert hidden == [".textgen-run.json", ".textgen-run.lock"]  # the manifest and the lock; no temporary files
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert abs(float(rows[0]["bpc"]) - float(rows[0]["loss"]) / 0.6931471805599453) < 1e-4
    assert sum(int(r["best"]) for r in rows) == 1
    assert "training:\n  seq_length: 32" in (run / "config.yaml").read_text()


def test_saved_model_is_the_best_epoch_and_has_no_optimizer(tiny_config):
    result = train(tiny_config(), echo=lambda _: None, verbose=0)
    model = keras.models.load_model(result.model_path)
    card = model.get_layer("token_embedding").model_card
    best = min(result.history, key=lambda r: r["val_loss"])
    assert card["history"]["best_epoch"] == best["epoch"] == result.best_epoch
    assert abs(card["history"]["best_loss"] - best["val_loss"]) < 1e-9
    assert getattr(model, "optimizer", None) is None
    with zipfile.ZipFile(result.model_path) as archive:  # optimizer slots live in checkpoint/, not in model.keras
        assert not json.loads(archive.read("config.json")).get("compile_config")
        with h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
            assert "optimizer" not in weights


def test_embedding_dropout_and_l2_keep_the_cudnn_options():
    from textgen.config import ModelConfig
    from textgen.models.builder import build_model

    tokenizer = {"level": "char", "vocabulary": list("abcdefghij")}
    model = build_model(ModelConfig(cell="lstm", embedding_dim=4, units=8, layers=2, dropout=0.3,
                                    embedding_dropout=0.1), tokenizer, l2=1e-3)
    rates = {layer.name: layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)}
    assert rates == {"embedding_dropout": 0.1, "dropout_1": 0.3, "dropout_2": 0.3}
    model(np.zeros((2, 5), dtype=np.int32))
    assert len(model.losses) == 5  # kernel + recurrent kernel of two LSTMs, and the output kernel
    for layer in model.layers:
        if isinstance(layer, keras.layers.RNN):
            assert layer.cell.recurrent_dropout == 0 and layer.cell.use_bias and not layer.unroll
    plain = build_model(ModelConfig(cell="gru", embedding_dim=4, units=8, dropout=0.2), tokenizer)
    assert [l.name for l in plain.layers if isinstance(l, keras.layers.Dropout)] == ["embedding_dropout", "dropout_1"]
    assert not plain.losses


def test_history_measures_cross_entropy_without_the_l2_penalty(tiny_config):
    result = train(tiny_config(**{"training.epochs": 1, "training.l2": 1.0}), echo=lambda _: None, verbose=0)
    # Keras's own loss adds 1.0 * sum(w^2) over thousands of weights; the text alone costs at most ln(58) ~ 4.1.
    row = result.history[0]
    assert 0 < row["loss"] < 4.5 and 0 < row["val_loss"] < 4.5
    assert row["val_bpc"] == row["val_loss"] / 0.6931471805599453


def test_samples_are_printed_every_n_epochs(tiny_config):
    lines = []
    train(tiny_config(**{"training.epochs": 2, "training.sample_every": 2, "training.sample_length": 20,
                         "training.sample_temperatures": "[0, 1.0]", "training.sample_seed": '"ROMEO:"'}),
          echo=lines.append, verbose=0)
    samples = [line for line in lines if line.startswith("--- sample")]
    assert [s.splitlines()[0] for s in samples] == ["--- sample at temperature 0 after epoch 2:",
                                                    "--- sample at temperature 1 after epoch 2:"]
    assert all(s.splitlines()[1].startswith("ROMEO:") and len(s) > len("ROMEO:") + 20 for s in samples)


def test_a_sample_seed_the_model_cannot_read_is_reported_before_training(tiny_config):
    lines = []
    train(tiny_config(**{"training.epochs": 1, "training.sample_every": 1, "training.sample_seed": '"日本"'}),
          echo=lines.append, verbose=0)
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning: training.sample_seed"))
    assert "'日', '本'" in lines[warning] and lines[warning].endswith("samples switched off")
    assert warning < next(i for i, line in enumerate(lines) if line.startswith("epoch 1"))  # before, not after
    assert not any(line.startswith("--- sample") for line in lines)


def test_the_default_sample_seed_is_the_first_whole_line_with_text():
    """Samples continue a real line of the held-out text, never a word cut in half."""
    text = "lf of a line\n\nVIRGILIA:\nI will wish her speedy strength"
    tokenizer = fit_tokenizer_stream([text + "no line ends here at all, just one long run of words"], TokenizerConfig())
    ids = tokenizer.encode(text)
    assert default_sample_seed(tokenizer, ids, ids[:0]) == "VIRGILIA:\n"
    assert default_sample_seed(tokenizer, ids[:0], ids) == "VIRGILIA:\n"  # no validation split
    unbroken = tokenizer.encode("no line ends here at all, just one long run of words")
    assert default_sample_seed(tokenizer, unbroken, ids[:0]) == "no line ends here at all, just one long "


def test_a_validation_tail_too_short_for_a_window_is_reported(tiny_config):
    said = []
    result = train(tiny_config(**{"corpus.validation_fraction": 0.0005, "training.epochs": 1}), echo=said.append,
                   verbose=0)
    assert "validating on 0" in "\n".join(said)
    warning = next(line for line in said if line.startswith("warning: the validation tail"))
    assert "nothing is held out" in warning and "training.seq_length + 1 = 33" in warning
    assert "val_loss" not in result.history[0]
    facts = model_facts(load_keras_model(result.model_path))  # what `textgen info` shows
    assert facts["best_train_loss"] == round(result.history[0]["loss"], 4)
    assert not any("validation" in key for key in facts)
    quiet = []
    train(tiny_config(**{"training.epochs": 1}), echo=quiet.append, verbose=0, overwrite=True)
    assert not any(line.startswith("warning: the validation tail") for line in quiet)
