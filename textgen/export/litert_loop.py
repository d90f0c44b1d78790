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

A conditioned model (step.json has "labels") writes under a label: --label austen, or
--label author=austen --label genre=novel for several groups, or any weights with
--label-weights '[0, 0.7, 0.3, 1, 0]' (one per label of every group, in step.json's
"columns" order). Its label state is those weights times label_states.npy.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

FILES = ("model.tflite", "tokenizer.json", "step.json")
LABEL_FILE = "label_states.npy"  # a conditioned model's only


def read_export(path) -> dict[str, bytes]:
    """The files the loop needs, from the zip or from the folder it was unpacked into."""
    path = Path(path)
    if path.is_dir():
        names = [name for name in (*FILES, LABEL_FILE) if name in FILES or (path / name).exists()]
        return {name: (path / name).read_bytes() for name in names}
    with zipfile.ZipFile(path) as archive:
        names = [name for name in (*FILES, LABEL_FILE) if name in FILES or name in archive.namelist()]
        return {name: archive.read(name) for name in names}


class StepModel:
    """The exported step in the LiteRT interpreter: `reset()`, then `step(token_id) -> logits`."""

    def __init__(self, files: dict[str, bytes]):
        from ai_edge_litert.interpreter import Interpreter

        self.facts = json.loads(files["step.json"])
        self.vocabulary = json.loads(files["tokenizer.json"])["vocabulary"]
        self.interpreter = Interpreter(model_content=files["model.tflite"])
        self.runner = self.interpreter.get_signature_runner(self.facts["signature"])
        self.state_specs = self.facts["inputs"][1:]
        self.labels = self.facts.get("labels")  # None: a model without labels
        self.label_states = None if self.labels is None else np.load(io.BytesIO(files[LABEL_FILE]))
        self.reset()

    def reset(self, label_weights=None) -> None:
        """Every state back to zeros, the start of a new text; a conditioned model's label state
        made from `label_weights` (one per label of every group; None: "any" in every group)."""
        self.states = {s["name"]: np.zeros(s["shape"], s["dtype"]) for s in self.state_specs}
        if self.labels is not None:
            weights = np.asarray(self.labels["any"] if label_weights is None else label_weights, np.float32)
            self.states[self.labels["state"]] = (weights @ self.label_states)[None]

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
                 random_seed: int | None = None, label_weights=None) -> list[int]:
    """`length` token ids after `seed_ids` (at least one id), under `label_weights` (see `StepModel.reset`)."""
    rng = np.random.default_rng(random_seed)
    never = model.facts["never_sample"]
    model.reset(label_weights)
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


def label_weights(labels: dict, names) -> list[float]:
    """The weights of `names` (each NAME or GROUP=NAME, one per group); groups not named are "any"."""
    weights = list(labels["any"])
    start, starts = 0, {}
    for group in labels["groups"]:
        starts[group["name"]] = start
        start += len(group["labels"])
    for name in names:
        group_name, _, label = name.rpartition("=")
        groups = [g for g in labels["groups"] if (g["name"] == group_name if group_name else label in g["labels"])]
        if len(groups) != 1 or label not in groups[0]["labels"]:
            valid = "; ".join(f"{g['name']}: {', '.join(g['labels'])}" for g in labels["groups"])
            raise SystemExit(f"error: --label {name!r} names no single label of this model; valid labels are {valid} "
                             "(write GROUP=NAME for a label of several groups)")
        group = groups[0]
        at = starts[group["name"]]
        weights[at:at + len(group["labels"])] = [float(other == label) for other in group["labels"]]
    return weights


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Generate text with a textgen model exported for LiteRT.")
    parser.add_argument("model", help="the exported zip, or the folder it was unpacked into")
    parser.add_argument("--seed", default="\n", help="text to start from (character models)")
    parser.add_argument("--ids", help="comma-separated token ids to start from instead of --seed")
    parser.add_argument("--length", type=int, default=200, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 picks the most likely token")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0: all)")
    parser.add_argument("--random-seed", type=int, help="the same number gives the same sampled text")
    parser.add_argument("--label", action="append", default=[],
                        help="a conditioned model's label: NAME or GROUP=NAME, once per group")
    parser.add_argument("--label-weights", help="a JSON list of weights, one per label of every group "
                                                "(step.json's labels.columns), each group's summing to 1")
    parser.add_argument("--speed", action="store_true", help="print tokens per second to stderr")
    args = parser.parse_args(argv)
    model = StepModel(read_export(args.model))
    weights = None
    if (args.label or args.label_weights) and model.labels is None:
        parser.error("this model was trained without labels; drop --label and --label-weights")
    if args.label and args.label_weights:
        parser.error("give --label or --label-weights, not both")
    if args.label:
        weights = label_weights(model.labels, args.label)
    elif args.label_weights:
        weights = json.loads(args.label_weights)
        if not isinstance(weights, list) or len(weights) != len(model.labels["any"]):
            parser.error(f"--label-weights needs a JSON list of {len(model.labels['any'])} numbers: "
                         f"{', '.join(model.labels['columns'])}")
    characters = model.facts["level"] == "char" and args.ids is None
    if not characters and args.ids is None:
        parser.error("a word model reads token ids: give --ids (the app tokenizes as textgen's word tokenizer)")
    seed_ids = encode_chars(model.vocabulary, args.seed) if characters else [int(i) for i in args.ids.split(",")]
    if not seed_ids or not all(0 <= i < len(model.vocabulary) for i in seed_ids):
        parser.error(f"the seed needs at least one token, each id within 0..{len(model.vocabulary) - 1}")
    start = time.perf_counter()
    ids = generate_ids(model, seed_ids, args.length, args.temperature, args.top_k, args.random_seed, weights)
    seconds = time.perf_counter() - start
    print("".join(model.vocabulary[i] for i in ids) if characters else ",".join(map(str, ids)))
    if args.speed:
        print(f"{len(ids) / seconds:.0f} tokens/s ({len(seed_ids)} seed tokens included in the time)", file=sys.stderr)


if __name__ == "__main__":
    main()
