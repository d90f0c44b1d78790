"""Benchmark textgen's generation engine against the two usual ways of sampling from an RNN.

Reference network: Embedding(65, 256) -> LSTM(512) -> Dense(65), built with textgen's own
`build_model` and a 65-character tokenizer (Tiny Shakespeare's characters). The weights are
untrained: speed does not depend on them. Everything runs in one process, after warm-up:

  A  window re-feed   an eager call of the whole model on the last 40 characters for every
                      new character, sampling the last position (the lecture / keras.io way)
  B  one step         a tf.function doing one stateful step (embedding, cell, head, sampling),
                      called from a Python loop
  textgen             `Generator.generate`: 1 sample x 1000 characters, 64 samples x 1000

With --variants it also times every way the engine can compile its loop (float32 or
bfloat16 products, with or without XLA) for both cases: the measurements behind the
choices `Generator` makes by default.

With --transformer it times instead a transformer (4 blocks x 4 heads, width 128, context
256: compare_architectures.py's) with learned and with rotary positions, one sample, inside
its context (the first 250 characters) and past it (the next --length): learned positions
re-feed the context per character there, rotary ones keep stepping one position.

Usage: python scripts/bench_generate.py [--length 1000] [--repeats 3] [--window-chars 100] [--variants]
       python scripts/bench_generate.py --transformer [--length 1000]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np

import textgen  # noqa: F401  (its Keras objects are registered by the textgen.generation import below)
import tensorflow as tf
from textgen.config import ModelConfig
from textgen.generation.generate import Generator
from textgen.models.builder import build_model, recurrent_layers
from textgen.data.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
SEED_TEXT = "ROMEO:\nWhat light through yonder window breaks? It is the east."
WINDOW = 40  # characters the window re-feed baseline runs the model on


def reference_generator() -> Generator:
    text = (ROOT / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    tokenizer = CharTokenizer.fit(text)
    assert tokenizer.vocab_size == 65, tokenizer.vocab_size
    keras_seed = 1234
    tf.keras.utils.set_random_seed(keras_seed)  # same untrained weights every run
    config = ModelConfig(cell="lstm", embedding_dim=256, units=512, layers=1)
    return Generator(build_model(config, tokenizer.get_config()))


def window_refeed(model, seed_ids: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """Baseline A: the whole model on the last WINDOW ids, eagerly, once per character."""
    ids = list(seed_ids)
    for _ in range(n):
        logits = model(np.array([ids[-WINDOW:]], dtype=np.int32), training=False)[0, -1].numpy()
        probs = np.exp(logits - logits.max())
        ids.append(int(rng.choice(len(probs), p=probs / probs.sum())))
    return ids[len(seed_ids):]


def one_step_function(model):
    """Baseline B: one compiled stateful step; the Python loop around it carries the state."""
    embedding = model.get_layer("token_embedding")
    cell = recurrent_layers(model)[0].cell
    head = model.get_layer("logits")

    @tf.function
    def step(token, h, c, seed):
        x = embedding(token)
        out, (h, c) = cell(x, [h, c], training=False)
        logits = head(out)
        return tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[:, 0], h, c

    def run(seed_ids: np.ndarray, n: int) -> list[int]:
        h = c = tf.zeros([1, cell.units])
        for token in seed_ids[:-1]:  # prime the state
            _, h, c = step(tf.constant([token], tf.int32), h, c, tf.constant([0, 0], tf.int64))
        token = tf.constant([seed_ids[-1]], tf.int32)
        out = []
        for i in range(n):
            token, h, c = step(token, h, c, tf.constant([7, i], tf.int64))
            out.append(int(token[0]))
        return out

    return run


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up: tracing, compilation, first allocations
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def python_peak_mb(fn) -> float:
    """Peak Python-heap allocation of one (untimed) run."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=1000, help="characters per textgen / one-step run")
    parser.add_argument("--samples", type=int, default=64, help="samples in the batched textgen run")
    parser.add_argument("--window-chars", type=int, default=100, help="characters the slow baseline A makes")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case; the best is reported")
    parser.add_argument("--variants", action="store_true", help="also time each precision / XLA combination")
    parser.add_argument("--transformer", action="store_true", help="time a transformer inside and past its context")
    args = parser.parse_args()
    if args.transformer:
        time_transformer(args)
        return

    generator = reference_generator()
    model = generator.model
    seed_ids = generator.tokenizer.encode(SEED_TEXT)
    rows = []  # (name, characters per second, peak RSS after the case in MB, python heap peak MB)
    print(f"TensorFlow {tf.__version__}; model {model.count_params():,} parameters; "
          f"peak RSS after building the model {peak_rss_mb():.0f} MB")

    rng = np.random.default_rng(0)
    seconds = best_time(lambda: window_refeed(model, seed_ids, args.window_chars, rng), args.repeats)
    rows.append(("A  window re-feed (eager, 40 chars)", args.window_chars / seconds, peak_rss_mb(), None))

    one_step = one_step_function(model)
    seconds = best_time(lambda: one_step(seed_ids, args.length), args.repeats)
    rows.append(("B  one-step tf.function, Python loop", args.length / seconds, peak_rss_mb(), None))

    for samples in (1, args.samples):
        def run(samples=samples):
            texts = generator.generate(SEED_TEXT, length=args.length, temperature=1.0, num_samples=samples,
                                       random_seed=3)
            assert len(texts) == samples and all(len(t) == args.length for t in texts)

        seconds = best_time(run, args.repeats)
        rows.append((f"textgen {samples} x {args.length} chars", samples * args.length / seconds,
                     peak_rss_mb(), python_peak_mb(run)))

    base_a, base_b = rows[0][1], rows[1][1]
    print(f"\n{'case':42s} {'chars/s':>12s} {'x A':>9s} {'x B':>8s} {'peak RSS':>10s} {'py heap':>9s}")
    for name, rate, rss, heap in rows:
        heap_text = f"{heap:7.1f}MB" if heap is not None else " " * 9
        print(f"{name:42s} {rate:12,.0f} {rate / base_a:9.1f} {rate / base_b:8.1f} {rss:8.0f}MB {heap_text}")
    single, batched = rows[2][1], rows[3][1]
    print(f"\ntargets: single >= 10x B: {single / base_b:.1f}x {'ok' if single >= 10 * base_b else 'MISSED'}; "
          f"single >= 500x A: {single / base_a:.0f}x {'ok' if single >= 500 * base_a else 'MISSED'}; "
          f"{args.samples} samples >= 100,000 chars/s: {batched:,.0f} {'ok' if batched >= 1e5 else 'MISSED'}")
    if args.variants:
        time_variants(model, args)


def time_variants(model, args) -> None:
    """Characters per second of each precision / XLA combination, sampling at temperature 1."""
    print(f"\n{'engine variant':32s} {'1 sample':>12s} {f'{args.samples} samples':>12s}")
    for precision, jit in (("float32", True), ("float32", False), ("bfloat16", False), ("bfloat16", True)):
        generator = Generator(model, precision=precision, jit_compile=jit)
        rates = []
        for samples in (1, args.samples):
            seconds = best_time(lambda: generator.generate(SEED_TEXT, length=args.length, num_samples=samples,
                                                           random_seed=3), args.repeats)
            rates.append(samples * args.length / seconds)
        print(f"{precision + (' + XLA' if jit else ''):32s} {rates[0]:12,.0f} {rates[1]:12,.0f}")


def time_transformer(args) -> None:
    """Characters per second of one sample inside a transformer's context and past it."""
    text = (ROOT / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    tokenizer = CharTokenizer.fit(text)
    inside = 250  # characters generated from a 6-character seed: all inside the 256 context
    print(f"{'positions':10s} {'inside the context':>20s} {f'past it ({args.length} chars)':>24s}")
    for positions in ("learned", "rotary"):
        tf.keras.utils.set_random_seed(1234)
        config = ModelConfig(type="transformer", embedding_dim=128, heads=4, layers=4, context_length=256,
                             positions=positions)
        generator = Generator(build_model(config, tokenizer.get_config()))
        seed = "ROMEO:"
        first = best_time(lambda: generator.generate(seed, length=inside, temperature=1.0, random_seed=3),
                          args.repeats)
        long_seed = text[:300]  # primed past the context, so every timed character is past it
        past = best_time(lambda: generator.generate(long_seed, length=args.length, temperature=1.0, random_seed=3),
                         args.repeats)
        prime = best_time(lambda: generator.generate(long_seed, length=1, temperature=1.0, random_seed=3),
                          args.repeats)
        print(f"{positions:10s} {inside / first:20,.0f} {args.length / max(past - prime, 1e-9):24,.0f}")


if __name__ == "__main__":
    main()
