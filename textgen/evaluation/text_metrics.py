"""How close generated texts are to reference texts: exact match, character error rate, chrF.

Each takes the hypotheses (what a model wrote) and the references (what it should have
written), one string per pair, in the same order, and returns one corpus-level number.
Pure Python and numpy: evaluation needs no TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

_EDIT_BATCH = 256  # pairs whose edit distances are computed together (sorted by length, so little padding)


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """The fraction of hypotheses identical to their reference, in [0, 1]."""
    _check(hypotheses, references)
    return sum(h == r for h, r in zip(hypotheses, references)) / len(references)


def character_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Character edits (insertions, deletions, substitutions) that turn every hypothesis into
    its reference, over the characters of all references: 0 is perfect, and it can exceed 1."""
    _check(hypotheses, references)
    total = sum(len(r) for r in references)
    if not total:
        raise ValueError("the references hold no characters, so no character error rate can be computed")
    return int(edit_distances(hypotheses, references).sum()) / total


def edit_distances(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """The Levenshtein distance of every pair, as an int64 array."""
    _check(hypotheses, references, allow_empty=True)
    out = np.zeros(len(references), dtype=np.int64)
    order = sorted(range(len(references)), key=lambda i: (len(hypotheses[i]), len(references[i])))
    for start in range(0, len(order), _EDIT_BATCH):
        chunk = order[start:start + _EDIT_BATCH]
        out[chunk] = _levenshtein_batch([hypotheses[i] for i in chunk], [references[i] for i in chunk])
    return out


def _levenshtein_batch(hypotheses: list[str], references: list[str]) -> np.ndarray:
    """Edit distances of a batch of pairs with one dynamic-programming row for all of them.

    Row i holds, for every pair, the distances from the hypothesis's first i characters to
    each prefix of the reference. A row is computed from the one above in whole-array steps:
    a substitution or deletion looks only at the row above; an insertion, at the cell to the
    left in the same row, which is a running minimum of (cell - column) plus the column.
    A pair's answer is read from row len(hypothesis), column len(reference).
    """
    n = len(references)
    hyp, hyp_len = _codes(hypotheses, pad=-1)
    ref, ref_len = _codes(references, pad=-2)  # different pads: padding never matches
    columns = np.arange(ref.shape[1] + 1, dtype=np.int64)
    row = np.broadcast_to(columns, (n, len(columns))).copy()
    result = np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    done = hyp_len == 0
    result[done] = ref_len[done]
    for i in range(hyp.shape[1]):
        cost = (ref != hyp[:, i:i + 1]).astype(np.int64)
        below = np.empty_like(row)
        below[:, 0] = i + 1
        below[:, 1:] = np.minimum(row[:, :-1] + cost, row[:, 1:] + 1)
        row = np.minimum.accumulate(below - columns, axis=1) + columns
        ends = hyp_len == i + 1
        result[ends] = row[rows[ends], ref_len[ends]]
    return result


def _codes(texts: list[str], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """The code points of the texts as rows of one array padded with `pad`, and their lengths."""
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    codes = np.full((len(texts), int(lengths.max(initial=0))), pad, dtype=np.int64)
    for k, text in enumerate(texts):
        codes[k, :len(text)] = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    return codes, lengths


def chrf(hypotheses: Sequence[str], references: Sequence[str], beta: float = 2.0, n: int = 6) -> float:
    """Corpus-level chrF (Popović 2015) on a 0-100 scale, computed as sacrebleu does by default.

    Whitespace is removed; for each order 1..n the character n-grams of all pairs are counted
    (hypothesis, reference, and matched: the smaller count of each shared n-gram) and summed
    over the corpus. Precision and recall are averaged over the orders both sides have
    n-grams of, then combined into an F-score that weighs recall `beta` times as much.
    """
    _check(hypotheses, references)
    totals = np.zeros((n, 3), dtype=np.int64)  # per order: hypothesis n-grams, reference n-grams, matches
    for hypothesis, reference in zip(hypotheses, references):
        hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
        for order in range(1, n + 1):
            hyp_grams, ref_grams = _ngrams(hyp, order), _ngrams(ref, order)
            totals[order - 1] += (sum(hyp_grams.values()), sum(ref_grams.values()),
                                  sum((hyp_grams & ref_grams).values()))
    counted = (totals[:, 0] > 0) & (totals[:, 1] > 0)
    if not counted.any():
        return 0.0
    precision = float(np.mean(totals[counted, 2] / totals[counted, 0]))
    recall = float(np.mean(totals[counted, 2] / totals[counted, 1]))
    if precision + recall == 0:
        return 0.0
    weight = beta ** 2
    return 100 * (1 + weight) * precision * recall / (weight * precision + recall)


def _ngrams(text: str, order: int) -> Counter:
    return Counter(text[i:i + order] for i in range(len(text) - order + 1))


def _check(hypotheses: Sequence[str], references: Sequence[str], allow_empty: bool = False) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses):,} hypotheses but {len(references):,} references; give one per reference")
    if not references and not allow_empty:
        raise ValueError("no references to compare with")
