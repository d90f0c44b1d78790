"""`textgen serve` through real HTTP on a loopback port: answers, streams, refusals, limits, the
token, clients that leave, malformed requests by the hundred, and a SIGTERM that drains."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'textgen[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'textgen[serve]'")

from textgen.serve.body import Limits  # noqa: E402

TESTS = Path(__file__).resolve().parent

SEED = "ROMEO:"


class Server:
    """An app served by uvicorn in a thread, on a free loopback port: a language model's
    generator in a BatchEngine, or any `engine` with its model's `facts`."""

    def __init__(self, generator=None, *, token=None, max_queue=64, name="tiny", engine=None, facts=None, **limits):
        from textgen.serve.app import create_app, describe_model
        from textgen.serve.engine import BatchEngine
        from textgen.serve.server import DrainingServer, bind

        import uvicorn

        self.engine = engine or BatchEngine(generator, max_queue=max_queue)
        facts = facts or describe_model(generator, name)
        app = create_app(self.engine, facts, token=token, limits=Limits(**limits))
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = DrainingServer(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, "the server to start")

    def close(self):
        self.server.should_exit = True
        self.thread.join(60)


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def call(port, method, path, body=None, headers=None, raw: bytes | None = None):
    """(status, headers, decoded JSON or text) of one request on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers=headers or {})
    response = conn.getresponse()
    text = response.read().decode("utf-8")
    conn.close()
    kind = response.getheader("content-type", "")
    return response.status, response, json.loads(text) if kind.startswith("application/json") else text


def generate(port, body, headers=None):
    return call(port, "POST", "/v1/generate", body, headers)


def open_stream(port, body, headers=None):
    """A streaming POST left open: (connection, response) with the headers read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/generate", body=json.dumps({**body, "stream": True}), headers=headers or {})
    return conn, conn.getresponse()


def sse_events(response):
    """(event name, data) for each Server-Sent Event, read as it arrives."""
    name, data = "message", []
    for line in response:
        line = line.decode("utf-8").rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data.append(line[len("data: "):])
        elif line == "" and data:
            yield name, json.loads("\n".join(data))
            name, data = "message", []


@pytest.fixture(scope="module")
def generator(trained_model):
    import textgen

    return textgen.load(trained_model)


@pytest.fixture(scope="module")
def server(generator):
    running = Server(generator, max_length=300, max_num_samples=4, max_body_bytes=4096)
    yield running
    running.close()


@pytest.fixture(scope="module")
def busy(generator):
    """A server that holds one stream at a time, with room for long requests."""
    running = Server(generator, max_streams=1, max_length=100_000)
    yield running
    running.close()


def test_json_answer_is_the_generators_own_text(server, generator):
    from textgen.generation.request import Request
    from textgen.generation.samplers import make_sampler

    status, _, answer = generate(server.port, {"seed": SEED, "length": 40, "temperature": 0.8, "random_seed": 7})
    assert status == 200
    expected = generator.run(Request(seed=SEED, length=40, sampler=make_sampler(0.8), random_seed=7))
    assert [s["text"] for s in answer["samples"]] == [expected[0].text]
    assert answer["samples"][0]["tokens"] == 40 and answer["samples"][0]["stopped_by"] == "length"
    assert answer["random_seed"] == 7 and answer["model"] == "tiny" and answer["seconds"] >= 0
    assert not answer["samples"][0]["text"].startswith(SEED)


def test_temperatures_samples_and_stop_strings(server):
    status, _, answer = generate(server.port, {"seed": SEED, "length": 60, "temperature": [0.5, 1.2],
                                               "num_samples": 2, "stop": ["e", "\n\n"], "random_seed": 3})
    assert status == 200 and len(answer["samples"]) == 4
    for sample in answer["samples"]:
        assert "e" not in sample["text"] and "\n\n" not in sample["text"]
        assert sample["stopped_by"] in ("stop", "length")
    assert any(s["stopped_by"] == "stop" for s in answer["samples"])
    status, _, fresh = generate(server.port, {"seed": SEED, "length": 5})
    assert status == 200 and isinstance(fresh["random_seed"], int)


def test_stream_sends_the_same_text_piece_by_piece(server):
    body = {"seed": SEED, "length": 120, "temperature": 0.9, "random_seed": 11}
    conn, response = open_stream(server.port, body)
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    events = list(sse_events(response))
    conn.close()
    pieces = [data["text"] for name, data in events if name == "message"]
    assert pieces and events[-1][0] == "done" and all(name != "error" for name, _ in events)
    done = events[-1][1]
    assert "".join(pieces) == done["samples"][0]["text"]
    assert generate(server.port, body)[2]["samples"] == done["samples"]


@pytest.mark.parametrize("body, field", [
    ({}, "seed"),
    ({"seed": ""}, "seed"),
    ({"seed": 5}, "seed"),
    ({"seed": SEED, "length": -1}, "length"),
    ({"seed": SEED, "length": "20"}, "length"),
    ({"seed": SEED, "length": 2.5}, "length"),
    ({"seed": SEED, "length": True}, "length"),
    ({"seed": SEED, "length": 301}, "length"),
    ({"seed": SEED, "temperature": -0.5}, "temperature"),
    ({"seed": SEED, "temperature": []}, "temperature"),
    ({"seed": SEED, "temperature": ["hot"]}, "temperature"),
    ({"seed": SEED, "top_k": 0}, "top_k"),
    ({"seed": SEED, "top_p": 1.5}, "top_p"),
    ({"seed": SEED, "top_k": 5, "top_p": 0.9}, "top_p"),
    ({"seed": SEED, "temperature": 0, "top_k": 5}, "temperature"),
    ({"seed": SEED, "repetition_penalty": 0.5}, "repetition_penalty"),
    ({"seed": SEED, "stop": ""}, "stop"),
    ({"seed": SEED, "stop": [1]}, "stop"),
    ({"seed": SEED, "min_length": 50, "length": 10}, "min_length"),
    ({"seed": SEED, "end_at_sentence": "yes"}, "end_at_sentence"),
    ({"seed": SEED, "num_samples": 0}, "num_samples"),
    ({"seed": SEED, "num_samples": 5}, "num_samples"),
    ({"seed": SEED, "num_samples": 2, "temperature": [0.5, 1, 1.5]}, "num_samples"),
    ({"seed": SEED, "random_seed": -3}, "random_seed"),
    ({"seed": SEED, "random_seed": 2**64}, "random_seed"),
    ({"seed": SEED, "stream": True, "num_samples": 2}, "stream"),
    ({"seed": SEED, "stream": "yes"}, "stream"),
    ({"seed": SEED, "beam_width": 4}, "beam_width"),
])
def test_bad_fields_are_422_naming_the_field(server, body, field):
    status, _, answer = generate(server.port, body)
    assert status == 422, answer
    assert answer["field"] == field and "\n" not in answer["error"] and field in answer["error"]


def test_limits_name_the_flag_that_raises_them(server):
    assert "--max-length" in generate(server.port, {"seed": SEED, "length": 301})[2]["error"]
    assert "--max-num-samples" in generate(server.port, {"seed": SEED, "num_samples": 5})[2]["error"]
    status, _, answer = call(server.port, "POST", "/v1/generate", raw=b'{"seed": "' + b"a" * 5000 + b'"}')
    assert status == 413 and "--max-body-bytes" in answer["error"]
    chunks = iter([b'{"seed": "', b"a" * 3000, b"a" * 3000, b'"}'])  # no Content-Length: refused while read
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/generate", body=chunks, encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()


@pytest.mark.parametrize("raw, status", [
    (b"{not json", 400), (b"", 400), (b"\xff\xfe{}", 400), (b'{"seed": NaN}', 400), (b"[1, 2]", 422),
    (b'"ROMEO:"', 422), (b"[" * 2000 + b"]" * 2000, 400),
])
def test_bodies_that_are_not_a_json_object(server, raw, status):
    code, _, answer = call(server.port, "POST", "/v1/generate", raw=raw)
    assert code == status and answer["field"] is None and "\n" not in answer["error"]


def test_other_endpoints(server):
    status, _, health = call(server.port, "GET", "/healthz")
    assert status == 200 and health == {"status": "ok", "pending": 0}
    status, _, card = call(server.port, "GET", "/v1/model")
    assert status == 200 and card["name"] == "tiny" and card["level"] == "char" and card["vocab_size"] > 20
    assert card["architecture"]["cell"] == "gru" and "output" not in card.get("config", {})
    status, response, page = call(server.port, "GET", "/")
    assert status == 200 and response.getheader("content-type").startswith("text/html") and "<" in page
    status, _, answer = call(server.port, "GET", "/v1/nothing")
    assert status == 404 and "/v1/nothing" in answer["error"]
    status, _, answer = call(server.port, "GET", "/v1/generate")
    assert status == 405 and answer["field"] is None


def test_bearer_token_guards_all_but_health_and_page(generator):
    guarded = Server(generator, token="s3cret")
    try:
        good = {"Authorization": "Bearer s3cret"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, response, answer = call(guarded.port, "GET", "/v1/model", headers=headers)
            assert status == 401 and response.getheader("www-authenticate") == "Bearer" and "Bearer" in answer["error"]
            assert generate(guarded.port, {"seed": SEED, "length": 5}, headers)[0] == 401
        assert call(guarded.port, "GET", "/v1/model", headers=good)[0] == 200
        assert generate(guarded.port, {"seed": SEED, "length": 5}, good)[0] == 200
        assert call(guarded.port, "GET", "/healthz")[0] == 200
        assert call(guarded.port, "GET", "/")[0] == 200
    finally:
        guarded.close()


def test_stream_limit_answers_429(busy):
    conn, response = open_stream(busy.port, {"seed": SEED, "length": 100_000})
    first = next(sse_events(response))
    assert first[0] == "message"
    status, answer_response, answer = generate(busy.port, {"seed": SEED, "length": 5, "stream": True})
    assert status == 429 and "--max-streams" in answer["error"] and answer_response.getheader("retry-after")
    assert generate(busy.port, {"seed": SEED, "length": 5})[0] == 200  # a JSON answer needs no stream
    conn.close()
    wait_for(lambda: call(busy.port, "GET", "/healthz")[2]["pending"] == 0, "the stream's job to be cancelled")
    conn, response = open_stream(busy.port, {"seed": SEED, "length": 5})  # the stream's place is free again
    assert list(sse_events(response))[-1][0] == "done"
    conn.close()


def test_client_leaving_mid_stream_frees_its_job(busy):
    for streamed in (True, False):
        if streamed:
            conn, response = open_stream(busy.port, {"seed": SEED, "length": 100_000})
            next(sse_events(response))
        else:
            conn = http.client.HTTPConnection("127.0.0.1", busy.port, timeout=60)
            conn.request("POST", "/v1/generate", body=json.dumps({"seed": SEED, "length": 100_000}))
            wait_for(lambda: call(busy.port, "GET", "/healthz")[2]["pending"] == 1, "the request to start")
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        wait_for(lambda: call(busy.port, "GET", "/healthz")[2]["pending"] == 0, "the job to be cancelled")
        status, _, answer = generate(busy.port, {"seed": SEED, "length": 10})
        assert status == 200 and answer["samples"][0]["tokens"] == 10


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


MALFORMED = [b"{", b"null", b"[]", b'{"seed": null}', b'{"seed": "a", "length": -5}', b'{"seed": "a", "length": "x"}',
             b'{"seed": "a", "unknown": 1}', b'{"seed": "a", "temperature": {"a": 1}}', b"\x80\x81",
             b'{"seed": "a", "length": 1' + b"0" * 5000 + b"}", b"[" * 2000, b'{"seed": "a", "top_p": Infinity}',
             b'{"seed": "a", "num_samples": -1}', b'{"seed": ["a"]}', b'{"seed": "' + b"x" * 200_000 + b'"}']


@pytest.fixture
def child_server(trained_model, tmp_path):
    """`textgen serve` in a child process: (process, port)."""
    from conftest import terminal_signals

    out = tmp_path / "stdout"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    with open(out, "wb") as stdout:
        process = subprocess.Popen([sys.executable, "-m", "textgen", "serve", "--model",
                                    str(trained_model), "--port", "0", "--max-length", "100000",
                                    "--max-body-bytes", "8192"],
                                   stdout=stdout, stderr=subprocess.PIPE, env=env, preexec_fn=terminal_signals)
    try:
        wait_for(lambda: b"http://" in out.read_bytes() or process.poll() is not None, "textgen serve to listen", 120)
        line = out.read_bytes().decode()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(60)
        process.stderr.close()


@pytest.mark.slow  # a server process and 400 malformed requests
def test_malformed_requests_leave_the_server_answering_with_flat_memory(child_server):
    process, port = child_server

    def barrage():
        for i in range(200):
            raw = MALFORMED[i % len(MALFORMED)]
            try:
                status = call(port, "POST", "/v1/generate", raw=raw)[0]
            except (ConnectionError, http.client.HTTPException):  # a huge body may be cut off once refused
                continue
            assert 400 <= status < 500, (raw[:40], status)

    assert generate(port, {"seed": SEED, "length": 20})[0] == 200
    barrage()  # the first round fills the allocator's pools
    before = _rss_kb(process.pid)
    barrage()
    after = _rss_kb(process.pid)
    assert after - before < 8 * 1024, f"RSS grew {after - before} kB over 200 malformed requests"
    status, _, answer = generate(port, {"seed": SEED, "length": 20})
    assert status == 200 and answer["samples"][0]["tokens"] == 20
    assert process.poll() is None


def test_sigterm_drains_the_request_in_flight_then_exits_0(child_server):
    process, port = child_server
    conn, response = open_stream(port, {"seed": SEED, "length": 3000, "random_seed": 5})
    events = sse_events(response)
    assert next(events)[0] == "message"
    process.send_signal(signal.SIGTERM)
    rest = list(events)
    conn.close()
    assert rest[-1][0] == "done" and rest[-1][1]["samples"][0]["tokens"] == 3000
    assert process.wait(60) == 0
    assert b"Traceback" not in process.stderr.read()


def test_cli_refuses_bad_options_in_one_line(tmp_path):
    from click.testing import CliRunner

    from textgen.cli.main import cli

    result = CliRunner().invoke(cli, ["serve", "--port", "70000"])
    assert result.exit_code == 2 and "--port" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["serve", "--token", " "])
    assert result.exit_code == 2 and "token is empty" in result.output
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "TEXTGEN_SERVE_TOKEN" in result.output and "--max-streams" in result.output


def test_port_in_use_is_a_one_line_error():
    from textgen.serve.server import bind

    with bind("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "textgen", "serve", "--port", str(port)],
                                capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": str(TESTS.parent)})
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


class _BrokenEngine:
    """An engine that fails in the ways the app must answer in one line: a full queue, raising, an error event."""

    pending = 0

    def start(self):
        pass

    def stop(self, drain=True, timeout=30.0):
        pass

    def submit(self, request):
        from textgen.serve.engine import QueueFull

        if request.length == 7:
            raise QueueFull("the queue holds 256 requests already")
        if request.length == 13:
            raise RuntimeError("engine exploded\n  with a second line")
        return _FailingJob()


class _FailingJob:
    async def events(self):
        yield {"type": "error", "error": "the loop failed: out of memory"}

    def cancel(self):
        pass


def test_a_full_queue_is_429_and_failures_inside_a_one_line_500():
    from textgen.serve.app import create_app
    from textgen.serve.server import DrainingServer, bind

    import uvicorn

    app = create_app(_BrokenEngine(), {"name": "broken"}, limits=Limits())
    sock = bind("127.0.0.1", 0)
    server = DrainingServer(uvicorn.Config(app, log_level="critical", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "the server to start")
        port = sock.getsockname()[1]
        status, response, answer = generate(port, {"seed": SEED, "length": 7})
        assert status == 429 and response.getheader("retry-after") == "1" and "--max-queue" in answer["error"]
        status, _, answer = generate(port, {"seed": SEED, "length": 13})
        assert status == 500 and answer["error"].count("\n") == 0 and "RuntimeError" in answer["error"]
        assert "exploded" not in answer["error"] and "Traceback" not in answer["error"]
        status, _, answer = generate(port, {"seed": SEED, "length": 5})
        assert status == 500 and answer == {"error": "the loop failed: out of memory", "field": None}
        conn, response = open_stream(port, {"seed": SEED, "length": 5})
        assert list(sse_events(response)) == [("error", {"error": "the loop failed: out of memory"})]
        conn.close()
    finally:
        server.should_exit = True
        thread.join(60)
