"""Benchmark textgen's training against the plain Keras way, and measure the data path.

Network for both: Embedding(65, 256) -> LSTM(512) -> Dense(65) on Tiny Shakespeare's first
90% (the last 10% is held out), windows of 40 characters, batches of 64. In one process:

  baseline   keras.Sequential + model.fit on the lecture's pipeline: ids -> unbatched
             tf.data -> batch(41) -> split -> shuffle -> batch(64), float32, Adam defaults
  textgen    textgen.training.train.train with this machine's defaults (precision, XLA and kernels
             chosen by textgen/training/distribute.py), nothing else changed but the network shape;
             then again with the baseline's optimizer settings (Adam at 0.001, no clipping),
             so that the held-out losses compare precision and kernels alone
  variants   (--variants) textgen with one choice changed, to show what each one buys:
             float32 + fused kernels, float32 + Keras kernels, float32 + Keras kernels + XLA,
             bfloat16 variants, and weight averaging (its held-out loss is the average's)

Each run trains `--steps` steps; the first `--warmup` steps (tracing, compiling) are not
timed. Reported: tokens/s of wall time, CPU seconds per step (this process's user+system
time, which other programs on the machine disturb less), and the held-out loss after the
same number of steps, both models scored by the same float32 evaluation.

Also: the CPU's matrix-multiply peak (float32 and bfloat16) and textgen's achieved FLOP/s as
a share of it; character encoding throughput on a 100 MB corpus (the tokenizer alone and
the whole `prepare` pass); peak memory (ru_maxrss, in a fresh subprocess each) while
preparing and while training on a 200 MB corpus.

Usage: python scripts/bench_train.py [--steps 300] [--warmup 20] [--variants] [--skip-data] [--json out.json]
Run it when the machine is otherwise idle (see `uptime`): the load is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import textgen  # noqa: F401  (its Keras objects are registered by the textgen.generation import below)
import keras
import tensorflow as tf
from textgen.config import load_config
from textgen.data.corpus import stream_corpus
from textgen.data.dataset import make_dataset, split_ids
from textgen.training.distribute import cpu_has_amx_bf16
from textgen.generation.generate import load_keras_model
from textgen.data.tokenizer import CharTokenizer
from textgen.training.train import train

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpora" / "tinyshakespeare.txt"
SEQ, BATCH, EMBED, UNITS = 40, 64, 256, 512
TOKENS_PER_STEP = SEQ * BATCH


class StepTimer(keras.callbacks.Callback):
    """Wall and CPU time per step of the steps after the first `warmup`, from the end of
    step `warmup` to the end of the last step (validation and saving are left out)."""

    def __init__(self, warmup: int):
        super().__init__()
        self.warmup, self.steps = warmup, 0
        self.marks: list[tuple[float, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps >= self.warmup:
            self.marks.append((time.perf_counter(), time.process_time()))

    @property
    def wall(self) -> float:
        return (self.marks[-1][0] - self.marks[0][0]) / (len(self.marks) - 1)

    @property
    def cpu(self) -> float:
        return (self.marks[-1][1] - self.marks[0][1]) / (len(self.marks) - 1)


def load() -> float:
    return os.getloadavg()[0]


# --------------------------------------------------------------------------- the two trainers


def baseline(text: str, steps: int, warmup: int) -> tuple[keras.Model, StepTimer]:
    """The lecture's way: a Sequential model and model.fit on an unbatched-then-batched pipeline."""
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.array([index[c] for c in text], dtype=np.int32)
    train_ids, _ = split_ids(ids, 0.1, SEQ)
    dataset = tf.data.Dataset.from_tensor_slices(train_ids).batch(SEQ + 1, drop_remainder=True)
    dataset = dataset.map(lambda chunk: (chunk[:-1], chunk[1:]))
    dataset = dataset.shuffle(10_000).batch(BATCH, drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(len(vocab), EMBED),
                              keras.layers.LSTM(UNITS, return_sequences=True), keras.layers.Dense(len(vocab))])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = StepTimer(warmup)
    model.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return model, timer


def textgen_run(steps: int, warmup: int, out: Path, **settings) -> tuple[keras.Model, StepTimer, list[str]]:
    overrides = {"corpus.paths": f"['{CORPUS}']", "model.embedding_dim": EMBED, "model.units": UNITS,
                 "training.seq_length": SEQ, "training.batch_size": BATCH, "training.epochs": 1,
                 "training.steps_per_epoch": steps, "training.sample_every": 0, "output.dir": str(out), **settings}
    lines: list[str] = []
    timer = StepTimer(warmup)
    train(load_config(None, [f"{k}={v}" for k, v in overrides.items()]), overwrite=True, echo=lines.append,
          verbose=0, callbacks=(timer,), progress=None)
    return load_keras_model(out / "model.keras"), timer, lines


def held_out_loss(model: keras.Model, val_ids: np.ndarray) -> float:
    """Mean cross-entropy on the held-out tail, in float32, the same way for every model."""
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return float(model.evaluate(make_dataset(val_ids, SEQ, BATCH, shuffle=False), verbose=0))


# --------------------------------------------------------------------------- hardware


def matmul_peak(dtype, m: int = 2048, k: int | None = None, n: int | None = None, seconds: float = 2.0) -> float:
    """GFLOP/s of repeated (m x k) @ (k x n) products on this CPU (m x m x m unless k and n are given)."""
    k, n = k or m, n or m
    a = tf.cast(tf.random.normal((m, k)), dtype)
    b = tf.cast(tf.random.normal((k, n)), dtype)
    repeats = max(10, int(2e9 // (2 * m * k * n)))  # about 2 GFLOP a call, so a small shape's call overhead hides

    @tf.function
    def products(a, b):
        total = tf.constant(0.0)
        for _ in tf.range(repeats):
            total += tf.cast(tf.matmul(a, b)[0, 0], tf.float32)
        return total

    products(a, b).numpy()
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        products(a, b).numpy()
        runs += repeats
    return 2 * m * k * n * runs / (time.perf_counter() - start) / 1e9


def flops_per_step(vocab: int) -> float:
    """Multiply-adds of one training step x 2, backward pass = 2 x forward."""
    forward = TOKENS_PER_STEP * (2 * (EMBED + UNITS) * 4 * UNITS + 2 * UNITS * vocab)
    return 3 * forward


# --------------------------------------------------------------------------- data path


def build_corpus(path: Path, megabytes: int) -> int:
    """Repeat the bundled corpora into `path` until it holds `megabytes` MB."""
    sources = [p.read_bytes() for p in sorted((ROOT / "corpora").glob("*.txt"))]
    written = 0
    with path.open("wb") as out:
        while written < megabytes * 1_000_000:
            for data in sources:
                out.write(data)
                written += len(data)
    return written


def encoding_throughput(path: Path, size: int) -> dict:
    from textgen.data.corpus import stream_corpus

    blocks = list(stream_corpus([str(path)], strip_gutenberg=False))
    start = time.perf_counter()
    tokenizer = CharTokenizer.fit_stream(blocks)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    for block in blocks:
        tokenizer.encode(block)
    encode = time.perf_counter() - start
    del blocks
    with tempfile.TemporaryDirectory() as run:
        prepared = _in_subprocess("prepare", path, Path(run))
    return {"corpus_mb": size / 1e6, "vocabulary": tokenizer.vocab_size, "fit_mb_s": size / 1e6 / fit,
            "encode_mb_s": size / 1e6 / encode, "prepare_mb_s": size / 1e6 / prepared["seconds"],
            "prepare_seconds": prepared["seconds"], "prepare_peak_mb": prepared["peak_mb"]}


_CHILD = """
import json, resource, sys, time
from pathlib import Path
import textgen
from textgen.config import load_config
from textgen.data.prepare import cache_dir
from textgen.training.train import prepare, train
what, corpus, run = sys.argv[1], sys.argv[2], Path(sys.argv[3])
config = load_config(None, [f"corpus.paths=['{corpus}']", f"output.dir={run}", "corpus.strip_gutenberg=false",
                            "corpus.validation_fraction=0.001", "model.embedding_dim=256", "model.units=512",
                            "training.seq_length=40", "training.batch_size=64", "training.epochs=1",
                            "training.steps_per_epoch=30", "training.sample_every=0"])
start = time.perf_counter()
if what == "prepare":
    prepare(config, progress=None)
else:
    train(config, overwrite=True, echo=lambda _: None, verbose=0, progress=None)
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _in_subprocess(what: str, corpus: Path, run: Path) -> dict:
    """Seconds taken (imports left out) and peak resident memory (MB, ru_maxrss) of a fresh
    process that prepares or trains on `corpus`.

    Linux keeps ru_maxrss across execve, so a child exec'd straight from this (large)
    process would report this process's size. The child is forked from a small shell
    instead (the `; exit` keeps the shell from exec'ing it directly).
    """
    command = [sys.executable, "-c", _CHILD, what, str(corpus), str(run)]
    done = subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", *command], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(f"{what} subprocess failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_on_large_corpus(megabytes: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "large.txt"
        size = build_corpus(corpus, megabytes)
        run = Path(scratch) / "run"
        prepared = _in_subprocess("prepare", corpus, run)
        trained = _in_subprocess("train", corpus, run)  # 30 steps, reading the cache just made
        cache = (run / "cache" / "ids.bin").stat().st_size
    return {"corpus_mb": size / 1e6, "cache_mb": cache / 1e6, "prepare_seconds": prepared["seconds"],
            "prepare_peak_mb": prepared["peak_mb"], "train_seconds": trained["seconds"],
            "train_peak_mb": trained["peak_mb"]}


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=20, help="first steps left out of the timing")
    parser.add_argument("--variants", action="store_true", help="also time textgen with single choices changed")
    parser.add_argument("--skip-data", action="store_true", help="skip the encoding and 200 MB memory measurements")
    parser.add_argument("--skip-training", action="store_true", help="measure only the data path")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                 "amx_bf16": cpu_has_amx_bf16(), "tensorflow": tf.__version__,
                                 "keras": keras.__version__, "load_before": load()}}
    if not args.skip_training:
        results.update(training_benchmark(args))
    if not args.skip_data:
        results.update(data_benchmark())
    results["machine"]["load_after"] = load()
    print(f"\nload average: {results['machine']['load_before']:.2f} before, {results['machine']['load_after']:.2f} "
          f"after ({os.cpu_count()} cores); TensorFlow {tf.__version__}, Keras {keras.__version__}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def training_benchmark(args) -> dict:
    results: dict = {}
    text = "".join(stream_corpus([str(CORPUS)]))
    vocab = len(set(text))
    _, val_ids = split_ids(CharTokenizer.fit(text).encode(text), 0.1, SEQ)

    runs: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        model, timer = baseline(text, args.steps, args.warmup)
        runs["baseline"] = (timer, held_out_loss(model, val_ids), "keras.Sequential + fit, float32")
        print(f"baseline done (load {load():.2f})", file=sys.stderr)
        model, timer, lines = textgen_run(args.steps, args.warmup, Path(scratch) / "textgen")
        chosen = next(line for line in lines if line.startswith("devices:"))
        runs["textgen"] = (timer, held_out_loss(model, val_ids), chosen.split("; ", 1)[1])
        print(f"textgen done (load {load():.2f})", file=sys.stderr)
        # The same, with the baseline's optimizer settings: only precision and kernels differ.
        model, timer, _ = textgen_run(args.steps, args.warmup, Path(scratch) / "same-optimizer",
                                      **{"training.learning_rate": 0.001, "training.clipnorm": 0})
        runs["textgen, baseline's Adam settings"] = (timer, held_out_loss(model, val_ids), "textgen")
        print(f"textgen with the baseline's optimizer done (load {load():.2f})", file=sys.stderr)
        if args.variants:
            variants = {
                "float32, fused kernels": {"training.precision": "float32"},
                "float32, Keras kernels": {"training.precision": "float32", "training.fused_kernels": "false"},
                "float32, Keras kernels, XLA": {"training.precision": "float32", "training.fused_kernels": "false",
                                                "training.jit_compile": "true"},
                "mixed_bfloat16, Keras kernels": {"training.precision": "mixed_bfloat16",
                                                  "training.fused_kernels": "false"},
                "mixed_bfloat16, fused kernels, XLA": {"training.precision": "mixed_bfloat16",
                                                       "training.jit_compile": "true"},
                "weight averaging (ema_momentum 0.995)": {"training.ema_momentum": 0.995},
            }
            for name, settings in variants.items():
                model, timer, _ = textgen_run(args.steps, args.warmup, Path(scratch) / "variant", **settings)
                runs[name] = (timer, held_out_loss(model, val_ids), "textgen")
                print(f"{name} done (load {load():.2f})", file=sys.stderr)

    base_timer, base_loss, _ = runs["baseline"]
    print(f"\nTraining, Embedding {EMBED} -> LSTM {UNITS} -> Dense {vocab}, seq {SEQ}, batch {BATCH}, "
          f"{args.steps} steps ({args.warmup} warm-up)")
    print(f"{'run':38s} {'tokens/s':>9s} {'speed-up':>8s} {'CPU s/step':>10s} {'held-out loss':>13s} {'vs baseline':>11s}")
    results["training"] = {}
    for name, (timer, loss, how) in runs.items():
        tokens = TOKENS_PER_STEP / timer.wall
        row = {"tokens_per_s": tokens, "seconds_per_step": timer.wall, "cpu_seconds_per_step": timer.cpu,
               "speedup": base_timer.wall / timer.wall, "held_out_loss": loss,
               "loss_vs_baseline": loss / base_loss - 1, "settings": how}
        results["training"][name] = row
        print(f"{name:38s} {tokens:9,.0f} {row['speedup']:7.2f}x {timer.cpu:10.3f} {loss:13.4f} "
              f"{row['loss_vs_baseline']:+10.1%}")
    print(f"textgen's choices: {runs['textgen'][2]}")

    peak32, peak16 = matmul_peak(tf.float32), matmul_peak(tf.bfloat16)
    achieved = flops_per_step(vocab) / runs["textgen"][0].wall / 1e9
    results["flops"] = {"matmul_peak_float32_gflops": peak32, "matmul_peak_bfloat16_gflops": peak16,
                        "textgen_gflops": achieved, "share_of_float32_peak": achieved / peak32,
                        "share_of_bfloat16_peak": achieved / peak16,
                        "baseline_gflops": flops_per_step(vocab) / base_timer.wall / 1e9}
    print(f"\nmatmul peak (2048 x 2048): float32 {peak32:,.0f} GFLOP/s, bfloat16 {peak16:,.0f} GFLOP/s")
    print(f"textgen achieves {achieved:,.0f} GFLOP/s = {achieved / peak32:.0%} of the float32 peak, "
          f"{achieved / peak16:.0%} of the bfloat16 peak (baseline: {results['flops']['baseline_gflops']:,.0f})")
    return results


def data_benchmark() -> dict:
    results: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus100.txt"
        size = build_corpus(corpus, 100)
        enc = encoding_throughput(corpus, size)
    results["encoding"] = enc
    print(f"\nencoding a {enc['corpus_mb']:.0f} MB corpus (char level, {enc['vocabulary']} characters): "
          f"fit {enc['fit_mb_s']:,.0f} MB/s, encode {enc['encode_mb_s']:,.0f} MB/s; whole prepare pass "
          f"(read, fit, read, encode, write) {enc['prepare_mb_s']:,.0f} MB/s, peak memory {enc['prepare_peak_mb']:,.0f} MB")
    memory = memory_on_large_corpus(200)
    results["memory"] = memory
    print(f"200 MB corpus: prepare {memory['prepare_seconds']:.0f} s, peak {memory['prepare_peak_mb']:,.0f} MB; "
          f"training (memory-mapped {memory['cache_mb']:,.0f} MB cache) peak {memory['train_peak_mb']:,.0f} MB")
    return results


if __name__ == "__main__":
    main()
