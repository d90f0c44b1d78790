"""Samplers on hand-made logits: no model needed."""

import numpy as np
import pytest
import tensorflow as tf

from textgen.errors import UsageError
from textgen.generation.samplers import (BeamSampler, GreedySampler, RandomSampler, TopKSampler, TopPSampler, draw,
                                        make_sampler)

LOGITS = tf.constant([[2.0, 1.0, 0.0, -1.0, 3.0], [0.0, 0.0, 5.0, 0.0, 0.0]])


@pytest.mark.parametrize("sampler, settings", [
    (GreedySampler(), {}),
    (RandomSampler(0.7), {"temperature": 0.7}),
    (TopKSampler(top_k=3, temperature=1.5), {"top_k": 3, "temperature": 1.5}),
    (TopPSampler(top_p=0.8, temperature=0.9), {"top_p": 0.8, "temperature": 0.9}),
    (BeamSampler(beam_width=5), {"beam_width": 5}),
])
def test_config_round_trip(sampler, settings):
    config = sampler.get_config()
    assert config == settings  # its settings, and nothing else
    again = type(sampler)(**config)
    assert type(again) is type(sampler) and {key: getattr(again, key) for key in settings} == settings


def test_draw_follows_the_distribution_and_never_draws_masked_tokens():
    logits = tf.constant([[np.log(0.5), np.log(0.3), -np.inf, np.log(0.2)]] * 1000, tf.float32)
    uniforms = tf.constant((np.arange(1000) + 0.5) / 1000, tf.float32)  # an even grid over [0, 1)
    counts = np.bincount(draw(logits, uniforms).numpy(), minlength=4)
    assert counts.tolist() == [500, 300, 0, 200]


def test_draw_at_the_edges_of_the_unit_interval():
    logits = tf.constant([[-np.inf, 0.0, 0.0, -np.inf]] * 2)
    tokens = draw(logits, tf.constant([0.0, np.nextafter(np.float32(1), np.float32(0))])).numpy()
    assert tokens.tolist() == [1, 2]


def test_top_k_keeps_exactly_the_k_largest():
    kept = TopKSampler(top_k=2).filter_logits(LOGITS[:1], {"top_k": tf.constant(2)}).numpy()[0]
    assert np.isfinite(kept).tolist() == [True, False, False, False, True]


def test_top_k_larger_than_the_vocabulary_keeps_everything():
    kept = TopKSampler(top_k=50).filter_logits(LOGITS, {"top_k": tf.constant(50)}).numpy()
    assert np.isfinite(kept).all()


@pytest.mark.parametrize("p, kept", [(1e-6, [False, False, True, False]), (0.5, [False, False, True, False]),
                                     (0.75, [True, False, True, False]), (1.0, [True, True, True, True])])
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
    logits = tf.math.log(tf.constant([[0.3, 0.1, 0.5, 0.1]]))
    result = TopPSampler(top_p=p).filter_logits(logits, {"top_p": tf.constant(p)}).numpy()[0]
    assert np.isfinite(result).tolist() == kept


def test_greedy_and_temperature():
    assert GreedySampler().next_token(LOGITS, None, {}).numpy().tolist() == [4, 2]
    # A very low temperature turns sampling into argmax whatever the random number.
    cold = RandomSampler(0.01)
    for u in (0.0, 0.5, 0.999):
        tokens = cold.next_token(LOGITS, tf.constant([u, u]), {"temperature": tf.constant(0.01)})
        assert tokens.numpy().tolist() == [4, 2]


def test_beam_step_keeps_the_best_extensions_across_beams():
    scores = tf.constant([-1.0, -0.5])
    log_probs = tf.math.log(tf.constant([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    parent, token, best = BeamSampler(beam_width=2).next_beams(scores, log_probs)
    # totals: beam 0 -> -1.36, -2.61, -3.30; beam 1 -> -2.80, -2.80, -0.72
    assert parent.numpy().tolist() == [1, 0] and token.numpy().tolist() == [2, 0]
    np.testing.assert_allclose(best.numpy(), [-0.5 + np.log(0.8), -1.0 + np.log(0.7)], rtol=1e-6)


@pytest.mark.parametrize("options, kind", [
    ({}, RandomSampler), ({"temperature": 0}, GreedySampler), ({"temperature": 0, "top_k": 1}, GreedySampler),
    ({"top_k": 5}, TopKSampler), ({"top_p": 0.9, "temperature": 0.5}, TopPSampler),
    ({"beam_width": 3}, BeamSampler),
])
def test_make_sampler_picks_the_strategy(options, kind):
    assert type(make_sampler(**options)) is kind


@pytest.mark.parametrize("options, message", [
    ({"temperature": -0.1}, "temperature must be 0 (greedy) or more, got -0.1"),
    ({"top_k": 0}, "top-k must be at least 1, got 0"),
    ({"top_p": 0.0}, "top-p must be in (0, 1], got 0.0"),
    ({"top_p": 1.5}, "top-p must be in (0, 1], got 1.5"),
    ({"top_k": 3, "top_p": 0.5}, "give either --top-k or --top-p, not both"),
    ({"temperature": 0, "top_k": 5}, "temperature 0 is greedy decoding"),
    ({"beam_width": 0}, "beam width must be at least 1, got 0"),
    ({"beam_width": 2, "temperature": 0.8}, "beam search returns the most likely text and does not sample; "
                                            "drop --temperature or --beam-width"),
    ({"beam_width": 2, "top_k": 4, "top_p": 0.5}, "drop --top-k/--top-p or --beam-width"),
])
def test_bad_options_are_one_line_usage_errors(options, message):
    with pytest.raises(UsageError) as caught:
        make_sampler(**options)
    assert message in str(caught.value) and "\n" not in str(caught.value)
