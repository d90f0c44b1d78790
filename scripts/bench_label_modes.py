"""Where should a label enter the network? Added, concatenated, or as the initial state, per architecture.

textgen adds a label's learned vector to every token's embedding (textgen.models.builder). This
study trains the same small network of each architecture three ways on the same batches of the
`authors` preset's four books (one label per book):

  none     no label: the same network trained on the same windows, the baseline
  add      the label's vector is added to every token's embedding, as textgen builds it
  concat   the label's vector is concatenated with every token's embedding
  state    the label sets the initial state of every recurrent layer (a Dense map per state);
           only the first step sees it. Recurrent networks only: a transformer has no state, and
           a window network starts a new state at every window, so there it would be `add`.

and scores held-out windows of each book (the tail of each, never trained on) three ways:

  loss      the mean validation loss, in nats per character, under the book's own label
  gap       the loss under the other three labels minus the loss under the right one: how much
            the network uses the label (more is more conditioned; 0 for none)
  late gap  the same over the second half of each window only, after --eval-length / 2 characters,
            where an initial state has had time to fade; generation writes hundreds of characters

A transformer is scored on the first --seq-length characters of each window: its learned
positions past the training window were never trained (generation slides its context instead).

Every variant sees the same batches in the same order (one draw, fixed seed), and steps, not
seconds, are what is equal, so the figures do not depend on the machine's speed or load.
--repeats N trains each variant N times with different initial weights and prints the spread.

Usage: python scripts/bench_label_modes.py [--steps 600] [--units 256] [--repeats 1]
           [--architectures lstm,gru,simple_rnn,peephole_lstm,window,transformer] (mgu too)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from textgen.config import load_config  # noqa: E402
from textgen.data.corpus import stream_corpus  # noqa: E402
from textgen.models import cells  # noqa: E402
from textgen.models.layers import LabelEmbedding  # noqa: E402
from textgen.models.transformer import PositionEmbedding, TransformerBlock  # noqa: E402
from textgen.models.window import AttentionPooling, WindowFrames, WindowUnframe  # noqa: E402
from textgen.training.schedules import ConstantSchedule  # noqa: E402

RECURRENT = ("lstm", "gru", "simple_rnn", "peephole_lstm", "mgu")
ARCHITECTURES = ("lstm", "gru", "simple_rnn", "peephole_lstm", "window", "transformer")
WINDOW = 8  # window mode's window (kept short: each position runs it whole); a GRU over it, attention pooling
EMBEDDING = 64


def books() -> tuple[list[str], list[str], list[str]]:
    """The preset's labels, each book's training text and its held-out tail (the last 10%)."""
    corpus = load_config("authors").corpus
    texts = ["".join(stream_corpus([path])) for path in corpus.paths]
    cuts = [len(text) - len(text) // 10 for text in texts]
    return (list(corpus.file_labels), [t[:c] for t, c in zip(texts, cuts)], [t[c:] for t, c in zip(texts, cuts)])


def encode(texts: list[str], alphabet: dict[str, int]) -> list[np.ndarray]:
    return [np.array([alphabet[c] for c in text], np.int32) for text in texts]


def training_batches(ids: list[np.ndarray], steps: int, batch: int, length: int, rng) -> tuple:
    """Windows of length + 1 characters from a book chosen uniformly: inputs, labels, targets."""
    book = rng.integers(len(ids), size=steps * batch)
    starts = [rng.integers(len(ids[b]) - length - 1) for b in book]
    windows = np.stack([ids[b][s:s + length + 1] for b, s in zip(book, starts)])
    labels = np.repeat((book + 1)[:, None, None], length, axis=1).astype(np.int32)  # 0 is `any`
    return windows[:, :-1], labels, windows[:, 1:]


def held_out_windows(ids: list[np.ndarray], count: int, length: int) -> list[np.ndarray]:
    """`count` evenly spaced windows of length + 1 characters from each book's tail."""
    return [np.stack([book[s:s + length + 1] for s in np.linspace(0, len(book) - length - 2, count).astype(int)])
            for book in ids]


def build(architecture: str, mode: str, vocab: int, groups: list[dict], units: int, length: int) -> keras.Model:
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    label_ids = keras.Input(shape=(None, 1), dtype="int32", name="label_ids")
    x = keras.layers.Embedding(vocab, EMBEDDING, name="token_embedding")(ids)
    vectors = LabelEmbedding(groups, EMBEDDING, name="label_embedding")(label_ids)
    if mode == "none":  # the label input stays (one signature for all), multiplied out of the model
        x = keras.layers.Add()([x, keras.ops.zeros_like(vectors)])
    elif mode == "add":
        x = keras.layers.Add()([x, vectors])
    elif mode == "concat":
        x = keras.layers.Concatenate()([x, vectors])
    if architecture == "transformer":
        x = PositionEmbedding(length, x.shape[-1])(x)
        for _ in range(2):
            x = TransformerBlock(4, 4 * x.shape[-1])(x)
        x = keras.layers.LayerNormalization(epsilon=1e-5)(x)
    elif architecture == "window":
        frames = keras.Input(shape=(WINDOW, x.shape[-1]))
        h = cells.get("gru").build_layer(units, name="gru", return_sequences=True)(frames)
        h = AttentionPooling()(keras.layers.Concatenate()([frames, h]))
        network = keras.Model(frames, keras.layers.Dense(vocab, dtype="float32")(h))
        logits = WindowUnframe()([network(WindowFrames(WINDOW)(x)), ids])
        return keras.Model([ids, label_ids], logits)
    else:
        layer = cells.get(architecture).build_layer(units, name=architecture)
        initial = None
        if mode == "state":
            first = vectors[:, 0, :]  # a window's label; the same at every position
            sizes = np.atleast_1d(layer.cell.state_size if hasattr(layer, "cell") else units)
            initial = [keras.layers.Dense(int(size), activation="tanh")(first) for size in sizes]
        x = layer(x, initial_state=initial)
    logits = keras.layers.Dense(vocab, dtype="float32", name="logits")(x)
    return keras.Model([ids, label_ids], logits)


def learning_rate(architecture: str):
    """0.003 for recurrent networks; a transformer diverges there and gets 0.001 after 100 warm-up steps."""
    if architecture != "transformer":
        return 0.003
    return ConstantSchedule(0.001, warmup_steps=100)


def scores(model: keras.Model, windows: list[np.ndarray]) -> tuple[float, float, float]:
    """(loss under the right label, gap, late gap), averaged over the books."""
    loss, gap, late = [], [], []
    for book, w in enumerate(windows):
        per_label = []
        for label in range(len(windows)):
            labels = np.full((*w[:, :-1].shape, 1), label + 1, np.int32)
            logits = model.predict([w[:, :-1], labels], batch_size=64, verbose=0)
            logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
                - logits.max(-1, keepdims=True)
            per_label.append(-np.take_along_axis(logp, w[:, 1:, None], -1)[..., 0])
        right = per_label[book]
        wrong = np.mean([p for i, p in enumerate(per_label) if i != book], axis=0)
        half = right.shape[1] // 2
        loss.append(right.mean())
        gap.append(wrong.mean() - right.mean())
        late.append(wrong[:, half:].mean() - right[:, half:].mean())
    return float(np.mean(loss)), float(np.mean(gap)), float(np.mean(late))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps per variant")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=64, help="training window")
    parser.add_argument("--eval-length", type=int, default=256, help="held-out window, longer than training's")
    parser.add_argument("--eval-windows", type=int, default=24, help="held-out windows per book")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1, help="trainings per variant, with different initial weights")
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES))
    args = parser.parse_args()

    labels, train, held = books()
    alphabet = {c: i for i, c in enumerate(sorted(set("".join(train + held))))}
    train_ids, held_ids = encode(train, alphabet), encode(held, alphabet)
    x, y_labels, y = training_batches(train_ids, args.steps, args.batch_size, args.seq_length,
                                      np.random.default_rng(0))
    windows = held_out_windows(held_ids, args.eval_windows, args.eval_length)
    groups = [{"name": "author", "labels": ["any", *labels]}]
    print(f"{len(alphabet)} characters; {args.steps} steps of {args.batch_size} x {args.seq_length}; "
          f"{args.units} units; scored on {args.eval_windows} windows of {args.eval_length} per book")
    print(f"{'architecture':14}{'mode':8}{'loss':>8}{'gap':>8}{'late gap':>10}{'seconds':>9}")
    for architecture in args.architectures.split(","):
        modes = ("none", "add", "concat", "state") if architecture in RECURRENT else ("none", "add", "concat")
        for mode in modes:
            runs = []
            for repeat in range(args.repeats):
                keras.utils.set_random_seed(repeat)
                model = build(architecture, mode, len(alphabet), groups, args.units, args.seq_length)
                model.compile(keras.optimizers.Adam(learning_rate(architecture), clipnorm=1.0),
                              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
                started = time.perf_counter()
                model.fit([x, y_labels], y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
                length = args.seq_length if architecture == "transformer" else args.eval_length
                runs.append((*scores(model, [w[:, :length + 1] for w in windows]), time.perf_counter() - started))
            mean = np.mean(runs, axis=0)
            spread = f"  (loss {min(r[0] for r in runs):.3f}-{max(r[0] for r in runs):.3f})" if args.repeats > 1 else ""
            print(f"{architecture:14}{mode:8}{mean[0]:8.3f}{mean[1]:8.3f}{mean[2]:10.3f}{mean[3]:9.0f}{spread}",
                  flush=True)


if __name__ == "__main__":
    main()
