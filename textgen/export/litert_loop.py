"""Generate text with a textgen model exported by `textgen export --format tflite`.

Needs only Python, numpy and the LiteRT interpreter (pip install numpy ai-edge-litert): no
TensorFlow, no textgen. Usage:

    python generate.py model.zip --seed "ROMEO:" --length 200 --temperature 0.8 --top-k 20

`model.zip` is the exported zip or the folder it was unpacked into. The step model takes
one token id and the states and returns the next token's logits and the new states
(README.txt in the zip lists them); this loop feeds the seed, then picks each next token
from the logits: the largest with --temperature 0, else a sample from softmax(logits / T)
over the --top-k most likely. Its random numbers are numpy's, so a sampled text differs
from textgen's for the same random seed; greedy text is the same.

Character models read and write text here. A word model's tokens come from textgen's word
tokenizer (the regular expression, lowercasing and spacing rules of docs/word-level.md),
which an app must reproduce to turn text into ids; give this loop the seed's ids with
--ids 12,7,40 and it prints the generated ids.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

FILES = ("model.tflite", "tokenizer.json", "step.json")


def read_export(path) -> dict[str, bytes]:
    """The files the loop needs, from the zip or from the folder it was unpacked into."""
    path = Path(path)
    if path.is_dir():
        return {name: (path / name).read_bytes() for name in FILES}
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in FILES}


class StepModel:
    """The exported step in the LiteRT interpreter: `reset()`, then `step(token_id) -> logits`."""

    def __init__(self, files: dict[str, bytes]):
        from ai_edge_litert.interpreter import Interpreter

        self.facts = json.loads(files["step.json"])
        self.vocabulary = json.loads(files["tokenizer.json"])["vocabulary"]
        self.interpreter = Interpreter(model_content=files["model.tflite"])
        self.runner = self.interpreter.get_signature_runner(self.facts["signature"])
        self.state_specs = self.facts["inputs"][1:]
        self.reset()

    def reset(self) -> None:
        """Every state back to zeros: the start of a new text."""
        self.states = {s["name"]: np.zeros(s["shape"], s["dtype"]) for s in self.state_specs}

    def step(self, token_id: int) -> np.ndarray:
        """Feed one token; the logits (vocab,) of the token after it."""
        outputs = self.runner(token=np.array([token_id], np.int32), **self.states)
        self.states = {name: outputs[name] for name in self.states}
        return outputs["logits"][0]


def pick(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator, never) -> int:
    """The next token: the largest logit when temperature is 0, else a sample among the top_k (0 = all)."""
    logits = logits.astype(np.float64)
    logits[never] = -np.inf
    if temperature <= 0:
        return int(np.argmax(logits))
    if 0 < top_k < len(logits):
        logits[logits < np.sort(logits)[-top_k]] = -np.inf
    weights = np.exp((logits - logits.max()) / temperature)
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def generate_ids(model: StepModel, seed_ids, length: int, temperature: float = 0.0, top_k: int = 0,
                 random_seed: int | None = None) -> list[int]:
    """`length` token ids after `seed_ids` (at least one id)."""
    rng = np.random.default_rng(random_seed)
    never = model.facts["never_sample"]
    model.reset()
    for token in seed_ids:
        logits = model.step(token)
    ids = []
    for _ in range(length):
        ids.append(pick(logits, temperature, top_k, rng, never))
        if len(ids) < length:
            logits = model.step(ids[-1])
    return ids


def encode_chars(vocabulary: list[str], text: str) -> list[int]:
    index = {token: i for i, token in enumerate(vocabulary)}
    missing = sorted({c for c in text if c not in index})
    if missing:
        raise SystemExit(f"error: the model's vocabulary lacks {missing}; remove them from the seed")
    return [index[c] for c in text]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Generate text with a textgen model exported for LiteRT.")
    parser.add_argument("model", help="the exported zip, or the folder it was unpacked into")
    parser.add_argument("--seed", default="\n", help="text to start from (character models)")
    parser.add_argument("--ids", help="comma-separated token ids to start from instead of --seed")
    parser.add_argument("--length", type=int, default=200, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 picks the most likely token")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0: all)")
    parser.add_argument("--random-seed", type=int, help="the same number gives the same sampled text")
    parser.add_argument("--speed", action="store_true", help="print tokens per second to stderr")
    args = parser.parse_args(argv)
    model = StepModel(read_export(args.model))
    characters = model.facts["level"] == "char" and args.ids is None
    if not characters and args.ids is None:
        parser.error("a word model reads token ids: give --ids (the app tokenizes as textgen's word tokenizer)")
    seed_ids = encode_chars(model.vocabulary, args.seed) if characters else [int(i) for i in args.ids.split(",")]
    if not seed_ids or not all(0 <= i < len(model.vocabulary) for i in seed_ids):
        parser.error(f"the seed needs at least one token, each id within 0..{len(model.vocabulary) - 1}")
    start = time.perf_counter()
    ids = generate_ids(model, seed_ids, args.length, args.temperature, args.top_k, args.random_seed)
    seconds = time.perf_counter() - start
    print("".join(model.vocabulary[i] for i in ids) if characters else ",".join(map(str, ids)))
    if args.speed:
        print(f"{len(ids) / seconds:.0f} tokens/s ({len(seed_ids)} seed tokens included in the time)", file=sys.stderr)


if __name__ == "__main__":
    main()
