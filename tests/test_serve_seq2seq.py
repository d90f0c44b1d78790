"""`textgen serve` with a seq2seq model, through real HTTP on a loopback port: targets equal
`Translator.translate`, requests that arrive together each get their own rows back, bad bodies get
the API's one-line errors."""

from __future__ import annotations

import json
import threading

import keras
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'textgen[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'textgen[serve]'")

from textgen.config import ModelConfig  # noqa: E402
from textgen.generation.seq2seq import Translator  # noqa: E402
from textgen.models.seq2seq import build_seq2seq  # noqa: E402
from textgen.serve.body import Limits  # noqa: E402

from test_serve_http import Server, call, generate, wait_for  # noqa: E402

LETTERS = "abcdefgh"
TOKENIZER = {"level": "char", "vocabulary": list(LETTERS)}
SOURCES = ["abc", "hgfedc", "dd", "bca", "efgh", "a", "cafe", "hhab", "gebd", "dcbaf"]
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def Seq2SeqServer(translator, **limits) -> Server:
    """A seq2seq model's app served by uvicorn in a thread, on a free loopback port."""
    from textgen.serve.seq2seq_engine import Seq2SeqEngine
    from textgen.serve.translate import describe_seq2seq

    engine = Seq2SeqEngine(translator, window_ms=100)  # wide enough that threads started together share it
    return Server(engine=engine, facts=describe_seq2seq(translator, "reverser"), token=TOKEN, **limits)


@pytest.fixture(scope="module")
def translator():
    """An untrained model (no training to wait for) whose seed makes every source's target differ."""
    config = ModelConfig(type="seq2seq", cell="gru", layers=1, units=32, embedding_dim=8, attention_type="additive")
    keras.utils.set_random_seed(2)
    model = build_seq2seq(config, TOKENIZER, TOKENIZER, model_card={"config": {"training": {"seq_length": 8},
                                                                             "output": {"dir": "/home/someone/run"}}})
    return Translator(model)


@pytest.fixture(scope="module")
def server(translator):
    running = Seq2SeqServer(translator, max_length=20, max_num_samples=12, max_body_bytes=4096)
    yield running
    running.close()


def _post(server, body):
    return generate(server.port, body, AUTH)


def test_answers_are_the_translators_and_concurrent_requests_get_their_own(server, translator):
    greedy = translator.translate(SOURCES)
    assert len(set(greedy)) == len(SOURCES)  # a row handed to the wrong request would show
    status, _, answer = _post(server, {"sources": SOURCES})
    assert status == 200 and answer["outputs"] == greedy and answer["model"] == "reverser"
    assert _post(server, {"source": "cafe"})[2]["outputs"] == [greedy[SOURCES.index("cafe")]]
    beam = _post(server, {"sources": SOURCES, "beam_width": 3})[2]["outputs"]
    assert beam == translator.translate(SOURCES, method="beam", beam_width=3) and beam != greedy
    assert _post(server, {"sources": SOURCES, "max_length": 3})[2]["outputs"] == translator.translate(
        SOURCES, max_length=3)
    status, _, sampled = _post(server, {"sources": SOURCES, "temperature": 0.9, "random_seed": 5})
    assert sampled["random_seed"] == 5
    assert sampled["outputs"] == translator.translate(SOURCES, method="sample", temperature=0.9, random_seed=5)

    # Many requests at once, each with its own sources and options: they decode as batches, and
    # every answer holds the targets of its own sources only.
    bodies = [{"sources": SOURCES[i:i + 3]} if i % 3 else {"source": SOURCES[i], "beam_width": 2}
              for i in range(len(SOURCES))] * 2
    answers = [None] * len(bodies)

    def send(i):
        answers[i] = _post(server, bodies[i])

    calls = []  # the sources of each Translator call the engine makes
    translate = translator.translate

    def counted(sources, **options):
        calls.append(len(sources))
        return translate(sources, **options)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    translator.translate = counted
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        del translator.translate
    assert max(calls) > 3 and len(calls) < len(bodies)  # a request has at most 3 sources: some were batched
    for body, (status, _, answer) in zip(bodies, answers):
        assert status == 200, answer
        if "source" in body:
            assert answer["outputs"] == translator.translate([body["source"]], method="beam", beam_width=2)
        else:
            assert answer["outputs"] == [greedy[SOURCES.index(s)] for s in body["sources"]]
    assert server.engine.pending == 0


def test_the_model_page_and_token(server):
    status, _, facts = call(server.port, "GET", "/v1/model", headers=AUTH)
    assert status == 200 and facts["kind"] == "seq2seq" and facts["name"] == "reverser"
    assert facts["architecture"]["type"] == "seq2seq" and facts["source_vocab_size"] == len(LETTERS)
    assert "output" not in facts["config"]  # a path on the machine that trained it
    status, _, page = call(server.port, "GET", "/")
    assert status == 200 and "sequence-to-sequence" in page and "/v1/generate" in page
    status, _, refusal = generate(server.port, {"source": "abc"})
    assert status == 401 and "bearer token" in refusal["error"]
    assert call(server.port, "GET", "/healthz")[0] == 200


@pytest.mark.parametrize("body, status, field, words", [
    ({}, 422, "source", 'give the field "source"'),
    ({"source": "abc", "sources": ["abc"]}, 422, "sources", "one of them"),
    ({"source": 3}, 422, "source", "must be a string"),
    ({"sources": []}, 422, "sources", "empty list"),
    ({"sources": ["a", 1]}, 422, "sources", "list of strings"),
    ({"sources": ["a"] * 13}, 422, "sources", "--max-num-samples"),
    ({"source": "abz"}, 422, "source", "not in the model's vocabulary"),
    ({"sources": ["ab", "xyz"]}, 422, "sources", "source 2"),
    ({"source": "abc", "max_length": 0}, 422, "max_length", "1 or more"),
    ({"source": "abc", "max_length": 21}, 422, "max_length", "--max-length"),
    ({"source": "abc", "beam_width": 2, "temperature": 0.5}, 422, "beam_width", "not both"),
    ({"source": "abc", "temperature": -1}, 422, "temperature", "0 (greedy) or more"),
    ({"source": "abc", "seed": "abc"}, 422, "seed", "did you mean 'source'"),
])
def test_bad_bodies_get_one_line_errors(server, body, status, field, words):
    got, _, answer = _post(server, body)
    assert got == status and answer["field"] == field and words in answer["error"], answer
    assert "\n" not in answer["error"]


def test_bodies_that_are_not_json_objects_are_refused(server):
    got, _, answer = call(server.port, "POST", "/v1/generate", headers=AUTH, raw=b"{not json")
    assert got == 400 and "not valid JSON" in answer["error"]
    got, _, answer = call(server.port, "POST", "/v1/generate", headers=AUTH, raw=json.dumps(["abc"]).encode())
    assert got == 422 and "JSON object" in answer["error"]


def test_the_serve_command_picks_the_seq2seq_engine(tmp_path, translator):
    from textgen.cli.serve_cmd import _engine
    from textgen.saving import save_model_atomic
    from textgen.serve.seq2seq_engine import Seq2SeqEngine
    from textgen.serve.translate import TranslateRequest

    save_model_atomic(translator.model, tmp_path / "model.keras")
    engine, facts = _engine(tmp_path / "model.keras", 5.0, 8)
    assert isinstance(engine, Seq2SeqEngine) and facts["kind"] == "seq2seq" and facts["name"] == tmp_path.name
    engine.warm_up()
    engine.start()
    job = engine.submit(TranslateRequest(("abc",)))
    assert job.result(60) == translator.translate(["abc"])
    engine.stop()
