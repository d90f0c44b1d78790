"""How close textgen runs to this machine's own limits, each workload as a share of a peak measured in the same run.

The network is the course's: Embedding(65, 256) -> LSTM(512) -> Dense(65) on Tiny Shakespeare's
characters (the network of bench_train.py and bench_generate.py). In one process:

  peaks       matrix products in float32 and bfloat16: a large square (2048 x 2048 x 2048) and the
              model's own gate product, (rows x 768) @ (768 x 2048), for a batch of 64 rows and for
              one row; and the read bandwidth of summing a float32 buffer the size of the weights
              (the cache the weights live in while generating) and one of 512 MB (main memory)
  training    textgen.training.train, --steps steps of batch 64 x seq 40 (the first --warmup not
              timed): tokens/s x FLOPs per token, against the large-product peak of the precision
              textgen trains in here; the plain Keras way (bench_train.py's baseline) beside it
  generation  Generator.generate, 64 samples x --length characters: steps/s x FLOPs per step,
              against the same peak; the one-step tf.function loop (bench_generate.py's B) beside it
  one sample  Generator.generate, 1 sample: the weight bytes one step reads x steps/s, against the
              bandwidth of a buffer of their size (a single sample is a matrix-vector product per
              step: it waits on memory, not on arithmetic); the one-step loop beside it

FLOPs are the model's, from its shapes (as "model FLOPs utilisation" counts them): 2 per
multiply-add of the LSTM's input and recurrent gate products and of the head; a training
token costs 3 forward passes (the backward pass is two). Element-wise work (gates, softmax,
Adam) is not counted. textgen's generation reads the input product from a table, a row per
token, so it executes only the recurrent product and the head: its share of the peak in
model FLOPs is higher than the share of the arithmetic it runs. Bytes are what each loop
reads: the one-step loop the whole input kernel, textgen one row of its table.

Usage: python scripts/bench_limits.py [--steps 200] [--warmup 20] [--length 1000] [--json out.json]
Run it when the machine is otherwise idle (see `uptime`): the load is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench_generate import SEED_TEXT, best_time, one_step_function, reference_generator
from bench_train import BATCH, EMBED, SEQ, TOKENS_PER_STEP, UNITS, baseline, flops_per_step, matmul_peak, textgen_run
from bench_train import CORPUS, load
from textgen.data.corpus import stream_corpus
from textgen.generation.steppers import TABLE_MAX_BYTES
from textgen.models.builder import recurrent_layers
from textgen.training.distribute import cpu_flags, cpu_has_native_bf16, cpu_model

FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")


def read_bandwidth(nbytes: int, seconds: float = 1.5) -> float:
    """GB/s of summing a float32 buffer of `nbytes` over and over."""
    buffer = tf.random.uniform([nbytes // 4])
    repeats = max(4, int(2e9 // nbytes))

    @tf.function
    def sums(x):
        total = tf.constant(0.0)
        for _ in tf.range(repeats):
            total += tf.reduce_sum(x)
        return total

    sums(buffer).numpy()
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        sums(buffer).numpy()
        runs += repeats
    return nbytes * runs / (time.perf_counter() - start) / 1e9


def products_only(dtype, vocab: int, seconds: float = 3.0) -> float:
    """GFLOP/s of just the matrix products of one training step, at its shapes, one after another:
    the input product of the whole batch, SEQ recurrent products of BATCH rows, the head, and for
    each product the two of its backward pass. The ceiling of the products' kernels in isolation."""
    rng = np.random.default_rng(0)

    def matrix(*shape):
        return tf.constant(rng.normal(size=shape).astype(np.float32) * 0.01, dtype)
    tokens = TOKENS_PER_STEP
    shapes = [(tokens, EMBED, 4 * UNITS)] + [(BATCH, UNITS, 4 * UNITS)] * SEQ + [(tokens, UNITS, vocab)]
    operands = [(matrix(m, k), matrix(k, n), matrix(m, n)) for m, k, n in shapes]

    @tf.function
    def step():
        total = tf.constant(0.0)
        for a, b, grad in operands:  # forward, then the input's and the weight's gradients
            products = (tf.matmul(a, b), tf.matmul(grad, b, transpose_b=True), tf.matmul(a, grad, transpose_a=True))
            for product in products:
                total += tf.cast(product[0, 0], tf.float32)
        return total

    step().numpy()
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step().numpy()
        runs += 1
    return flops_per_step(vocab) * runs / (time.perf_counter() - start) / 1e9


def step_costs(model) -> tuple[int, int, float]:
    """(bytes textgen reads, bytes the one-step loop reads, model FLOPs per sample) of one float32
    generation step of the LSTM and head."""
    lstm = recurrent_layers(model)[0]
    head = model.get_layer("logits")
    vocab = head.weights[0].shape[-1]
    head_numbers = sum(int(np.prod(w.shape)) for w in head.weights)
    recurrent = UNITS * 4 * UNITS + 4 * UNITS  # recurrent kernel and bias
    full = sum(int(np.prod(w.shape)) for w in lstm.weights) + head_numbers + EMBED  # + the embedding's row
    table = vocab * 4 * UNITS * 4 <= TABLE_MAX_BYTES  # textgen reads one row of the input product's table
    textgen = recurrent + head_numbers + (4 * UNITS if table else EMBED + EMBED * 4 * UNITS)
    return 4 * textgen, 4 * full, 2.0 * ((EMBED + UNITS) * 4 * UNITS + UNITS * vocab)


GATE = EMBED + UNITS, 4 * UNITS  # the LSTM's gate product: (rows x GATE[0]) @ (GATE[0] x GATE[1])
ROW_BLOCK = f"{BATCH}x{GATE[0]}x{GATE[1]}"


def measure_limits(weight_bytes: int, plain_bytes: int) -> tuple[dict, dict, float]:
    """(matrix-product peaks in GFLOP/s, read bandwidths in GB/s, the one-row product's bandwidth)."""
    peaks = {
        "float32 2048^3": matmul_peak(tf.float32),
        "bfloat16 2048^3": matmul_peak(tf.bfloat16),
        f"float32 {ROW_BLOCK}": matmul_peak(tf.float32, BATCH, *GATE),
        f"bfloat16 {ROW_BLOCK}": matmul_peak(tf.bfloat16, BATCH, *GATE),
        f"float32 1x{GATE[0]}x{GATE[1]}": matmul_peak(tf.float32, 1, *GATE),
    }
    bandwidth = {f"sum of {weight_bytes / 2**20:.1f} MB (textgen's step)": read_bandwidth(weight_bytes),
                 f"sum of {plain_bytes / 2**20:.1f} MB (the one-step loop's)": read_bandwidth(plain_bytes),
                 "sum of 512 MB (main memory)": read_bandwidth(512 * 2**20)}
    gemv = peaks[f"float32 1x{GATE[0]}x{GATE[1]}"] * 2  # GB/s: 2 FLOPs per 4-byte weight read
    print("\nmeasured peaks")
    for name, value in peaks.items():
        print(f"  matmul {name:28s} {value:9,.1f} GFLOP/s")
    for name, value in bandwidth.items():
        print(f"  read  {name:29s} {value:9,.1f} GB/s")
    print(f"  (the 1-row product reads its weights at {gemv:,.1f} GB/s)")
    return peaks, bandwidth, gemv


def training_rows(args, native: bool, peaks: dict) -> list[tuple]:
    """The plain Keras way and textgen, against the large-product peak, the recurrent product's
    peak and the step's products alone."""
    big_name = "bfloat16 2048^3" if native else "float32 2048^3"
    shape = f"{'bfloat16' if native else 'float32'} {ROW_BLOCK}"
    text = "".join(stream_corpus([str(CORPUS)]))
    with tempfile.TemporaryDirectory() as scratch:
        _, plain = baseline(text, args.steps, args.warmup)
        _, timer, lines = textgen_run(args.steps, args.warmup, Path(scratch) / "textgen")
    chosen = next(line for line in lines if line.startswith("devices:")).split("; ", 1)[1].splitlines()[0]
    train_flops = flops_per_step(len(set(text)))
    rows = []
    for name, wall in (("training: plain Keras fit", plain.wall), (f"training: textgen ({chosen})", timer.wall)):
        gflops = train_flops / wall / 1e9
        rows.append((name, gflops, f"GFLOP/s ({TOKENS_PER_STEP / wall:,.0f} tokens/s)", big_name, peaks[big_name],
                     gflops / peaks[big_name]))
    rows.append(("training: textgen (against its shape)", gflops, "GFLOP/s", shape, peaks[shape],
                 gflops / peaks[shape]))
    alone = products_only(tf.bfloat16 if native else tf.float32, len(set(text)))
    rows.append(("training: textgen (against its products alone)", gflops, "GFLOP/s", "the step's products",
                 alone, gflops / alone))
    rows.append(("the step's products alone", alone, "GFLOP/s", big_name, peaks[big_name], alone / peaks[big_name]))
    return rows


def generation_rows(args, generator, native: bool, peaks: dict, bandwidths: tuple[float, float],
                    costs: tuple[int, int, float]) -> list[tuple]:
    """One sample (the one-step loop and textgen) against the read bandwidth, 64 samples against
    the large-product peak and the 64-row product's; `costs` is `step_costs` of the model."""
    weight_bytes, plain_bytes, step_flops = costs
    textgen_bandwidth, plain_bandwidth = bandwidths
    big_name = "bfloat16 2048^3" if native else "float32 2048^3"
    shape = f"{'bfloat16' if native else 'float32'} {ROW_BLOCK}"
    seconds = best_time(lambda: one_step_function(generator.model)(generator.tokenizer.encode(SEED_TEXT),
                                                                   args.length), args.repeats)
    steps_per_s = args.length / seconds
    rows = [("1 sample: one-step tf.function loop", plain_bytes * steps_per_s / 1e9,
             f"GB/s ({steps_per_s:,.0f} chars/s)", "read bandwidth", plain_bandwidth,
             plain_bytes * steps_per_s / 1e9 / plain_bandwidth)]
    seconds = best_time(lambda: generator.generate(SEED_TEXT, length=args.length, random_seed=3), args.repeats)
    steps_per_s = args.length / seconds
    achieved = weight_bytes * steps_per_s / 1e9
    rows.append(("1 sample: textgen", achieved, f"GB/s ({steps_per_s:,.0f} chars/s)", "read bandwidth",
                 textgen_bandwidth, achieved / textgen_bandwidth))
    seconds = best_time(lambda: generator.generate(SEED_TEXT, length=args.length, num_samples=BATCH, random_seed=3),
                        args.repeats)
    steps_per_s = args.length / seconds
    achieved = BATCH * step_flops * steps_per_s / 1e9
    rows.append((f"{BATCH} samples: textgen", achieved, f"GFLOP/s ({BATCH * steps_per_s:,.0f} chars/s)", big_name,
                 peaks[big_name], achieved / peaks[big_name]))
    rows.append((f"{BATCH} samples: textgen (against its shape)", achieved, "GFLOP/s", shape, peaks[shape],
                 achieved / peaks[shape]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per trainer")
    parser.add_argument("--warmup", type=int, default=20, help="first training steps left out of the timing")
    parser.add_argument("--length", type=int, default=1000, help="characters per generated sample")
    parser.add_argument("--repeats", type=int, default=3, help="timed generation runs per case; the best counts")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    native = cpu_has_native_bf16()  # the yardstick is the precision textgen runs in here
    flags = sorted(f for f in FLAGS_SHOWN if f in cpu_flags())
    results: dict = {"machine": {"cpu": cpu_model(), "flags": flags, "cores": os.cpu_count(),
                                 "date": date.today().isoformat(), "load_before": load()}}
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores; {' '.join(flags) or 'no flags read'}); "
          f"TensorFlow {tf.__version__}; load {load():.2f}")
    generator = reference_generator()
    costs = step_costs(generator.model)  # a single sample steps in float32
    peaks, bandwidth, gemv = measure_limits(*costs[:2])
    results["peaks_gflops"], results["bandwidth_gbs"] = peaks, bandwidth
    bandwidths = tuple(max(value, gemv) for value in list(bandwidth.values())[:2])
    rows = training_rows(args, native, peaks) + generation_rows(args, generator, native, peaks, bandwidths, costs)

    print(f"\n{'workload':58s} {'achieved':>10s} {'':28s} {'against':>24s} {'peak':>9s} {'share':>6s}")
    for name, achieved, unit, against, peak, share in rows:
        print(f"{name:58s} {achieved:10,.1f} {unit:28s} {against:>24s} {peak:9,.1f} {share:6.0%}")
    results["workloads"] = [dict(zip(("workload", "achieved", "unit", "against", "peak", "share"), row))
                            for row in rows]
    results["machine"]["load_after"] = load()
    print(f"\nload average {results['machine']['load_before']:.2f} before, {load():.2f} after")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
