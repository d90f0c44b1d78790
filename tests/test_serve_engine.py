"""The batch engine: many requests as one batch, each job's text equal to `generator.run` of its request."""

import asyncio
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from textgen.config import ModelConfig, TokenizerConfig
from textgen.data.tokenizer import CharTokenizer
from textgen.data.tokenizer.word import WordTokenizer
from textgen.errors import UsageError
from textgen.generation import loops
from textgen.generation.generate import Generator
from textgen.generation.request import Request
from textgen.generation.samplers import BeamSampler, TensorSampler, make_sampler, top_p_filter
from textgen.models.builder import build_model
from textgen.serve.engine import BatchEngine, GenerationFailed, JobCancelled, QueueFull

CORPORA = Path(__file__).resolve().parents[1] / "corpora"
SHAKESPEARE = (CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000]


def doubled(model):
    """Untrained weights doubled, so the text depends on every weight (as tests/test_generate.py does)."""
    for weight in model.weights:
        weight.assign(weight * 2.0)
    return model


@pytest.fixture(scope="module")
def char_generator():
    keras.utils.set_random_seed(0)
    tokenizer = CharTokenizer(sorted(set(SHAKESPEARE)))
    model = doubled(build_model(ModelConfig(cell="gru", embedding_dim=16, units=32), tokenizer.get_config()))
    return Generator(model, precision="float32")


def request(seed="ROMEO:", length=120, temperature=1.0, top_k=None, top_p=None, **options):
    return Request(seed=seed, length=length, sampler=make_sampler(temperature, top_k, top_p), **options)


MIXED = [
    request(length=150, temperature=0.8, num_samples=3, random_seed=1),
    request("Hello there", 90, 1.2, top_k=5, num_samples=2, random_seed=7, stop=("e", "th"), min_length=4),
    request("A", 300, 0.5, top_p=0.9, random_seed=3, repetition_penalty=1.3),
    request("The", 40, 0),
    request("First Citizen", 200, num_samples=2, random_seed=11, end_at_sentence=True, min_length=20),
    request("LUCIO", 0),
]


def results(engine, requests, stagger=False):
    jobs = []
    for req in requests:
        jobs.append(engine.submit(req))
        if stagger:  # the next job joins while this one runs
            deadline = time.monotonic() + 30
            while jobs[-1].produced == 0 and not jobs[-1].finished and time.monotonic() < deadline:
                time.sleep(0.001)
    return [job.result(120) for job in jobs]


def staggered_results(generator, requests):
    """Each request's samples from a fresh engine, each job joining while the one before runs."""
    engine = BatchEngine(generator, chunk=16)
    engine.start()
    try:
        return results(engine, requests, stagger=True)
    finally:
        engine.stop()


@pytest.mark.parametrize("stagger", [False, True])
def test_every_job_equals_generator_run(char_generator, stagger):
    engine = BatchEngine(char_generator, window_ms=20)
    engine.start()
    try:
        got = results(engine, MIXED, stagger)
    finally:
        engine.stop()
    assert got == [char_generator.run(req) for req in MIXED]
    assert {s.stopped_by for samples in got for s in samples} == {"length", "stop", "sentence"}
    assert engine.pending == 0


def test_text_events_concatenate_to_the_final_text(char_generator):
    req = request("Hello there", 200, 1.1, num_samples=3, random_seed=5, stop=("the", "ng"), min_length=10)

    async def consume(engine):
        job = engine.submit(req)
        pieces, events = {}, []
        async for event in job.events():
            events.append(event)
            if event["type"] == "text":
                pieces[event["sample"]] = pieces.get(event["sample"], "") + event["text"]
        return pieces, events

    engine = BatchEngine(char_generator, chunk=8)
    engine.start()
    try:
        pieces, events = asyncio.run(consume(engine))
    finally:
        engine.stop()
    want = char_generator.run(req)
    assert events[-1]["type"] == "done" and events[-1]["samples"] == [
        {"text": s.text, "tokens": s.tokens, "stopped_by": s.stopped_by} for s in want]
    assert [pieces.get(i, "") for i in range(3)] == [s.text for s in want]
    assert sum(e["type"] == "text" for e in events) > 3  # streamed in pieces, not all at the end


def test_cancel_frees_the_rows_and_the_others_finish_right(char_generator):
    engine = BatchEngine(char_generator, chunk=8)
    engine.start()
    try:
        long = engine.submit(request("A", 5000, num_samples=4, random_seed=2))
        others = [engine.submit(req) for req in MIXED[:3]]
        while long.produced == 0:
            time.sleep(0.001)
        long.cancel()
        with pytest.raises(JobCancelled):
            long.result(60)
        assert long.produced < 5000
        assert [job.result(120) for job in others] == [char_generator.run(req) for req in MIXED[:3]]
    finally:
        engine.stop()


def test_a_consumer_that_goes_away_cancels_its_job(char_generator):
    async def first_piece(engine):
        job = engine.submit(request("A", 5000, random_seed=4))
        events = job.events()
        event = await events.__anext__()
        await events.aclose()
        return job, event

    engine = BatchEngine(char_generator, chunk=8)
    engine.start()
    try:
        job, event = asyncio.run(first_piece(engine))
        assert event["type"] == "text"
        with pytest.raises(JobCancelled):
            job.result(60)
        assert job.produced < 5000
    finally:
        engine.stop()


def test_queue_full_beam_and_bad_requests_are_refused(char_generator):
    engine = BatchEngine(char_generator, max_queue=2)  # not started: nothing leaves the queue
    engine.submit(request())
    engine.submit(request())
    with pytest.raises(QueueFull, match="queue holds 2 requests"):
        engine.submit(request())
    with pytest.raises(UsageError, match="beam search is not served"):
        engine.submit(Request(seed="A", sampler=BeamSampler(2)))
    with pytest.raises(UsageError, match="seed is empty"):
        engine.submit(request(""))
    assert engine.pending == 2
    engine.stop(drain=False)
    assert engine.pending == 0


def test_stop_with_drain_finishes_accepted_jobs(char_generator):
    engine = BatchEngine(char_generator)
    engine.start()
    jobs = [engine.submit(req) for req in MIXED[:3]]
    engine.stop(drain=True, timeout=120)
    assert [job.result(0) for job in jobs] == [char_generator.run(req) for req in MIXED[:3]]
    with pytest.raises(UsageError, match="shutting down"):
        engine.submit(request())


def test_an_error_in_the_worker_ends_its_jobs_and_the_engine_keeps_serving(char_generator, monkeypatch):
    engine = BatchEngine(char_generator)
    engine.start()
    try:
        with monkeypatch.context() as patch:
            def broken(penalised):
                raise tf.errors.InternalError(None, None, "the device\nwent away")
            patch.setattr(char_generator, "row_sample_loop", broken)
            job = engine.submit(request())
            with pytest.raises(GenerationFailed, match="^generation failed: the device went away$"):
                job.result(60)
        assert engine.submit(MIXED[0]).result(60) == char_generator.run(MIXED[0])
    finally:
        engine.stop()


@pytest.mark.slow
@pytest.mark.parametrize("positions", ["learned", "rotary"])  # rotary: past the context, positions stay apart
def test_transformer_jobs_share_a_batch_only_at_one_position(positions):
    keras.utils.set_random_seed(1)
    tokenizer = CharTokenizer(sorted(set(SHAKESPEARE)))
    model = doubled(build_model(ModelConfig(type="transformer", embedding_dim=16, heads=2, layers=2,
                                            context_length=32, positions=positions), tokenizer.get_config()))
    generator = Generator(model, precision="float32")
    requests = [request("ROMEO:", 60, 0.9, num_samples=2, random_seed=1),
                request("JULIET", 50, 1.1, top_k=8, random_seed=2),  # same seed length: one batch
                request("A much longer seed than the window", 40, random_seed=3, stop=("e",)),
                request("Be", 70, 0.7, top_p=0.8, random_seed=4)]
    assert staggered_results(generator, requests) == [generator.run(req) for req in requests]
    with pytest.raises(UsageError, match="one length"):
        generator.prime_states([generator.encode_seed(seed, False)[0] for seed in ("ROMEO:", "Be")])


def test_word_model_jobs_equal_generator_run():
    text = (CORPORA / "moby_dick_four_chapters.txt").read_text(encoding="utf-8")[:15_000]
    tokenizer = WordTokenizer.fit(text, TokenizerConfig(level="word", min_count=2))
    keras.utils.set_random_seed(2)
    model = doubled(build_model(ModelConfig(cell="lstm", embedding_dim=16, units=32), tokenizer.get_config()))
    generator = Generator(model, precision="float32")
    requests = [request("Call me Ishmael.", 60, 0.9, num_samples=2, random_seed=1, stop=("the",)),
                request("The whale", 45, 1.0, top_k=20, random_seed=2, end_at_sentence=True),
                request("It was", 80, 0.8, top_p=0.95, random_seed=3, repetition_penalty=1.5)]
    assert staggered_results(generator, requests) == [generator.run(req) for req in requests]


def test_per_row_sampler_picks_what_each_rows_own_sampler_picks():
    logits = tf.random.stateless_normal([4, 50], seed=[1, 2]) * 3
    uniform = tf.constant([0.1, 0.5, 0.7, 0.95])
    samplers = [make_sampler(0), make_sampler(0.7, top_k=3), make_sampler(1.3, top_p=0.6), make_sampler(0.9)]
    values = {"temperature": tf.constant([s.temperature for s in samplers]),
              "top_k": tf.constant([getattr(s, "top_k", 0) for s in samplers]),
              "top_p": tf.constant([getattr(s, "top_p", 1.0) for s in samplers])}
    want = [int(s.next_token(logits[i:i + 1], uniform[i:i + 1],
                             {k: tf.constant(v) for k, v in s.values().items()})[0]) for i, s in enumerate(samplers)]
    assert TensorSampler().next_token(logits, uniform, values).numpy().tolist() == want


def test_top_p_of_one_keeps_every_token():
    logits = tf.constant([[30.0, 0.0, -5.0, -20.0]])  # the last tokens' mass rounds away in float32
    assert np.isfinite(top_p_filter(logits, 1.0).numpy()).all()


def test_seeds_of_different_lengths_prime_in_one_batch_as_each_alone(char_generator):
    seeds = [char_generator.encode_seed(text, False)[0] for text in ("ROMEO:", "A", "First Citizen:\nBefore we")]
    together = char_generator.prime_states(seeds)
    for row, ids in enumerate(seeds):
        alone = char_generator.prime_states([ids])
        for a, b in zip(tf.nest.flatten(together), tf.nest.flatten(alone)):
            np.testing.assert_allclose(a[row].numpy(), b[0].numpy(), rtol=1e-5, atol=1e-6)
    # A row's state is the seed's, not the zero state nor another row's.
    first = tf.nest.flatten(together)[0].numpy()
    assert not np.allclose(first[0], first[2]) and np.abs(first[2]).max() > 0


def test_many_tables_in_one_call_equal_each_drawn_alone():
    seeds, starts = np.array([0, 7, 2**62], np.int64), np.array([0, 16, 272], np.int64)
    many = loops.uniforms_many(seeds, starts, 3).numpy()
    for i in range(3):
        np.testing.assert_array_equal(many[i], loops.uniforms(seeds[i], starts[i], 3).numpy())
    assert not np.array_equal(many[0], many[1])


def test_warm_up_leaves_the_engine_serving_equal_text(char_generator):
    engine = BatchEngine(char_generator, max_batch=8)
    engine.warm_up()
    engine.start()
    try:
        requests = [request("ROMEO:", 40, 0.9, random_seed=i) for i in range(5)]
        jobs = [engine.submit(req) for req in requests]
        assert [job.result(60) for job in jobs] == [char_generator.run(req) for req in requests]
    finally:
        engine.stop()
