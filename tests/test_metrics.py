"""textgen.evaluation.metrics: the one place losses become bits and perplexity."""

import json
import math

import pytest

from textgen.evaluation.metrics import PERPLEXITY_CAP_NATS, bits, bits_per_char, per_token_metrics, perplexity


def test_bits_are_nats_over_ln2():
    assert bits(math.log(2)) == pytest.approx(1.0)
    assert bits(math.log(256)) == pytest.approx(8.0)  # a uniform guess among 256 tokens costs 8 bits
    assert bits(0.0) == 0.0


def test_perplexity_is_the_number_of_equally_likely_choices():
    assert perplexity(math.log(65)) == pytest.approx(65.0)
    assert perplexity(0.0) == 1.0


def test_perplexity_of_a_broken_model_stays_a_finite_json_number():
    huge = perplexity(10_000.0)  # math.exp would overflow
    assert math.isfinite(huge) and huge == math.exp(PERPLEXITY_CAP_NATS)
    assert json.loads(json.dumps({"perplexity": huge}))["perplexity"] == huge
    assert math.isnan(perplexity(math.nan))  # a diverged loss is shown as what it is


def test_bits_per_char_spreads_the_summed_loss_over_the_characters():
    # 10 words, 2 nats each, covering 50 characters: 20 nats = 28.85 bits over 50 characters.
    assert bits_per_char(20.0, 50) == pytest.approx(20.0 / math.log(2) / 50)
    assert bits_per_char(3.0, 0) == pytest.approx(bits(3.0))  # nothing read: no division by zero


def test_training_reports_bits_for_characters_and_perplexity_for_words():
    assert per_token_metrics(1.0, "char") == {"bpc": pytest.approx(1 / math.log(2))}
    assert per_token_metrics(1.0, "word") == {"perplexity": pytest.approx(math.e)}
