"""The bundled seq2seq tasks trained on this machine, scored on held-out pairs as they train.

Trains a preset (`dates` or `restore`) for its wall-clock budget with `textgen.train`, and at
the end of every epoch (the presets validate every few hundred steps) decodes the held-out
pairs greedily and scores them: exact match, character error rate and chrF, against the
seconds of training so far (the scoring's own time is left out of the clock it reports, but
not out of the budget, so the figures are what a run of the preset reaches). Then scores the
saved model.keras, the one `textgen evaluate --pairs` would score.

  dates:   held out are textgen/corpora/dates_test.tsv's 2,000 pairs, none of whose sources the
           training file has. Goal: exact match at least 99.5% within 5 minutes.
  restore: held out are textgen/corpora/restore_val.tsv's 1,000 sentences of Moby Dick, a book
           it never trains on. Goal: character error rate at most half the sources' own. The
           saved model is also scored on two more books it never trains on, Frankenstein and
           Alice (restore_frankenstein.tsv, restore_alice.tsv), greedily and with a beam of 4.

Each --set is applied to the preset (e.g. --set model.attention_type=none); --label names the
variant in the output. With --step-time N it trains nothing to the end: it times N training
steps of the preset (after 10 untimed ones), with Keras's recurrent loops and with textgen's
fused CPU kernels (`training.fused_kernels`), twice each in turn, and prints the milliseconds
per step. Usage:

  python scripts/bench_seq2seq_tasks.py --task dates [--set KEY=VALUE ...] [--label NAME]
       [--limit N] [--out runs/bench-seq2seq-dates] [--step-time 60]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = {"dates": ROOT / "textgen/corpora/dates_test.tsv", "restore": ROOT / "textgen/corpora/restore_val.tsv"}
OTHER_BOOKS = {"restore": [ROOT / "textgen/corpora/restore_frankenstein.tsv",
                           ROOT / "textgen/corpora/restore_alice.tsv"]}


class Curve(keras.callbacks.Callback):
    """Scores the held-out pairs at every epoch end; records (training seconds, scores)."""

    def __init__(self, pairs: Path, limit: int | None):
        super().__init__()
        self.pairs, self.limit, self.rows, self.scoring = pairs, limit, [], 0.0

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        from textgen.evaluation.pairs_eval import evaluate_pairs
        from textgen.generation.seq2seq import Translator

        began = time.monotonic()
        seconds = began - self.started - self.scoring  # training time: the earlier scoring left out
        scores = evaluate_pairs(Translator(self.model), [str(self.pairs)], limit=self.limit)
        self.scoring += time.monotonic() - began
        row = {"epoch": epoch + 1, "seconds": round(seconds, 1), "val_loss": round(float(logs.get("val_loss", 0)), 5),
               "exact_match": round(scores["exact_match"], 4), "cer": round(scores["cer"], 4),
               "chrf": round(scores["chrf"], 2)}
        self.rows.append(row)
        print(f"curve: {json.dumps(row)}", flush=True)


def step_times(task: str, overrides: list[str], steps: int, warmup: int = 10) -> None:
    """Milliseconds per training step of the preset, Keras's loops against the fused kernels."""
    import tempfile

    from bench_seq2seq import cpu_model
    from bench_train import StepTimer
    from textgen.config import load_config
    from textgen.training.train import train

    print(f"machine: {cpu_model()}")
    for _ in range(2):
        for fused in (False, True):
            timer = StepTimer(warmup)
            with tempfile.TemporaryDirectory() as scratch:
                config = load_config(task, [*overrides, f"training.fused_kernels={str(fused).lower()}",
                                            "training.epochs=1", f"training.steps_per_epoch={steps + warmup}",
                                            "training.sample_every=0", f"output.dir={scratch}/run"])
                train(config, overwrite=True, verbose=0, callbacks=(timer,), echo=lambda *_: None, progress=None)
            kernels = "fused kernels" if fused else "Keras's loops"
            print(f"{task}, {kernels}: {timer.wall * 1000:.1f} ms per step (CPU {timer.cpu * 1000:.1f} ms)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(HELD_OUT), required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", default="preset", help="the variant's name in the output")
    parser.add_argument("--limit", type=int, default=None,
                        help="score the first N held-out pairs at each epoch end (the saved model: all of them)")
    parser.add_argument("--out", default=None, help="run directory [runs/bench-seq2seq-TASK-LABEL]")
    parser.add_argument("--step-time", type=int, default=0, metavar="N",
                        help="only time N training steps with and without the fused kernels")
    args = parser.parse_args()
    if args.step_time:
        step_times(args.task, args.overrides, args.step_time)
        return

    import textgen
    from bench_seq2seq import cpu_model  # the script beside this one
    from textgen.config import load_config
    from textgen.evaluation.pairs_eval import describe_scores, evaluate_pairs
    from textgen.generation.seq2seq import Translator
    from textgen.training.train import train

    out = args.out or f"runs/bench-seq2seq-{args.task}-{args.label}"
    config = load_config(args.task, [*args.overrides, f"output.dir={out}", "training.sample_every=0"])
    curve = Curve(HELD_OUT[args.task], args.limit)
    result = train(config, overwrite=True, verbose=0, callbacks=(curve,), echo=print)
    translator = Translator.load(result.model_path)
    final = evaluate_pairs(translator, [str(HELD_OUT[args.task])])
    print(f"machine: {cpu_model()}; textgen {textgen.__version__}")
    print(f"{args.task} ({args.label}), {config.training.max_minutes} minutes, stopped: {result.stopped}, "
          f"{result.global_step} steps, best epoch {result.best_epoch}")
    print(describe_scores(final))
    others = {}
    for path in OTHER_BOOKS.get(args.task, []):
        for beam in (None, 4):
            scores = evaluate_pairs(translator, [str(path)], beam_width=beam)
            others[f"{path.name} {scores['decoding']}"] = {k: v for k, v in scores.items() if k != "examples"}
            print(f"{path.name}, {scores['decoding']}: character error rate {scores['cer']:.4f}, "
                  f"{scores['cer'] / scores['source_cer']:.0%} of the sources' own {scores['source_cer']:.4f}")
    print("summary: " + json.dumps({"task": args.task, "label": args.label, "curve": curve.rows,
                                    "final": {k: v for k, v in final.items() if k != "examples"},
                                    "other_books": others}))


if __name__ == "__main__":
    main()
