import logging
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import textgen
from textgen.config import ModelConfig
from textgen.errors import ModelFileError, UsageError
from textgen.generation.generate import BFLOAT16_MIN_BATCH, Generator, Request
from textgen.generation.loops import LoopMode
from textgen.models.layers import TokenEmbedding
from textgen.models.builder import build_model
from textgen.generation.samplers import BeamSampler, GreedySampler, RandomSampler
from textgen.generation.steppers import PackedColumnStepper, RecurrentStepper
from textgen.data.tokenizer import CharTokenizer

TINY_VOCAB = CharTokenizer(sorted("abcdefghijklmnopqrstuvwxyz .,\n"))


def tiny_model(cell="lstm", layers=1, seed=0):
    """An untrained model with its weights doubled, so its greedy text depends on every weight.

    (Much larger weights make a random network chaotic: float rounding differences between
    any two correct implementations then grow until their texts part.)
    """
    keras.utils.set_random_seed(seed)
    model = build_model(ModelConfig(cell=cell, embedding_dim=8, units=16, layers=layers), TINY_VOCAB.get_config())
    for weight in model.weights:
        weight.assign(weight * 2.0)
    return model


def gru_reset_before_model():
    """A GRU with reset_after=False and no bias: the other GRU convention the stepper supports."""
    keras.utils.set_random_seed(1)
    ids = keras.Input((None,), dtype="int32")
    x = TokenEmbedding(TINY_VOCAB.vocab_size, 8, tokenizer=TINY_VOCAB.get_config())(ids)
    x = keras.layers.GRU(16, reset_after=False, use_bias=False, return_sequences=True)(x)
    x = keras.layers.SimpleRNN(12, return_sequences=True)(x)
    return keras.Model(ids, keras.layers.Dense(TINY_VOCAB.vocab_size, name="logits")(x))


def reference_greedy(generator, seed, length):
    """Re-run the whole model on the growing text and take the argmax: slow but obviously right."""
    ids = list(generator.tokenizer.encode(seed))
    for _ in range(length):
        logits = generator.model(np.array([ids], dtype=np.int32))
        ids.append(int(np.argmax(logits[0, -1])))
    return generator.tokenizer.decode(ids[len(seed):])


def model_log_probs(generator, seed, text):
    """log p(next token) at every position of seed + text, from one call of the Keras model."""
    ids = generator.tokenizer.encode(seed + text)
    logits = generator.model(ids[None].astype(np.int32)).numpy()[0].astype(np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    return ids, log_probs


def test_compiled_engine_matches_full_model_reference(trained_model):
    generator = textgen.load(trained_model)
    fast = generator.generate("ROMEO:\n", length=40, temperature=0)[0]
    assert fast == reference_greedy(generator, "ROMEO:\n", 40)


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_compiled_engine_matches_the_model_for_every_cell(cell, layers):
    generator = Generator(tiny_model(cell, layers))
    seed = "the cat sat"
    text = generator.generate(seed, length=60, temperature=0)[0]
    ids, log_probs = model_log_probs(generator, seed, text)
    # Greedy: every generated token is the Keras model's argmax given the text before it
    # (so, by induction, the Keras model's own greedy text is the same).
    np.testing.assert_array_equal(np.argmax(log_probs[len(seed) - 1:-1], -1), ids[len(seed):])
    assert len(set(text)) > 3  # the scaled weights give a text that is not one repeated character
    # Scoring through the engine agrees with the model's probabilities.
    expected = log_probs[np.arange(len(seed) - 1, len(ids) - 1), ids[len(seed):]].sum()
    assert generator.log_probability(seed, text) == pytest.approx(expected, rel=1e-4)


def test_gru_reset_before_and_mixed_cells_match_the_model():
    generator = Generator(gru_reset_before_model())
    text = generator.generate("a b", length=40, temperature=0)[0]
    ids, log_probs = model_log_probs(generator, "a b", text)
    np.testing.assert_array_equal(np.argmax(log_probs[2:-1], -1), ids[3:])


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("one_hot", [True, False])
def test_packed_column_steps_equal_row_steps(cell, one_hot):
    model = tiny_model(cell, 2)
    rows, packed = RecurrentStepper(model), PackedColumnStepper(model, tf.float32, one_hot=one_hot)
    states_r, states_p = rows.initial_states(3), packed.initial_states(3)
    for token in ([1, 2, 3], [4, 0, 9], [7, 7, 7], [2, 5, 1]):
        logits_r, states_r = rows.step(tf.constant(token), states_r)
        logits_p, states_p = packed.step(tf.constant(token), states_p)
        np.testing.assert_allclose(logits_p.numpy(), logits_r.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tf.transpose(states_p[-1][0]).numpy(), states_r[-1][0].numpy(), atol=1e-6)


def test_packed_columns_only_for_cells_they_know():
    assert PackedColumnStepper.supports(tiny_model("gru", 1))
    assert not PackedColumnStepper.supports(gru_reset_before_model())


def test_large_vocabularies_multiply_instead_of_using_a_table(monkeypatch):
    model = tiny_model("lstm", 2)
    with_table = Generator(model).generate("abc", length=30, temperature=0)
    monkeypatch.setattr("textgen.generation.steppers.TABLE_MAX_BYTES", 0)
    generator = Generator(model)
    assert generator.stepper.table is None
    assert generator.generate("abc", length=30, temperature=0) == with_table


def test_a_model_textgen_did_not_build_is_refused():
    ids = keras.Input((None,), dtype="int32")
    x = TokenEmbedding(TINY_VOCAB.vocab_size, 8, tokenizer=TINY_VOCAB.get_config())(ids)
    x = keras.layers.Conv1D(8, 3, padding="causal")(x)
    x = keras.layers.LSTM(8, return_sequences=True)(x)
    model = keras.Model(ids, keras.layers.Dense(TINY_VOCAB.vocab_size, name="logits")(x))
    with pytest.raises(ModelFileError, match="has a Conv1D layer"):
        Generator(model)


def test_greedy_is_deterministic_and_length_is_exact(trained_model):
    generator = textgen.load(trained_model)
    a = generator.generate("First", length=300, temperature=0)
    b = generator.generate("First", length=300, temperature=0)
    assert a == b and len(a[0]) == 300  # crosses the first-chunk and chunk boundaries


def test_top_k_1_and_top_p_near_0_equal_greedy(trained_model):
    generator = textgen.load(trained_model)
    greedy = generator.generate("the ", length=120, temperature=0)
    assert generator.generate("the ", length=120, temperature=1.5, top_k=1, random_seed=4) == greedy
    assert generator.generate("the ", length=120, temperature=1.5, top_p=1e-6, random_seed=4) == greedy
    assert generator.generate("the ", length=120, temperature=1.5, random_seed=4) != greedy


def test_same_random_seed_same_text_different_seed_different_text(trained_model):
    generator = textgen.load(trained_model)
    one = generator.generate("The ", length=200, temperature=1.0, random_seed=7)
    two = generator.generate("The ", length=200, temperature=1.0, random_seed=7)
    other = generator.generate("The ", length=200, temperature=1.0, random_seed=8)
    assert one == two and one != other
    # Without a seed each call samples anew, as the CLI does without --random-seed.
    assert generator.generate("The ", length=200, temperature=1.0) != generator.generate("The ", length=200,
                                                                                         temperature=1.0)


@pytest.mark.slow  # three fresh processes
def test_same_random_seed_same_text_in_other_processes(trained_model):
    batch = max(BFLOAT16_MIN_BATCH, 2)  # large enough for the bfloat16 path where the CPU has it
    code = ("import textgen; g = textgen.load(%r); "
            "print(repr(g.generate('The ', length=80, temperature=0.9, top_k=20, random_seed=11, num_samples=%d)))"
            % (str(trained_model), batch))
    runs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=180) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs[0][1]
    here = textgen.load(trained_model).generate("The ", length=80, temperature=0.9, top_k=20, random_seed=11,
                                                num_samples=batch)
    assert outputs[0][0] == outputs[1][0] == repr(here) + "\n"


def test_xla_and_plain_loops_draw_the_same_text(trained_model):
    model = textgen.load(trained_model).model
    generators = [Generator(model, precision="float32", jit_compile=jit) for jit in (True, False)]
    assert [g._loop_mode(RandomSampler(), 3).jit for g in generators] == [True, False]  # two different loops
    texts = [g.generate("A", length=100, random_seed=2, num_samples=3) for g in generators]
    assert texts[0] == texts[1]


def test_samples_in_one_batch_differ(trained_model):
    generator = textgen.load(trained_model)
    samples = generator.generate("A", length=100, num_samples=4, random_seed=1)
    assert len(samples) == 4 and len(set(samples)) == 4
    big = generator.generate("A", length=50, num_samples=BFLOAT16_MIN_BATCH, random_seed=1)
    assert len(set(big)) == BFLOAT16_MIN_BATCH and all(len(s) == 50 for s in big)


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_is_used_only_for_large_sampled_batches(trained_model, monkeypatch, native):
    # The mode only chooses a dtype, so the CPU's answer is stood in for; the bfloat16 steps
    # themselves are checked against float32 below.
    monkeypatch.setattr("textgen.generation.generate.native_bfloat16", lambda: native)
    generator = textgen.load(trained_model)
    big = generator._loop_mode(RandomSampler(), BFLOAT16_MIN_BATCH)
    assert (big.dtype, big.jit) == ((tf.bfloat16, False) if native else (tf.float32, True))
    assert generator._loop_mode(RandomSampler(), BFLOAT16_MIN_BATCH - 1) == LoopMode(tf.float32, True)
    assert generator._loop_mode(GreedySampler(), 64).dtype == tf.float32
    assert generator._loop_mode(BeamSampler(), 64).dtype == tf.float32
    exact = Generator(generator.model, precision="float32")
    assert exact._loop_mode(RandomSampler(), 64).dtype == tf.float32  # asked for float32: never rounded
    rounded = Generator(generator.model, precision="bfloat16")
    assert rounded._loop_mode(RandomSampler(), 1).dtype == tf.bfloat16  # asked for bfloat16: any sampled batch


def test_bfloat16_steps_stay_close_to_float32(trained_model):
    generator = textgen.load(trained_model)
    exact, rounded = RecurrentStepper(generator.model), PackedColumnStepper(generator.model)
    states_a, states_b = exact.initial_states(1), rounded.initial_states(1)
    worst = 0.0
    for token in generator.tokenizer.encode("ROMEO: What light through yonder window"):
        logits_a, states_a = exact.step(tf.constant([token]), states_a)
        logits_b, states_b = rounded.step(tf.constant([token]), states_b)
        probs_a, probs_b = tf.nn.softmax(logits_a).numpy(), tf.nn.softmax(logits_b).numpy()
        worst = max(worst, float(np.abs(probs_a - probs_b).max()))
    assert 0 < worst < 0.02  # rounded, but the distribution is nearly the same


@pytest.mark.parametrize("mode, tolerance", [(LoopMode(), 1e-5), (LoopMode(tf.bfloat16), 2e-2)])
def test_the_seed_runs_once_and_its_states_are_copied_to_every_row(trained_model, mode, tolerance):
    generator = textgen.load(trained_model)
    ids = generator.tokenizer.encode("ROMEO: What light")
    primed = []
    prime = generator._prime
    generator._prime = lambda p, seed, batch, labels=None: primed.append(batch) or prime(p, seed, batch, labels)
    copied, _ = generator._start(ids, 3, mode)
    assert primed == [1]  # the seed ran as one row, not three
    row_by_row = prime(mode, ids, 3)  # every row primed through the mode's own stepper
    for a, b in zip(tf.nest.flatten(copied), tf.nest.flatten(row_by_row)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=tolerance)


def test_repetition_penalty_matches_a_numpy_reference(trained_model):
    generator = textgen.load(trained_model)
    seed, penalty = "the ", 1.8
    text = generator.generate(seed, length=40, temperature=0, repetition_penalty=penalty)[0]
    assert text != generator.generate(seed, length=40, temperature=0)[0]
    ids = generator.tokenizer.encode(seed + text)
    logits = generator.model(ids[None]).numpy()[0]
    seen = set(ids[:len(seed)].tolist())
    for position in range(len(seed) - 1, len(ids) - 1):
        row = logits[position].copy()
        mask = np.isin(np.arange(len(row)), list(seen))
        row[mask] = np.where(row[mask] > 0, row[mask] / penalty, row[mask] * penalty)
        assert np.argmax(row) == ids[position + 1]
        seen.add(int(ids[position + 1]))


# ---------------------------------------------------------------- ends: stop strings, min length, sentences


def test_stop_strings_are_honoured_and_not_included(trained_model):
    generator = textgen.load(trained_model)
    full = generator.generate("ROMEO:", length=300, temperature=0)[0]
    stop = full[14:19]  # straddles the end of the first compiled chunk (16 tokens)
    first = full.find(stop)
    text = generator.generate("ROMEO:", length=300, temperature=0, stop=[stop])[0]
    assert text == full[:first] and stop not in text
    later = generator.generate("ROMEO:", length=300, temperature=0, stop=[stop, full[3:5]])[0]
    assert later == full[:min(first, full.find(full[3:5]))]
    # One string is one stop string, not a set of one-character stops.
    assert generator.generate("ROMEO:", length=300, temperature=0, stop=stop)[0] == text


def test_streaming_never_prints_part_of_a_stop_string(trained_model):
    generator = textgen.load(trained_model)
    full = generator.generate("ROMEO:", length=100, temperature=0)[0]
    request = Request(seed="ROMEO:", length=100, sampler=GreedySampler(), stop=(full[14:19],))
    pieces = list(generator.stream(request))
    assert "".join(pieces) == full[:full.find(full[14:19])] == generator.run(request)[0].text


def test_min_length_is_honoured(trained_model):
    generator = textgen.load(trained_model)
    full = generator.generate("ROMEO:", length=200, temperature=0)[0]
    stop = full[2]
    assert full.find(stop) < 30
    sample = generator.run(Request(seed="ROMEO:", length=200, sampler=GreedySampler(), stop=(stop,), min_length=30))[0]
    assert sample.text == full[:full.find(stop, 30)] and len(sample.text) >= 30 and sample.stopped_by == "stop"
    assert sample.tokens == len(sample.text)  # the tokens kept, not the ones generated past the stop


def test_end_at_sentence_stops_after_the_first_sentence_end_past_min_length(trained_model):
    generator = textgen.load(trained_model)
    for random_seed in range(40):  # find a sample with two sentence ends; the tiny model writes few
        full = generator.generate("ROMEO:", length=400, random_seed=random_seed)[0]
        ends = [m.end() for m in re.finditer(r"[.!?]+['\")\]]*(?=\s)", full)]
        if len(ends) >= 2:
            break
    else:
        pytest.fail("no sample with two sentence ends")
    options = {"length": 400, "random_seed": random_seed, "end_at_sentence": True}
    assert generator.generate("ROMEO:", **options)[0] == full[:ends[0]]
    # The first end's punctuation is token min_length - 1: too early; the second end counts.
    assert generator.generate("ROMEO:", min_length=ends[0], **options)[0] == full[:ends[1]]


def test_streaming_yields_the_same_text_as_run(trained_model):
    generator = textgen.load(trained_model)
    request = Request(seed="ROMEO", length=100, sampler=GreedySampler())
    pieces = list(generator.stream(request))
    assert len(pieces) >= 2 and "".join(pieces) == generator.run(request)[0].text


def test_loading_several_models_in_one_process_is_not_warned_about_as_retracing(trained_model):
    # TensorFlow warns after 5 traces of one function's code; every Generator traces its own.
    # The CLI's tests quiet TensorFlow's logger in this process; listen at its warning level.
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = tf.get_logger()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        texts = [textgen.load(trained_model).generate("ROMEO", length=5, temperature=0.8, random_seed=1)
                 for _ in range(6)]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert all(text == texts[0] for text in texts)
    assert not [m for m in messages if "retracing" in m]


def test_length_zero_gives_empty_samples(trained_model):
    assert textgen.load(trained_model).generate("A", length=0, num_samples=2) == ["", ""]


# ---------------------------------------------------------------- beam search and scoring


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(trained_model):
    generator = textgen.load(trained_model)
    greedy = generator.generate("ROMEO:", length=60, temperature=0)[0]
    sample = generator.run(Request(seed="ROMEO:", length=60, sampler=BeamSampler(beam_width=5)))[0]
    beam_score = generator.log_probability("ROMEO:", sample.text)
    assert beam_score >= generator.log_probability("ROMEO:", greedy) - 1e-4
    assert sample.log_probability == pytest.approx(beam_score, abs=1e-3)
    assert len(sample.text) == 60


def test_beam_width_1_is_greedy(trained_model):
    generator = textgen.load(trained_model)
    assert generator.generate("ROMEO:", length=300, beam_width=1) == generator.generate("ROMEO:", length=300,
                                                                                          temperature=0)


def test_full_width_beam_over_two_tokens_is_exhaustive():
    generator = Generator(tiny_model("lstm", 1, seed=2))
    vocab = generator.tokenizer.vocab_size
    best = generator.run(Request(seed="ab", length=2, sampler=BeamSampler(beam_width=vocab)))[0]
    # Score all vocab x vocab continuations with the Keras model in one batch.
    seed_ids = generator.tokenizer.encode("ab")
    firsts = np.arange(vocab)[:, None]
    batch = np.concatenate([np.broadcast_to(seed_ids, (vocab, 2)), firsts], axis=1).astype(np.int32)
    log_probs = tf.nn.log_softmax(generator.model(batch)).numpy()
    totals = log_probs[:, 1, :][np.arange(vocab), batch[:, 2]][:, None] + log_probs[:, 2, :]
    first, second = np.unravel_index(np.argmax(totals), totals.shape)
    assert best.text == generator.tokenizer.decode([first, second])
    assert best.log_probability == pytest.approx(totals.max(), abs=1e-4)


def test_log_probability_of_text_and_ids_agree(trained_model):
    generator = textgen.load(trained_model)
    ids = generator.tokenizer.encode("e of")
    assert generator.log_probability("ROMEO: On", "e of") == pytest.approx(generator.log_probability("ROMEO: On", ids))
    assert generator.log_probability("ROMEO", "") == 0.0
    assert generator.log_probability("ROMEO", " and") < 0


# ---------------------------------------------------------------- the stepping session (--interactive)


def test_session_candidates_choose_type_and_step_back(trained_model):
    generator = textgen.load(trained_model)
    session = generator.session("ROMEO:")
    candidates = session.candidates(5)
    probabilities = [p for _, _, p in candidates]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    greedy = generator.generate("ROMEO:", length=3, temperature=0)[0]
    assert candidates[0][1] == greedy[0]
    session.choose(candidates[0][0])
    session.append_text(" to")
    assert session.text == greedy[0] + " to"
    typed = [c[:2] for c in session.candidates(3)]
    fresh = [c[:2] for c in generator.session("ROMEO:" + greedy[0] + " to").candidates(3)]
    assert typed == fresh  # the state after typing equals the state after that seed
    assert session.back(2) == 2 and session.text == greedy[0] + " "
    assert session.back(10) == 2 and session.text == ""
    assert [c[:2] for c in session.candidates(5)] == [c[:2] for c in candidates]


def test_session_refuses_text_outside_the_vocabulary(trained_model):
    session = textgen.load(trained_model).session("A")
    with pytest.raises(UsageError, match="'§' is not in the model's vocabulary"):
        session.append_text("§")
    assert session.text == ""


# ---------------------------------------------------------------- bad input


def test_seed_outside_vocabulary_is_named(trained_model):
    with pytest.raises(UsageError, match="character '§' is not in the model's vocabulary"):
        textgen.load(trained_model).generate("a § b", length=5)


def test_empty_seed_is_refused(trained_model):
    with pytest.raises(UsageError, match="the seed is empty"):
        textgen.load(trained_model).generate("", length=5)


@pytest.mark.parametrize("options, message", [
    ({"length": -1}, "length must be 0 or more, got -1"),
    ({"min_length": 20, "length": 10}, "min-length (20) cannot exceed length (10)"),
    ({"num_samples": 0}, "num-samples must be at least 1, got 0"),
    ({"repetition_penalty": 0.5}, "repetition penalty must be 1 (off) or more, got 0.5"),
    ({"stop": [""]}, "a stop string cannot be empty"),
    ({"random_seed": -3}, "random seed must be 0 or more"),
    ({"random_seed": 2**63}, "random seed must be at most 2**63-1"),
    ({"beam_width": 2, "num_samples": 3}, "beam search returns the single most likely text; drop --num-samples"),
    ({"beam_width": 2, "repetition_penalty": 1.2}, "drop --repetition-penalty or --beam-width"),
    ({"beam_width": 2, "temperature": 0.5}, "beam search returns the most likely text and does not sample"),
    ({"beam_width": 500}, "beam width 500 exceeds the vocabulary size"),
    ({"length": 2.5}, "length must be a whole number, got 2.5"),
    ({"num_samples": True}, "num-samples must be a whole number, got True"),
    ({"top_k": 2.5}, "top-k must be a whole number, got 2.5"),
    ({"temperature": float("nan")}, "temperature must be a finite number, got nan"),
    ({"repetition_penalty": float("inf")}, "repetition penalty must be a finite number, got inf"),
])
def test_bad_requests_are_usage_errors(trained_model, options, message):
    generator = textgen.load(trained_model)
    with pytest.raises(UsageError) as caught:
        generator.generate("A", **{"length": 10, **options})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bad_generator_options():
    with pytest.raises(UsageError, match="precision must be one of auto, float32, bfloat16"):
        Generator(tiny_model(), precision="fp8")
