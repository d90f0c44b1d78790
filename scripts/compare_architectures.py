"""Train every architecture on Tiny Shakespeare for the same wall-clock budget and tabulate them.

Each architecture starts from configs/shakespeare-fast.yaml (corpus, split, precision,
weight averaging) with its own model and batch settings, trains for `--budget-seconds` of wall-clock
(training.max_minutes), and is then measured the same way:

- validation loss: nats per character, averaged over the non-overlapping 256-character
  windows of the contiguous last 10% of the corpus, each read from a fresh state;
- training tokens per second: optimizer steps x batch x sequence length / training time;
- generation speed: characters per second for one sample of 500 at temperature 0.8, after
  a warm-up call (compilation not counted).

The table is written between the markers in docs/benchmarks.md for this kind of CPU (one
table for CPUs with bfloat16 units, one for those without), with the machine's load average
at the start and end of each run, because the CPU may be shared.

    .venv/bin/python scripts/compare_architectures.py --budget-seconds 98
    .venv/bin/python scripts/compare_architectures.py --only gru,transformer --budget-seconds 30
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import textgen  # noqa: E402,F401  (its Keras objects are registered by the textgen.generation import below)
from textgen.config import load_config  # noqa: E402
from textgen.training.distribute import cpu_has_amx_bf16, cpu_has_native_bf16, cpu_model  # noqa: E402
from textgen.generation.generate import Generator, load_keras_model  # noqa: E402
from textgen.models.layers import find_token_embedding  # noqa: E402
from textgen.training.train import train  # noqa: E402

BASE = ROOT / "configs" / "shakespeare-fast.yaml"
DOC = ROOT / "docs" / "benchmarks.md"
EVAL_WINDOW = 256

# name -> (what it is, overrides on top of BASE). Small enough to learn something in minutes on 2 cores.
ARCHITECTURES = {
    "simple_rnn": ("SimpleRNN 512", {"model.cell": "simple_rnn", "model.units": 512}),
    "lstm": ("LSTM 384", {"model.cell": "lstm"}),
    "gru": ("GRU 384 (configs/shakespeare-fast.yaml)", {}),
    "gru_stacked": ("GRU 256 x 2", {"model.units": 256, "model.layers": 2}),
    "peephole_lstm": ("peephole LSTM 256", {"model.cell": "peephole_lstm", "model.units": 256}),
    "window": ("window 40, bidirectional GRU 128 x 2 + attention (textgenrnn)",
               {"model.mode": "window", "model.window": 40, "model.units": 128, "model.layers": 2,
                "model.bidirectional": True, "model.attention": True, "training.batch_size": 8,
                "training.seq_length": 40}),  # the shortest sequence that holds a whole window
    "transformer": ("transformer 4 blocks x 4 heads, width 128, context 256",
                    {"model.type": "transformer", "model.embedding_dim": 128, "model.heads": 4,
                     "model.layers": 4, "model.context_length": 256, "training.seq_length": 256,
                     "training.batch_size": 16, "training.learning_rate": 0.001, "training.warmup_steps": 50}),
}
ARCHITECTURES["transformer_rotary"] = ("the same transformer, rotary positions",
                                       {**ARCHITECTURES["transformer"][1], "model.positions": "rotary"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=98.0, help="wall-clock training time per architecture")
    parser.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(ARCHITECTURES))
    parser.add_argument("--config", default=str(BASE), help="the base config every architecture starts from")
    parser.add_argument("--runs", default="/tmp/textgen-compare", help="where the run directories go")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating the docs")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(ARCHITECTURES)
    unknown = set(names) - set(ARCHITECTURES)
    if unknown:
        parser.error(f"unknown architectures: {', '.join(sorted(unknown))}")
    # Results are kept in the runs directory, so `--only` re-measures some rows and keeps the rest.
    store = Path(args.runs) / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    for name in names:
        row = measure(name, args)
        results[name] = row
        store.parent.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(results, indent=1))
        print(format_row(row), flush=True)
    table = format_table([results[n] for n in ARCHITECTURES if n in results], args.budget_seconds)
    print(table)
    if not args.no_write:
        write_table(table)


def measure(name: str, args) -> dict:
    what, overrides = ARCHITECTURES[name]
    settings = {**overrides, "training.max_minutes": args.budget_seconds / 60, "training.sample_every": 0,
                "output.dir": str(Path(args.runs) / name)}
    config = load_config(args.config, [f"{k}={_yaml(v)}" for k, v in settings.items()])
    if Path(args.config).resolve() != BASE and not overrides:
        what = describe(config, args.config)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = train(config, overwrite=True, echo=lambda _: None, verbose=0, progress=None)
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    model = load_keras_model(result.model_path)
    tokens = result.global_step * config.training.batch_size * config.training.seq_length
    return {"name": name, "what": what, "parameters": int(model.count_params()),
            "tokens_per_second": tokens / seconds, "steps": result.global_step,
            "val_loss": validation_loss(model, config), "chars_per_second": generation_speed(model),
            "load": f"{load_before:.1f}-{load_after:.1f}",
            "precision": find_token_embedding(model).model_card.get("precision", "float32"),
            "ema_momentum": config.training.ema_momentum}


def describe(config, path: str) -> str:
    """A row label for a base config other than the default: its network and its file."""
    model = config.model
    layers = f" x {model.layers}" if model.layers > 1 else ""
    dropout = f", dropout {model.dropout:g}" if model.dropout else ""
    try:
        shown = Path(path).resolve().relative_to(ROOT)
    except ValueError:
        shown = Path(path)
    return f"{model.cell.upper().replace('_', ' ')} {model.units}{layers}{dropout} ({shown})"


def validation_loss(model, config) -> float:
    """Mean nats/char over the non-overlapping 256-character windows of the last 10% of the corpus."""
    generator = Generator(model)
    text = Path(config.corpus.paths[0]).read_text(encoding="utf-8")
    ids = generator.tokenizer.encode(text).astype(np.int32)
    tail = ids[len(ids) - int(len(ids) * config.corpus.validation_fraction):]
    n = (len(tail) - 1) // EVAL_WINDOW
    starts = np.arange(n) * EVAL_WINDOW
    inputs = np.stack([tail[s:s + EVAL_WINDOW] for s in starts])
    targets = np.stack([tail[s + 1:s + EVAL_WINDOW + 1] for s in starts])
    total = 0.0
    for i in range(0, n, 32):
        logits = model(inputs[i:i + 32]).numpy().astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        total += -np.take_along_axis(log_probs, targets[i:i + 32, :, None], axis=-1).sum()
    return total / (n * EVAL_WINDOW)


def generation_speed(model, length: int = 500) -> float:
    generator = Generator(model)
    generator.generate("ROMEO:", length=20, temperature=0.8, random_seed=0)  # compile
    started = time.perf_counter()
    text = generator.generate("ROMEO:", length=length, temperature=0.8, random_seed=1)[0]
    return len(text) / (time.perf_counter() - started)


def format_row(row: dict) -> str:
    return (f"| {row['name']} | {row['what']} | {row['parameters']:,} | {row['tokens_per_second']:,.0f} | "
            f"{row['steps']} | **{row['val_loss']:.3f}** | {row['val_loss'] / math.log(2):.3f} | "
            f"{row['chars_per_second']:,.0f} | {row['load']} |")


def format_table(rows: list[dict], budget: float) -> str:
    precisions = ", ".join(sorted({r.get("precision", "float32") for r in rows}))
    momenta = sorted({r.get("ema_momentum", 0.0) for r in rows})
    averaging = "no weight averaging" if momenta == [0.0] else \
        "weights averaged, ema_momentum " + ", ".join(f"{m:g}" for m in momenta)
    head = (f"Budget: {budget:g} s of training wall-clock each, on {os.cpu_count()} cores of {cpu_model()} "
            f"(precision {precisions}; {averaging}); measured {time.strftime('%Y-%m-%d %H:%M')}.\n\n"
            "| name | architecture | parameters | train tokens/s | steps | val loss (nats/char) | bits/char "
            "| generation chars/s | load avg (start-end) |\n|---|---|---|---|---|---|---|---|---|")
    return "\n".join([head] + [format_row(r) for r in rows])


def table_markers() -> tuple[str, str]:
    """The doc keeps one table per kind of CPU: with AMX (where the presets were first tuned),
    with AVX-512 BF16 but no AMX (both train in bfloat16 by default, at different speeds), and
    without bfloat16 units (float32); a run replaces the table of its own kind only."""
    kind = "AMX CPU" if cpu_has_amx_bf16() else "AVX-512 BF16 CPU" if cpu_has_native_bf16() else "float32 CPU"
    return f"<!-- comparison table, {kind}: begin -->", f"<!-- comparison table, {kind}: end -->"


def write_table(table: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    begin, end = table_markers()
    if begin not in doc or end not in doc:
        raise SystemExit(f"{DOC} has no {begin} ... {end} markers; add them where the table should go")
    start, stop = doc.index(begin) + len(begin), doc.index(end)
    DOC.write_text(doc[:start] + "\n" + table + "\n" + doc[stop:], encoding="utf-8")


def _yaml(value) -> str:
    return "true" if value is True else "false" if value is False else str(value)


if __name__ == "__main__":
    main()
