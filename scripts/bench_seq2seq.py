"""Benchmark seq2seq decoding: textgen's batched engine against a plain Keras step loop.

Both decode the same 64 sources greedily with the same model, in one process, after warm-up:

  plain    one source at a time, as the keras.io character-level seq2seq example decodes: an
           encoder Keras model call, then per step a decoder-step Keras model call (the trained
           layers, the decoder's cells wrapped to return their states) with its states, argmax,
           until END. Models are called directly (faster than `predict`).
  textgen  `Translator.translate_ids` on all 64 at once: the encoder once, the decoder stepped
           for every row inside one compiled loop; without `model.same_letters`, which the plain
           loop lacks.

The model: `--model PATH` (a seq2seq .keras file), else a small one trained for `--train-seconds`
on the date pairs (textgen/corpora/dates_train.tsv) where they are shipped, else on generated
string reversals. The target is textgen >= 10x the plain loop's sources per second.

Usage: python scripts/bench_seq2seq.py [--model PATH] [--pairs TSV] [--train-seconds 60] [--sources 64]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

import textgen
import keras
from textgen.config import ModelConfig
from textgen.data.pairs import END, RESERVED, START
from textgen.generation.seq2seq import Translator, pad_rows
from textgen.models.seq2seq import Seq2SeqParts, build_seq2seq, encode

ROOT = Path(__file__).resolve().parents[1]
DATES = ROOT / "textgen" / "corpora" / "dates_train.tsv"


def bench_pairs(path: Path | None, n: int = 20000) -> tuple[str, list[tuple[str, str]]]:
    """(what they are, pairs): a tab-separated pairs file (default: the shipped date pairs, where they
    are), or generated reversals of letter strings."""
    path = path or (DATES if DATES.exists() else None)
    if path is not None:
        lines = Path(path).read_text(encoding="utf-8").splitlines()[:n]
        return Path(path).name, [tuple(line.split("\t")[:2]) for line in lines if line.count("\t") >= 1]
    rng = np.random.default_rng(0)
    sources = ["".join(rng.choice(list("abcdefghij"), rng.integers(3, 15))) for _ in range(n)]
    return "generated reversals", [(s, s[::-1]) for s in sources]


def train_model(pairs, seconds: float) -> keras.Model:
    """A small additive-attention GRU model trained for about `seconds`."""
    vocabulary = sorted({c for pair in pairs for side in pair for c in side})
    tokenizer = {"level": "char", "vocabulary": vocabulary}
    index = {c: i + RESERVED for i, c in enumerate(vocabulary)}
    config = ModelConfig(type="seq2seq", cell="gru", layers=1, units=128, embedding_dim=32, bidirectional=True,
                         attention_type="additive")
    keras.utils.set_random_seed(0)
    longest = max(len(t) for _, t in pairs)
    model = build_seq2seq(config, tokenizer, tokenizer,
                          model_card={"config": {"training": {"seq_length": longest}}})
    model.compile(keras.optimizers.Adam(0.003), keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                                          ignore_class=0))
    source = pad_rows([np.array([index[c] for c in s]) for s, _ in pairs])
    target_in = pad_rows([np.array([START] + [index[c] for c in t]) for _, t in pairs])
    target_out = pad_rows([np.array([index[c] for c in t] + [END]) for _, t in pairs])
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.fit([source, target_in], target_out, batch_size=128, epochs=1, verbose=0)
    return model


class PositionedAttention(keras.layers.Layer):
    """The trained attention layer at an explicit target position, which a model with
    model.attention_positions scores with (the layer's own call assumes position 0)."""

    def __init__(self, attention, **kwargs):
        super().__init__(**kwargs)
        self.attention = attention

    def call(self, query, values, mask, position):
        return self.attention.attend(query, self.attention.keys(values), values, mask, position)


def plain_models(model: keras.Model):
    """The keras.io-style inference pair: an encoder model and a one-step decoder model with states
    (and, for a model whose attention reads positions, the target position as one more input)."""
    parts = Seq2SeqParts.of(model)
    source = keras.Input((None,), dtype="int32")
    values, mask, first = encode(parts, source)
    encoder = keras.Model(source, [values, mask, *first])
    token = keras.Input((1,), dtype="int32")
    position = keras.Input((), dtype="int32")
    state_inputs = [[keras.Input((size,)) for size in np.atleast_1d(cell.state_size)] for cell in parts.decoder_cells]
    memory = [keras.Input(values.shape[1:]), keras.Input(mask.shape[1:], dtype="bool")]
    h, new_states = parts.target_embedding(token), []
    for cell, states in zip(parts.decoder_cells, state_inputs):
        h, *layer_states = keras.layers.RNN(cell, return_sequences=True, return_state=True)(h, initial_state=states)
        new_states += layer_states
    if parts.attention is not None:
        context, _ = PositionedAttention(parts.attention)(h, *memory, position)
        h = parts.attentional(parts.concatenate([context, h]))
    flat = [s for states in state_inputs for s in states]
    decoder = keras.Model([token, position, *flat, *memory], [parts.logits(h), *new_states])
    return encoder, decoder, [len(states) for states in state_inputs]


def plain_decode(encoder, decoder, sizes, source_ids: np.ndarray, limit: int) -> list[int]:
    values, mask, *first = encoder(source_ids[None])
    values = keras.ops.copy(values)  # drops the Keras mask the encoder attached (the mask is an input)
    # the first decoder layer starts from the encoder's states, the others from zeros
    states = list(first) + [keras.ops.zeros((1, first[0].shape[-1]))] * (sum(sizes) - len(first))
    token, out = START, []
    for t in range(limit):
        logits, *states = decoder([keras.ops.convert_to_tensor([[token]], "int32"),
                                   keras.ops.convert_to_tensor([t], "int32"), *states, values, mask])
        logits = logits.numpy()[0, -1]
        logits[[0, START]] = -np.inf
        token = int(np.argmax(logits))
        if token == END:
            break
        out.append(token)
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a seq2seq .keras file (default: train a small one)")
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--sources", type=int, default=64)
    parser.add_argument("--pairs", type=Path, help="a source<TAB>target file to train on and take sources from "
                                                   "(default: textgen/corpora/dates_train.tsv where shipped)")
    args = parser.parse_args()
    textgen.load_keras_objects()
    name, pairs = bench_pairs(args.pairs)
    if args.model:
        translator = Translator.load(args.model, same_letters=False)  # the plain loop has no such rule
        print(f"model: {args.model}")
    else:
        translator = Translator(train_model(pairs, args.train_seconds))
        print(f"model: GRU 128, bidirectional, additive attention, trained {args.train_seconds:g} s on {name}")
    rng = np.random.default_rng(1)
    sources = [pairs[i][0] for i in rng.choice(len(pairs), args.sources, replace=False)]
    encoded = translator.encode_sources(sources)
    limits = translator.length_limits(encoded, None)  # each source's own, as the engine allows it
    encoder, decoder, sizes = plain_models(translator.model)

    plain_decode(encoder, decoder, sizes, encoded[0], limits[0])  # warm-up: first calls build and trace
    translator.translate_ids(sources)
    start = time.perf_counter()
    plain = [plain_decode(encoder, decoder, sizes, row, limit) for row, limit in zip(encoded, limits)]
    plain_seconds = time.perf_counter() - start
    start = time.perf_counter()
    batched = translator.translate_ids(sources)
    batched_seconds = time.perf_counter() - start

    print(f"CPU: {cpu_model()}; {len(sources)} sources, length limits {limits.min()}-{limits.max()}")
    for label, rows, seconds in (("plain Keras step loop", plain, plain_seconds),
                                 ("textgen batched greedy", batched, batched_seconds)):
        tokens = sum(len(row) + 1 for row in rows)  # END counted: it is a step too
        print(f"{label:24s} {seconds:8.3f} s  {len(rows) / seconds:9.1f} sources/s  {tokens / seconds:10.1f} tokens/s")
    same = sum(list(a) == list(b) for a, b in zip(plain, batched))
    print(f"speed-up: {plain_seconds / batched_seconds:.1f}x (target >= 10x); same output for {same}/{len(sources)}")
    print("examples:", [(s, translator.detokenize(r)) for s, r in list(zip(sources, batched))[:3]])


if __name__ == "__main__":
    main()
