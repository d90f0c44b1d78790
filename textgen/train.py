"""Training: config -> corpus -> tokenizer -> datasets -> model.fit -> run directory.

The run directory holds:
    model.keras   the best model by validation loss (the single artifact generation needs)
    config.yaml   the resolved config the run used
    history.csv   per-epoch loss, validation loss and per-token metrics
    logs/         TensorBoard logs
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from textgen import __version__
from textgen.config import Config
from textgen.corpus import load_corpus
from textgen.dataset import make_dataset, split_ids
from textgen.errors import TextgenError, UsageError
from textgen.layers import FORMAT_VERSION
from textgen.model import build_model
from textgen.saving import check_writable, save_model_atomic, write_text_atomic
from textgen.tokenizer import fit_tokenizer

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.csv"


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    history: list[dict]
    best_epoch: int


def per_token_metrics(loss: float, level: str) -> dict:
    """Bits per character for character models, perplexity for word models."""
    if level == "char":
        return {"bpc": loss / math.log(2)}
    return {"perplexity": math.exp(min(loss, 50.0))}


def vocabulary_coverage(ids: np.ndarray, tokenizer) -> float:
    """Share of corpus tokens that are in the vocabulary (not the unknown token)."""
    if tokenizer.unk_id is None or len(ids) == 0:
        return 1.0
    return float(np.mean(ids != tokenizer.unk_id))


def prepare_run_dir(config: Config, *, overwrite: bool = False) -> Path:
    run_dir = Path(config.output.dir)
    if (run_dir / MODEL_FILE).exists() and not overwrite:
        raise UsageError(f"{run_dir} already holds a trained model; pass --overwrite to replace it "
                         "or --output to train into another directory")
    return check_writable(run_dir)


def train(config: Config, *, overwrite: bool = False, echo: Callable[[str], None] = print,
          verbose: int = 1) -> TrainResult:
    """Train a model as `config` says and save it into the run directory."""
    run_dir = prepare_run_dir(config, overwrite=overwrite)
    write_text_atomic(run_dir / CONFIG_FILE, config.to_yaml())

    text = load_corpus(config.corpus.paths, config.corpus.encoding, config.corpus.strip_gutenberg)
    tokenizer = fit_tokenizer(text, config.tokenizer)
    ids = tokenizer.encode(text)
    del text
    seq, batch = config.training.seq_length, config.training.batch_size
    train_ids, val_ids = split_ids(ids, config.corpus.validation_fraction, seq)
    echo(f"corpus: {len(ids):,} tokens ({tokenizer.level} level, vocabulary {tokenizer.vocab_size}); "
         f"training on {len(train_ids):,}, validating on {len(val_ids):,}")

    keras.utils.set_random_seed(config.training.seed)
    train_ds = make_dataset(train_ids, seq, batch, shuffle=True, seed=config.training.seed)
    val_ds = make_dataset(val_ids, seq, batch, shuffle=False) if len(val_ids) else None

    card = {"format_version": FORMAT_VERSION, "textgen_version": __version__, "config": config.to_dict(),
            "corpus_tokens": int(len(ids)), "coverage": vocabulary_coverage(ids, tokenizer)}
    model = build_model(config.model, tokenizer.get_config(), model_card=card)
    optimizer = keras.optimizers.Adam(learning_rate=config.training.learning_rate,
                                      clipnorm=config.training.clipnorm or None)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    echo(f"model: {config.model.cell} x {config.model.layers}, {model.count_params():,} parameters")

    saver = RunRecorder(run_dir, card, tokenizer.level, echo)
    callbacks = [saver, keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), write_graph=False)]
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=config.training.epochs,
                  callbacks=callbacks, verbose=verbose, shuffle=False)  # the dataset shuffles itself
    except KeyboardInterrupt:
        saver.save_on_interrupt(model)
        raise TextgenError(f"training interrupted; the best model so far is in {run_dir / MODEL_FILE}") from None
    if saver.best_epoch == 0:
        raise TextgenError("training produced no finite loss; lower training.learning_rate or set training.clipnorm")
    return TrainResult(run_dir, run_dir / MODEL_FILE, saver.rows, saver.best_epoch)


class RunRecorder(keras.callbacks.Callback):
    """Writes history.csv each epoch and saves the best model atomically."""

    def __init__(self, run_dir: Path, card: dict, level: str, echo: Callable[[str], None]):
        super().__init__()
        self.run_dir, self.card, self.level, self.echo = run_dir, card, level, echo
        self.rows: list[dict] = []
        self.best_loss = math.inf
        self.best_epoch = 0
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = float(logs.get("loss", math.nan))
        val_loss = float(logs.get("val_loss", math.nan)) if "val_loss" in logs else None
        row = {"epoch": epoch + 1, "loss": loss, **_prefixed(per_token_metrics(loss, self.level), "")}
        if val_loss is not None:
            row.update(val_loss=val_loss, **_prefixed(per_token_metrics(val_loss, self.level), "val_"))
        row["seconds"] = round(time.monotonic() - self.started, 1)
        self.rows.append(row)
        score = val_loss if val_loss is not None else loss
        improved = np.isfinite(score) and score < self.best_loss
        if improved:
            self.best_loss, self.best_epoch = score, epoch + 1
        write_text_atomic(self.run_dir / HISTORY_FILE, _history_csv(self.rows, self.best_epoch))
        if improved:
            save_model_atomic(self.model, self.run_dir / MODEL_FILE, self._card())
        self.echo(_epoch_line(row, self.level, improved))

    def save_on_interrupt(self, model):
        if self.best_epoch == 0:
            save_model_atomic(model, self.run_dir / MODEL_FILE, self._card())

    def _card(self) -> dict:
        last = self.rows[-1] if self.rows else {}
        return {**self.card, "history": {
            "epochs": len(self.rows), "best_epoch": self.best_epoch,
            "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
            "final_loss": last.get("loss"), "final_val_loss": last.get("val_loss"),
            "seconds": last.get("seconds")}}


def _prefixed(metrics: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in metrics.items()}


def _history_csv(rows: list[dict], best_epoch: int) -> str:
    fields = list(dict.fromkeys(k for row in rows for k in row)) + ["best"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()},
                         "best": int(row["epoch"] == best_epoch)})
    return out.getvalue()


def _epoch_line(row: dict, level: str, improved: bool) -> str:
    unit = "bits/char" if level == "char" else "perplexity"
    key = "bpc" if level == "char" else "perplexity"
    parts = [f"epoch {row['epoch']}: loss {row['loss']:.4f} ({row[key]:.3f} {unit})"]
    if "val_loss" in row:
        parts.append(f"val_loss {row['val_loss']:.4f} ({row['val_' + key]:.3f} {unit})")
    parts.append("saved best model" if improved else "not better")
    return ", ".join(parts)
