"""Does one conditioned model write like each author it was asked for, and as well as four models would?

Trains the `authors` preset (four books, one label each: Shakespeare, Austen, Melville, Verne)
for --minutes of wall-clock time on this machine, then:

  1. generates --samples samples of --chars characters per label at temperature 0.8 and
     classifies each with a character 4-gram model of each book (trained on the books' training
     text, interpolated with lower orders), and prints the confusion matrix and the share of
     samples that land on the label they were asked for (goal: at least 90%). The classifier's
     own accuracy on held-out excerpts of the books, of the same length, is printed first:
     it bounds what the samples can score;
  2. trains four unconditioned models of the same architecture, one per book, sharing the same
     total budget (a quarter each), and compares each label's validation loss (the same held-out
     tail of each book) with the conditioned model's (goal: no worse on any label). With
     --repeats N each one-book model trains N times (training.seed 42, 43, ...), which shows
     how far runs of the same budget differ; the comparison is against their mean.
     The one-book models keep the preset's learning rate constant instead of decaying it over
     their budget: in 2.5 minutes (about 900 steps) the decay costs them about 0.035 nats per
     character (Tiny Shakespeare: 1.556 with it, 1.521 without), so each side gets its better
     schedule.

Usage: python scripts/bench_conditioned.py [--minutes 10] [--samples 50] [--chars 300] [--repeats 1]
           [--out runs/bench-conditioned]
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ORDER = 4  # characters of context the classifier's models see: 3 before the one scored
SMOOTHING = 0.1


class CharNgramClassifier:
    """The label whose character n-gram model gives a text the highest likelihood.

    Each label's model interpolates orders 1 to ORDER equally, each add-k smoothed over the
    characters of every book, so a character one book never uses costs it but does not make
    a sample impossible.
    """

    def __init__(self, texts: dict[str, str]):
        self.labels = list(texts)
        self.alphabet = len(set("".join(texts.values()))) + 1
        self.counts = {label: [collections.Counter(_grams(text, n)) for n in range(1, ORDER + 1)]
                       for label, text in texts.items()}
        self.contexts = {label: [collections.Counter(_grams(text, n - 1)) if n > 1 else None
                                 for n in range(1, ORDER + 1)] for label, text in texts.items()}
        self.totals = {label: len(text) for label, text in texts.items()}

    def score(self, text: str, label: str) -> float:
        counts, contexts = self.counts[label], self.contexts[label]
        total = 0.0
        for i in range(len(text)):
            p = 0.0
            for n in range(1, ORDER + 1):
                if i + 1 < n:
                    continue
                gram = text[i + 1 - n:i + 1]
                seen = contexts[n - 1][gram[:-1]] if n > 1 else self.totals[label]
                p += (counts[n - 1][gram] + SMOOTHING) / (seen + SMOOTHING * self.alphabet)
            total += math.log(p / min(i + 1, ORDER))
        return total

    def classify(self, text: str) -> str:
        return max(self.labels, key=lambda label: self.score(text, label))


def _grams(text: str, n: int):
    return (text[i:i + n] for i in range(len(text) - n + 1))


def textgen(*args: str) -> str:
    """Run the textgen command; its standard output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "textgen", *args], capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"textgen {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def books() -> dict[str, str]:
    """label -> the book's path, from the preset's corpus."""
    from textgen.config import load_config

    corpus = load_config("authors").corpus
    return dict(zip(corpus.file_labels, corpus.paths))


def book_text(path: str) -> str:
    """The book as training reads it: no byte-order mark, LF line ends, no Gutenberg header or licence."""
    from textgen.data.corpus import stream_corpus

    return "".join(stream_corpus([path]))


def split(text: str, fraction: float = 0.1) -> tuple[str, str]:
    cut = len(text) - int(len(text) * fraction)
    return text[:cut], text[cut:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="the conditioned model's training budget")
    parser.add_argument("--samples", type=int, default=50, help="samples generated per label")
    parser.add_argument("--chars", type=int, default=300, help="characters per sample")
    parser.add_argument("--repeats", type=int, default=1, help="trainings of each one-book model, seeds 42, 43, ...")
    parser.add_argument("--out", default="runs/bench-conditioned", help="where the runs go (made fresh)")
    args = parser.parse_args()
    out = Path(args.out)
    sources = books()
    texts = {label: split(book_text(path))[0] for label, path in sources.items()}
    held_out = {label: split(book_text(path))[1] for label, path in sources.items()}
    classifier = CharNgramClassifier(texts)
    excerpts = {label: [text[i:i + args.chars] for i in range(0, len(text) - args.chars, len(text) // 20)][:20]
                for label, text in held_out.items()}
    right = sum(classifier.classify(x) == label for label, xs in excerpts.items() for x in xs)
    print(f"classifier on held-out book excerpts of {args.chars} characters: "
          f"{right}/{sum(map(len, excerpts.values()))} right")

    conditioned = out / "conditioned"
    textgen("train", "--config", "authors", "--overwrite", "--set", f"output.dir={conditioned}",
            "--set", f"training.max_minutes={args.minutes}", "-q")
    confusion = generate_and_classify(conditioned / "model.keras", list(sources), classifier, args)
    print_confusion(confusion)

    losses = {"one conditioned model": label_losses(conditioned / "model.keras")}
    for label, path in sources.items():
        runs = []
        for repeat in range(args.repeats):
            run = out / f"only-{label}-{repeat + 1}"
            textgen("train", "--config", "authors", "--overwrite", "--set", f"output.dir={run}",
                    "--set", "corpus.labels=none", "--set", "corpus.file_labels=[]", "--set", f"corpus.paths=[{path}]",
                    "--set", f"training.max_minutes={args.minutes / len(sources)}", "--set",
                    f"training.seed={42 + repeat}", "--set", "training.lr_schedule=constant", "--set",
                    "training.decay_over=steps", "-q")
            runs.append(label_losses(run / "model.keras")[label])
        losses[f"only {label}"] = runs
    print_losses(losses, list(sources))


def generate_and_classify(model: Path, labels: list[str], classifier, args) -> dict[str, collections.Counter]:
    from textgen.generation.generate import load
    from textgen.generation.request import Request
    from textgen.generation.samplers import make_sampler

    generator = load(model)
    confusion = {}
    for label in labels:
        request = Request(seed="\n", length=args.chars, sampler=make_sampler(0.8), num_samples=args.samples,
                          random_seed=1, labels=(label,))
        samples = generator.run(request)
        confusion[label] = collections.Counter(classifier.classify(s.text) for s in samples)
    return confusion


def label_losses(model: Path) -> dict[str, float]:
    """label -> the model's loss on that label's held-out text (the tail training held out)."""
    # A one-book model lacks the other books' rarer characters; they are left out of its score, and
    # only its own book's row is compared (whose tail may hold a few characters its training text lacks).
    report = json.loads(textgen("evaluate", "--model", str(model), "--config", "authors", "--validation-split",
                                "--json", "--skip-unknown"))
    return {score["label"]: score["loss"] for score in report["labels"]}


def print_confusion(confusion: dict[str, collections.Counter]) -> None:
    labels = list(confusion)
    print("\nasked for (rows) -> classified as (columns)")
    print(f"{'':12}" + "".join(f"{label:>12}" for label in labels))
    for label in labels:
        print(f"{label:12}" + "".join(f"{confusion[label][other]:12}" for other in labels))
    right = sum(confusion[label][label] for label in labels)
    total = sum(sum(c.values()) for c in confusion.values())
    print(f"on the requested label: {right}/{total} = {right / total:.1%} (goal: at least 90%)")


def print_losses(losses: dict, labels: list[str]) -> None:
    """Each label's validation loss: the conditioned model's, and the models trained on that book alone
    (their mean, and their range when there are several)."""
    print("\nvalidation loss (nats per character) on each book's held-out tail")
    print(f"{'label':12}{'conditioned':>13}{'alone':>9}{'difference':>12}  alone, each run")
    worse = []
    for label in labels:
        mine, runs = losses["one conditioned model"][label], losses[f"only {label}"]
        alone = sum(runs) / len(runs)
        print(f"{label:12}{mine:13.4f}{alone:9.4f}{mine - alone:+12.4f}  {', '.join(f'{r:.4f}' for r in runs)}")
        if mine > alone:
            worse.append(label)
    print("the conditioned model is no worse on any label" if not worse else
          f"the conditioned model is worse on: {', '.join(worse)} (goal: no worse on any)")


if __name__ == "__main__":
    main()
