"""`textgen serve` and a conditioned model: the `label` field, label vectors in the batch engine's
rows, and /v1/model's label groups. A job's text equals `generator.run` of its request under
the same labels, whatever other labels share its batch."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import keras
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'textgen[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'textgen[serve]'")

from test_serve_browser import LAPTOP, _el, _generate, _open, _output, _status, _until, browser  # noqa: E402,F401
from test_serve_http import Server, call, generate, open_stream, sse_events  # noqa: E402

import textgen  # noqa: E402
from textgen.config import ModelConfig  # noqa: E402
from textgen.data.tokenizer import CharTokenizer  # noqa: E402
from textgen.generation.generate import Generator  # noqa: E402
from textgen.generation.request import Request  # noqa: E402
from textgen.generation.samplers import make_sampler  # noqa: E402
from textgen.labels import LabelGroup, LabelSpace  # noqa: E402
from textgen.models.builder import build_model  # noqa: E402
from textgen.models.layers import find_label_embedding  # noqa: E402
from textgen.serve.body import BodyError, Limits, read_body  # noqa: E402
from textgen.serve.engine import BatchEngine  # noqa: E402

TEXT = (Path(textgen.__file__).parent / "corpora" / "pride_and_prejudice.txt").read_text(encoding="utf-8")[:3000]
TOKENIZER = CharTokenizer(sorted(set(TEXT)))
SPACE = LabelSpace((LabelGroup("author", ("any", "austen", "melville", "verne")),
                    LabelGroup("genre", ("any", "novel", "play"))))
VALID = "valid labels are author: any, austen, melville, verne; genre: any, novel, play"


def tiny_lstm(labels: LabelSpace | None = SPACE) -> Generator:
    """An untrained LSTM with doubled weights (the text depends on every weight) and label
    vectors large enough that each label changes the text."""
    keras.utils.set_random_seed(5)
    model = build_model(ModelConfig(cell="lstm", embedding_dim=8, units=16), TOKENIZER.get_config(), labels=labels)
    for weight in model.weights:
        weight.assign(weight * 2.0)
    if labels is not None:
        table = find_label_embedding(model).embeddings
        table.assign(table * 20.0)
    return Generator(model, precision="float32")


@pytest.fixture(scope="module")
def labelled():
    return tiny_lstm()


@pytest.fixture(scope="module")
def server(labelled):
    running = Server(labelled, name="authors", max_num_samples=4)
    yield running
    running.close()


def request(seed="It is", length=60, temperature=1.0, labels=(), **options):
    return Request(seed=seed, length=length, sampler=make_sampler(temperature), labels=labels, **options)


MIXED = [
    request(labels=("austen",), random_seed=1),
    request(labels=("melville", "genre=play"), random_seed=1),
    request("Mr. Darcy", 90, 0.8, labels=("austen", "verne"), random_seed=2),  # one sample per label
    request("Mr. Darcy", 50, 1.1, labels=("author=verne",), num_samples=3, random_seed=3, stop=("e ",)),
    request(labels=("austen:0.7,melville:0.3",), random_seed=4, repetition_penalty=1.2),
    request("The", 40, 0, labels=("melville",)),
    request("The", 40, 0, labels=("genre=novel", "genre=play")),
    request(random_seed=1),  # no label: the model's `any`
]


@pytest.mark.parametrize("together", [True, False])
def test_jobs_of_different_labels_in_one_batch_equal_generator_run(labelled, together):
    """Queued before the engine starts, every job primes into one batch; staggered, each joins a running one."""
    engine = BatchEngine(labelled, window_ms=20, chunk=16)
    jobs = [engine.submit(req) for req in MIXED] if together else []
    engine.start()
    try:
        for req in ([] if together else MIXED):
            jobs.append(engine.submit(req))
            while jobs[-1].produced == 0 and not jobs[-1].finished:
                time.sleep(0.001)
        got = [job.result(120) for job in jobs]
    finally:
        engine.stop()
    expected = [labelled.run(req) for req in MIXED]
    assert got == expected
    assert [len(samples) for samples in got] == [1, 1, 2, 3, 1, 1, 2, 1]
    assert got[0] != got[1] and got[0] != got[-1]  # the labels change the text
    assert got[5][0].text != got[6][0].text != got[6][1].text  # greedy, too


@pytest.mark.slow  # about 20 s, compiling the transformer's loops for each batch size
def test_a_transformer_batches_labels_by_position_and_equals_generator_run():
    """A transformer's jobs share a batch only at one position; labelled rows prime there like any others."""
    keras.utils.set_random_seed(3)
    config = ModelConfig(type="transformer", embedding_dim=16, heads=2, layers=1, context_length=16)
    model = build_model(config, TOKENIZER.get_config(), labels=SPACE)
    table = find_label_embedding(model).embeddings
    table.assign(table * 20.0)
    generator = Generator(model, precision="float32")
    requests = [dataclasses.replace(req, length=24) for req in MIXED[1:4] + MIXED[5:7]]  # past the context
    engine = BatchEngine(generator, window_ms=20)
    jobs = [engine.submit(req) for req in requests]
    engine.start()
    try:
        got = [job.result(120) for job in jobs]
    finally:
        engine.stop()
    assert got == [generator.run(req) for req in requests]
    assert got[3][0].text != got[4][0].text != got[4][1].text  # greedy "The" under three labels


def test_a_job_holds_the_samples_its_labels_ask_for(labelled):
    engine = BatchEngine(labelled)  # not started: the job is only queued
    job = engine.submit(request(labels=("austen", "melville", "verne")))
    assert job.request.num_samples == 3 and job.labels.shape == (3, 8)
    assert engine.submit(request()).labels is None
    engine.stop(drain=False)


def test_the_label_field_in_json_and_stream(server, labelled):
    status, _, answer = generate(server.port, {"seed": "It is", "length": 40, "temperature": 0.9,
                                               "random_seed": 6, "label": "author=austen"})
    assert status == 200
    want = labelled.run(request(length=40, temperature=0.9, random_seed=6, labels=("author=austen",)))
    assert [s["text"] for s in answer["samples"]] == [want[0].text]
    status, _, answer = generate(server.port, {"seed": "It is", "length": 40, "temperature": [0, 1.2],
                                               "random_seed": 6, "label": ["austen", "verne", "genre=play"]})
    assert status == 200
    want = [s.text for t in (0, 1.2) for s in labelled.run(request(length=40, temperature=t, random_seed=6,
                                                                   labels=("austen", "verne", "genre=play")))]
    assert [s["text"] for s in answer["samples"]] == want and len(want) == 4
    conn, response = open_stream(server.port, {"seed": "Mr. Darcy", "length": 70, "random_seed": 8,
                                               "label": "melville:0.5,verne:0.5"})
    events = list(sse_events(response))
    conn.close()
    want = labelled.run(request("Mr. Darcy", 70, random_seed=8, labels=("melville:0.5,verne:0.5",)))[0].text
    assert "".join(data["text"] for name, data in events if name == "message") == want
    assert events[-1][0] == "done" and events[-1][1]["samples"][0]["text"] == want


@pytest.mark.parametrize("body, words", [
    ({"label": "dickens"}, f"unknown label 'dickens'; {VALID}"),
    ({"label": "author=dickens"}, "unknown label 'dickens' in group author; valid: any, austen, melville, verne"),
    ({"label": "era=modern"}, "label group 'era' is not one of this model's: author, genre"),
    ({"label": "austen:lots"}, "label 'austen:lots': the weight 'lots' is not a number"),
    ({"label": 3}, 'label must be a label spec or a list of them (such as "austen"'),
    ({"label": ["austen", 1]}, "label must be a label spec or a list of them"),
    ({"label": []}, "label is an empty list"),
    ({"label": ["austen", "verne"], "num_samples": 3}, "2 labels were given for one group, one per sample, "
                                                       "but num_samples is 3"),
    ({"label": ["austen", "verne"], "temperature": [0.5, 1, 1.5]}, "2 labels of one group x 3 temperatures asks "
                                                                    "for 6 samples, over this server's limit of 4"),
    ({"label": ["austen", "verne"], "stream": True}, "streaming sends one sample"),
])
def test_bad_labels_are_422_naming_the_field(server, body, words):
    status, _, answer = generate(server.port, {"seed": "It is", **body})
    assert status == 422, answer
    assert words in answer["error"] and "\n" not in answer["error"]
    field = "stream" if "stream" in body else "num_samples" if "temperature" in body else "label"
    assert answer["field"] == field


def test_a_model_without_labels_refuses_the_field_and_lists_no_groups():
    plain = tiny_lstm(labels=None)
    running = Server(plain, name="plain")
    try:
        status, _, answer = generate(running.port, {"seed": "It is", "label": "austen"})
        assert (status, answer) == (422, {"error": "this model was trained without labels; drop label",
                                          "field": "label"})
        status, _, answer = generate(running.port, {"seed": "It is", "length": 10, "temperature": 0})
        assert status == 200 and answer["samples"][0]["text"] == plain.generate("It is", 10, 0)[0]
        assert "labels" not in call(running.port, "GET", "/v1/model")[2]
    finally:
        running.close()


def test_v1_model_lists_the_label_groups(server):
    status, _, card = call(server.port, "GET", "/v1/model")
    assert status == 200 and card["labels"] == SPACE.to_card() and card["name"] == "authors"


def test_read_body_resolves_labels_with_the_models_label_space():
    body = read_body({"seed": "a", "label": ["austen", "genre=play"], "num_samples": 2}, Limits(), label_space=SPACE)
    assert body.requests[0].labels == ("austen", "genre=play") and body.requests[0].num_samples == 2
    with pytest.raises(BodyError, match="trained without labels") as caught:
        read_body({"seed": "a", "label": "austen"}, Limits())
    assert caught.value.field == "label"
    assert read_body({"seed": "a", "label": None}, Limits()).requests[0].labels == ()  # null: the default



def test_the_page_picks_labels_only_for_a_conditioned_model(browser, server, labelled):
    """A select per group, `any` first, whose choice reaches the text; none for a model without labels."""
    from selenium.webdriver.support.ui import Select

    url = f"http://127.0.0.1:{server.port}/"
    _open(browser, url, LAPTOP)
    _until(browser, lambda: browser.find_elements("css selector", "#labels select"), "no label picker")
    author, genre = (Select(_el(browser, f"label-{i}")) for i in range(2))
    assert [o.text for o in author.options] == list(SPACE.groups[0].labels)
    assert author.first_selected_option.text == genre.first_selected_option.text == "any"
    author.select_by_visible_text("melville")
    genre.select_by_visible_text("play")
    browser.execute_script("arguments[0].value = '0'; arguments[0].dispatchEvent(new Event('input'))",
                           _el(browser, "temperature"))
    _generate(browser, "It is", 30)
    _until(browser, lambda: _status(browser).startswith("done in"), "generation never finished")
    assert _output(browser) == "It is" + labelled.generate("It is", 30, 0, labels=("author=melville", "genre=play"))[0]
    plain = Server(tiny_lstm(labels=None), name="plain")
    try:
        _open(browser, f"http://127.0.0.1:{plain.port}/", LAPTOP)
        _until(browser, lambda: "plain" in _el(browser, "model-name").text, "no model card")
        assert not _el(browser, "labels").is_displayed() and not browser.find_elements("css selector", "#labels select")
    finally:
        plain.close()
