"""Exact match, character error rate and chrF against values worked out by hand."""

from __future__ import annotations

import random

import pytest

from textgen.evaluation.text_metrics import character_error_rate, chrf, edit_distances, exact_match


def reference_levenshtein(a: str, b: str) -> int:
    """The textbook dynamic programme, one cell at a time."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def test_exact_match_is_the_fraction_of_identical_strings():
    assert exact_match(["a", "b", "c"], ["a", "x", "c"]) == pytest.approx(2 / 3)
    assert exact_match(["2026-12-04"], ["2026-12-04 "]) == 0.0
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        exact_match(["a", "b"], ["a"])


@pytest.mark.parametrize("hypothesis, reference, distance", [
    ("kitten", "sitting", 3), ("", "abc", 3), ("abc", "", 3), ("café", "cafe", 1), ("flaw", "lawn", 2),
    ("abc", "abc", 0), ("ab", "ba", 2),
])
def test_edit_distances_of_known_pairs(hypothesis, reference, distance):
    assert edit_distances([hypothesis], [reference]).tolist() == [distance]


def test_character_error_rate_is_total_edits_over_total_reference_characters():
    assert character_error_rate(["kitten"], ["sitting"]) == pytest.approx(3 / 7)
    # 1 + 2 edits over 3 + 2 characters: a corpus rate, not the mean of 1/3 and 1.
    assert character_error_rate(["abc", ""], ["abd", "xy"]) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="no characters"):
        character_error_rate([""], [""])


def test_batched_edit_distances_match_the_textbook_programme_on_many_lengths():
    rng = random.Random(0)
    texts = lambda: "".join(rng.choice("ab c") for _ in range(rng.randint(0, 40)))  # noqa: E731
    hypotheses, references = [texts() for _ in range(300)], [texts() for _ in range(300)]  # more than one batch
    expected = [reference_levenshtein(h, r) for h, r in zip(hypotheses, references)]
    assert edit_distances(hypotheses, references).tolist() == expected


def test_chrf_by_hand():
    # "ab" against "abc", orders 1-2: precision (2/2 + 1/1) / 2 = 1, recall (2/3 + 1/2) / 2 = 7/12.
    assert chrf(["ab"], ["abc"], beta=1, n=2) == pytest.approx(100 * 2 * (7 / 12) / (1 + 7 / 12))  # 14/19
    assert chrf(["ab"], ["abc"], beta=2, n=2) == pytest.approx(100 * 5 * (7 / 12) / (4 + 7 / 12))  # 7/11
    # "a" has no bigram, so only order 1 counts: precision 1, recall 1/2.
    assert chrf(["a"], ["ab"], beta=2, n=2) == pytest.approx(100 * 5 * 0.5 / (4 + 0.5))
    assert chrf(["a b"], ["ab"]) == pytest.approx(100.0)  # whitespace is not counted
    assert chrf(["xyz"], ["abc"]) == 0.0


def test_chrf_sums_counts_over_the_corpus_before_scoring():
    # 2 of 3 unigrams match on either side: 66.7, where the mean of the sentence scores would be 50.
    assert chrf(["ab", "x"], ["ab", "y"], beta=1, n=1) == pytest.approx(100 * 2 / 3)


def test_chrf_agrees_with_sacrebleus_published_examples():
    # The scores the Hugging Face chrF metric card shows for sacrebleu's CHRF with its defaults.
    one = chrf(["The relationship between Obama and Netanyahu is not exactly friendly."],
               ["The ties between Obama and Netanyahu are not particularly friendly."])
    assert one == pytest.approx(61.576379378113785)
    two = chrf(["The relationship between cats and dogs is not exactly friendly.",
                "a good bookshop is just a genteel black hole that knows how to read."],
               ["The relationship between dogs and cats is not exactly friendly.",
                "A good bookshop is just a genteel Black Hole that knows how to read."])
    assert two == pytest.approx(84.64214891738334)
