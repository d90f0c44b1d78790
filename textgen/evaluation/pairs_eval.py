"""A seq2seq model scored on a pairs file: its outputs against the targets.

Exact match, character error rate and chrF (textgen.evaluation.text_metrics). Beside the
model's character error rate is the sources' own: how far each source already is from its
target, which tells a restoring or normalising model's gain from the distance it started at.
"""

from __future__ import annotations

import time

from textgen.data.pairs import read_pairs
from textgen.evaluation.text_metrics import character_error_rate, chrf, exact_match


def evaluate_pairs(translator, paths, *, encoding: str = "utf-8", beam_width: int | None = None,
                   limit: int | None = None) -> dict:
    """Decode every source of the pairs files `paths` (greedy, or beam search with `beam_width`)
    and score the outputs against the targets; `limit` scores the first pairs only."""
    pairs = read_pairs(paths, encoding)[:limit]
    sources = [source for source, _ in pairs]
    targets = [target for _, target in pairs]
    started = time.perf_counter()
    outputs = translator.translate(sources, method="beam" if beam_width else "greedy", beam_width=beam_width or 1)
    seconds = time.perf_counter() - started
    return {"pairs": len(pairs), "exact_match": exact_match(outputs, targets),
            "cer": character_error_rate(outputs, targets), "chrf": chrf(outputs, targets),
            "source_cer": character_error_rate(sources, targets), "decoding": "beam" if beam_width else "greedy",
            "beam_width": beam_width, "same_letters": translator.letters is not None, "seconds": round(seconds, 3),
            "examples": [{"source": s, "target": t, "output": o} for s, t, o in zip(sources, targets, outputs)][:5]}


def describe_scores(scores: dict) -> str:
    """The scores as the lines `textgen evaluate --pairs` prints."""
    held = ", the sources' letters" if scores["same_letters"] else ""
    lines = [f"pairs:                {scores['pairs']:,} ({scores['decoding']} decoding{held}, "
             f"{scores['seconds']:.1f} s)",
             f"exact match:          {scores['exact_match']:.2%}",
             f"character error rate: {scores['cer']:.4f} (the sources themselves: {scores['source_cer']:.4f})",
             f"chrF:                 {scores['chrf']:.2f}"]
    for example in scores["examples"][:3]:
        lines.append(f"  {example['source']!r} -> {example['output']!r} (target {example['target']!r})")
    return "\n".join(lines)
