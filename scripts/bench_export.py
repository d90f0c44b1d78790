"""How fast an exported SavedModel generates, against `textgen generate` in the same process.

Both run the reference network of scripts/bench_generate.py (Embedding(65, 256) -> LSTM(512)
-> Dense(65), untrained: speed does not depend on the weights) on the same seed, for 1 and
for 64 samples of --length characters, sampled at temperature 1.0, after a warm-up call:

  generate       `Generator.generate`, what `textgen generate` runs (its defaults: XLA for one
                 sample, bfloat16 products for 64 on CPUs with native bfloat16)
  export (XLA)   the `serving_default` signature of `textgen export --format saved_model`,
                 loaded with `tf.saved_model.load`
  export (no XLA) the same, exported with --no-xla (what TensorFlow Serving runs without
                 --xla_cpu_compilation_enabled)

Prints characters per second, the best of --repeats runs, and each export's ratio to
generate (the goal: at least 0.5 for both batch sizes). Then the LiteRT export
(`--format tflite`): the zip's own `generate.py`, greedy, in a process without TensorFlow,
against `generate --temperature 0` for one sample.

Usage: python scripts/bench_export.py [--length 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
import time
from pathlib import Path

import tensorflow as tf

from bench_generate import SEED_TEXT, reference_generator
from textgen.export.saved_model import export_saved_model
from textgen.export.tflite import export_tflite


def best_rate(run, chars: int, repeats: int) -> float:
    run()  # warm-up: tracing and XLA compilation
    best = min(_seconds(run) for _ in range(repeats))
    return chars / best


def _seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generator = reference_generator()
    folder = Path(tempfile.mkdtemp(prefix="bench_export_"))
    signatures = {}
    for name, xla in (("export (XLA)", True), ("export (no XLA)", False)):
        export_saved_model(generator.model, folder / name.replace(" ", "_"), xla=xla)
        signatures[name] = tf.saved_model.load(str(folder / name.replace(" ", "_"))).signatures["serving_default"]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU")
    print(f"{cpu}; {args.length} characters per sample, best of {args.repeats}")
    print(f"{'samples':>7} {'generate':>10} {'export (XLA)':>20} {'export (no XLA)':>20}   chars/s")
    for samples in (1, 64):
        base = best_rate(lambda: generator.generate(SEED_TEXT, args.length, temperature=1.0, num_samples=samples,
                                                    random_seed=1), samples * args.length, args.repeats)
        cells = []
        for name, signature in signatures.items():
            def call(signature=signature):
                signature(seed=tf.constant([SEED_TEXT] * samples), length=tf.constant(args.length),
                          temperature=tf.constant(1.0), top_k=tf.constant(0), top_p=tf.constant(1.0),
                          random_seed=tf.constant(1, tf.int64))["text"].numpy()
            rate = best_rate(call, samples * args.length, args.repeats)
            cells.append(f"{rate:10,.0f} ({rate / base:4.2f}x)")
        print(f"{samples:>7} {base:10,.0f} {cells[0]:>20} {cells[1]:>20}")
    litert(generator, folder, args)


def litert(generator, folder: Path, args) -> None:
    """The LiteRT zip's loop, greedy, in a child process that cannot import TensorFlow."""
    archive = folder / "model.zip"
    export_tflite(generator.model, archive)
    loop = folder / "generate.py"
    loop.write_bytes(zipfile.ZipFile(archive).read("generate.py"))
    blocked = "import sys; sys.modules['tensorflow'] = None; sys.argv = sys.argv[1:]; import runpy; " \
              "runpy.run_path(sys.argv[0], run_name='__main__')"
    rates = []
    for _ in range(args.repeats):
        done = subprocess.run([sys.executable, "-c", blocked, str(loop), str(archive), "--seed", SEED_TEXT,
                               "--length", str(args.length), "--temperature", "0", "--speed"],
                              capture_output=True, text=True, check=True)
        rates.append(float(done.stderr.strip().splitlines()[-1].split()[0]))
    base = best_rate(lambda: generator.generate(SEED_TEXT, args.length, temperature=0), args.length, args.repeats)
    size = archive.stat().st_size / 1e6
    print(f"LiteRT loop, greedy, 1 sample: {max(rates):,.0f} tokens/s (seed included) against generate's "
          f"{base:,.0f} ({max(rates) / base:.2f}x); zip {size:.1f} MB")


if __name__ == "__main__":
    main()
