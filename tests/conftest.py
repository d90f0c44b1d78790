"""Shared fixtures: the project's own corpora and one tiny trained model per session."""

from __future__ import annotations

from pathlib import Path

import pytest

import textgen
from textgen.config import load_config

textgen.load_keras_objects()  # tests load model files with plain keras.models.load_model

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT / "corpora"


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPORA.glob("*.txt"))


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """The first 30,000 characters of Tiny Shakespeare."""
    path = tmp_path_factory.mktemp("corpus") / "shakespeare_head.txt"
    path.write_text((CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    return path


def tiny_overrides(corpus: Path, out: Path, **extra) -> list[str]:
    settings = {
        "corpus.paths": f"['{corpus}']",
        "model.cell": "gru",
        "model.embedding_dim": 16,
        "model.units": 32,
        "training.seq_length": 32,
        "training.batch_size": 32,
        "training.epochs": 2,
        "training.learning_rate": 0.01,
        "training.sample_every": 0,  # no samples printed during tests
        "output.dir": str(out),
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


def validation_loss_of(path, corpus, seq_length=32, batch_size=32) -> float:
    """The loss of the saved model at `path` on the validation split train() makes of `corpus`."""
    import keras

    from textgen.data.corpus import stream_corpus
    from textgen.data.dataset import make_dataset, split_ids
    from textgen.generation.generate import load_keras_model
    from textgen.models.layers import find_token_embedding
    from textgen.data.tokenizer import tokenizer_from_config

    model = load_keras_model(path)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    tokenizer = tokenizer_from_config(find_token_embedding(model).tokenizer)
    _, val_ids = split_ids(tokenizer.encode("".join(stream_corpus([str(corpus)]))), 0.1, seq_length)
    return model.evaluate(make_dataset(val_ids, seq_length, batch_size, shuffle=False), verbose=0)


@pytest.fixture
def tiny_config(small_corpus, tmp_path):
    def make(**extra):
        return load_config(None, tiny_overrides(small_corpus, tmp_path / "run", **extra))
    return make


@pytest.fixture(scope="session")
def trained_model(small_corpus, tmp_path_factory) -> Path:
    """A tiny character GRU trained for two epochs; returns its model.keras path."""
    from textgen.training.train import train

    out = tmp_path_factory.mktemp("trained") / "run"
    config = load_config(None, tiny_overrides(small_corpus, out))
    result = train(config, echo=lambda _: None, verbose=0)
    return result.model_path


def terminal_signals() -> None:
    """Give a child process the signal dispositions a command started from a terminal has.

    A test run started in the background or under nohup ignores Ctrl-C or SIGHUP, and
    textgen leaves an ignored signal ignored; the signal tests need the defaults."""
    import signal

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)

