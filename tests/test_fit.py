"""textgen.training.fit's own rules: how the epochs left are split into fit calls, where
samples start, and what an interrupted run says. The loop itself runs in test_train.py and
test_training_workflow.py."""

from __future__ import annotations

import pytest

from textgen.data.tokenizer import tokenizer_from_config
from textgen.training.fit import TrainingInterrupted, default_sample_seed, fit_calls


@pytest.mark.parametrize("first_epoch, offset, epochs, expected", [
    (0, 0, 3, [(0, 3, 10)]),  # a new run: one call for every epoch
    (2, 7, 5, [(2, 3, 3), (3, 5, 10)]),  # resumed at step 7 of epoch 3: its last 3 steps, then whole epochs
    (4, 7, 5, [(4, 5, 3)]),  # resumed in the last epoch
    (3, 0, 5, [(3, 5, 10)]),  # resumed at an epoch end
    (5, 0, 5, []),  # nothing left
])
def test_a_resumed_run_first_finishes_its_epoch_in_a_call_of_its_own(first_epoch, offset, epochs, expected):
    assert fit_calls(first_epoch, offset, epochs, steps=10) == expected


def test_the_default_sample_seed_is_the_first_whole_line_with_text():
    """Samples continue a real line of the held-out text, never a word cut in half."""
    text = "lf of a line\n\nVIRGILIA:\nI will wish her speedy strength"
    unbroken_text = "no line ends here at all, just one long run of words"
    tokenizer = tokenizer_from_config({"level": "char", "vocabulary": sorted(set(text + unbroken_text))})
    ids = tokenizer.encode(text)
    assert default_sample_seed(tokenizer, ids, ids[:0]) == "VIRGILIA:\n"
    assert default_sample_seed(tokenizer, ids[:0], ids) == "VIRGILIA:\n"  # no validation split
    unbroken = tokenizer.encode(unbroken_text)
    assert default_sample_seed(tokenizer, unbroken, ids[:0]) == "no line ends here at all, just one long "


def test_an_interrupted_run_says_how_to_go_on():
    kept = TrainingInterrupted("training interrupted at epoch 2, step 3 of 10; the training state is saved")
    assert str(kept).endswith("; add --resume to the same command to continue") and kept.resumable
    early = TrainingInterrupted("training stopped at once, before its first checkpoint", resumable=False)
    assert str(early) == ("training stopped at once, before its first checkpoint; run the same command again "
                          "to start over")
    assert early.what == "training stopped at once, before its first checkpoint" and not early.resumable
