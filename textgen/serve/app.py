"""The HTTP API: a Starlette application over one model's `BatchEngine` (docs/serve.md).

Handlers only read, check and answer: the engine runs every request's rows in its own thread,
so the event loop never waits on generation and one server holds many requests at once. The
app keeps no state between requests beyond the count of open streams, so several servers behind
a load balancer behave as one. Every refusal is JSON `{"error": "one line", "field": name|null}`;
nothing a client sends, and nothing that breaks inside, reaches it as a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from textgen.errors import UsageError
from textgen.labels import LabelSpace
from textgen.serve.body import BodyError, Limits, decode, read_body

__all__ = ["Limits", "create_app", "describe_model"]

RETRY_AFTER = "1"  # seconds a client refused for load (429) waits before trying again


def describe_model(generator, name: str) -> dict:
    """What GET /v1/model answers: the model card, its architecture, name, level and vocabulary size.

    The training config's output folder is left out: it is a path on the machine that trained the
    model and means nothing to a client. A conditioned model's card keeps its `labels`, the label
    groups a request's `label` field chooses from.
    """
    from textgen.models.architecture import architecture

    return {**public_card(generator.model_card), "name": name, "level": generator.tokenizer.level,
            "vocab_size": int(generator.tokenizer.vocab_size), "architecture": architecture(generator.model)}


def public_card(model_card: dict) -> dict:
    """The model card as JSON a client reads: without the training config's output folder."""
    card = json.loads(json.dumps(model_card, default=str))
    if isinstance(card.get("config"), dict):
        card["config"] = {key: value for key, value in card["config"].items() if key != "output"}
    return card


def create_app(engine, model_facts: dict, *, token: str | None = None, limits: Limits = Limits()) -> Starlette:
    """The application serving `engine` (started and drained with the app's lifespan).

    `model_facts` is what GET /v1/model answers (`describe_model`); with a `token`, every endpoint
    but /healthz and the page itself needs `Authorization: Bearer <token>`. A seq2seq model's facts
    (`textgen.serve.translate.describe_seq2seq`) come with its `Seq2SeqEngine`.
    """
    if model_facts.get("kind") == "seq2seq":  # sources in, targets out: its own generate and page
        from textgen.serve.translate import TranslateApi

        api = TranslateApi(engine, model_facts, token, limits)
    else:
        api = _Api(engine, model_facts, token, limits)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:  # uvicorn gets here once in-flight requests are answered; the engine's queue is empty then
            await asyncio.get_running_loop().run_in_executor(None, lambda: engine.stop(drain=True))

    routes = [Route("/", api.page, methods=["GET"]), Route("/healthz", api.health, methods=["GET"]),
              Route("/v1/model", api.model, methods=["GET"]), Route("/v1/generate", api.generate, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: _http_error, Exception: _internal_error})


def error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    """The one shape every refusal has."""
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


async def _http_error(request, exc: HTTPException) -> JSONResponse:
    """Starlette's own refusals (404, 405) in the API's shape."""
    if exc.status_code == 404:
        message = f"no such endpoint {request.url.path}; see GET / or docs/serve.md"
    else:
        message = f"{request.method} is not allowed on {request.url.path}"
    return error(exc.status_code, message, headers=exc.headers)


async def _internal_error(request, exc: Exception) -> JSONResponse:
    """Something unforeseen broke: one line for the client; the server's log has the traceback."""
    return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")


class _Api:
    """The handlers, over one engine, its model's facts, the token and the limits."""

    def __init__(self, engine, model_facts: dict, token: str | None, limits: Limits):
        self.engine, self.facts, self.limits = engine, model_facts, limits
        # The groups /v1/model lists are the ones a request is checked against: the Generator
        # reads the same card entry into the same LabelSpace.
        self.label_space = LabelSpace.from_card(model_facts.get("labels"))
        self.token = token.encode("utf-8") if token else None
        self.streams = 0  # streaming responses open now, at most limits.max_streams
        self.page_html = _page()

    def refused(self, request: HttpRequest) -> Response | None:
        """401 unless the request carries the bearer token (compared in constant time)."""
        if self.token is None:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8"), self.token):
            return None
        return error(401, "this server needs a bearer token: send the header Authorization: Bearer <token>",
                     headers={"WWW-Authenticate": "Bearer"})

    async def page(self, request: HttpRequest) -> Response:
        # Open without the token: a browser cannot send a header when it opens a page; the page asks for it.
        return HTMLResponse(self.page_html)

    async def health(self, request: HttpRequest) -> Response:
        return JSONResponse({"status": "ok", "pending": self.engine.pending})

    async def model(self, request: HttpRequest) -> Response:
        return self.refused(request) or JSONResponse(self.facts)

    async def generate(self, request: HttpRequest) -> Response:
        refusal = self.refused(request)
        if refusal is not None:
            return refusal
        try:
            body = read_body(decode(await self._read(request)), self.limits, _normalise, self.label_space)
            if body.stream and self.streams >= self.limits.max_streams:
                raise BodyError(f"this server has {self.limits.max_streams} streams open, its limit; try again "
                                "shortly, or start it with a higher --max-streams", "stream", status=429)
            jobs = self._submit(body.requests)
        except BodyError as exc:
            headers = {"Retry-After": RETRY_AFTER} if exc.status == 429 else None
            return error(exc.status, str(exc), exc.field, headers)
        if body.stream:
            return self._stream(jobs[0], body.random_seed)
        return await self._answer(request, jobs, body.random_seed)

    async def _read(self, request: HttpRequest) -> bytes:
        """The body, refused (413) as soon as it passes the limit: a client cannot make the server hold more."""
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _submit(self, requests: list) -> list:
        """One engine job per request; if one is refused, the ones already queued are withdrawn."""
        from textgen.serve.engine import QueueFull

        jobs = []
        try:
            for one in requests:
                jobs.append(self.engine.submit(one))
        except QueueFull:
            _cancel(jobs)
            raise BodyError("the server's queue is full; try again shortly, or start it with a higher --max-queue",
                            status=429) from None
        except UsageError as exc:
            _cancel(jobs)
            raise BodyError(str(exc)) from None
        return jobs

    async def _answer(self, request: HttpRequest, jobs: list, random_seed: int) -> Response:
        """The JSON answer once every job is done; a client that leaves first has its jobs cancelled."""
        started = time.perf_counter()
        collecting = asyncio.ensure_future(_collect(jobs))
        leaving = asyncio.ensure_future(_disconnect(request))
        done = set()
        try:
            done, _ = await asyncio.wait({collecting, leaving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leaving.cancel()
            if not collecting.done():
                collecting.cancel()
                _cancel(jobs)
        if collecting not in done:
            return Response(status_code=499)  # the client left: nobody reads this
        samples, failure = collecting.result()
        if failure is not None:
            return error(500, failure)
        return JSONResponse(self._document(samples, random_seed, time.perf_counter() - started))

    def _document(self, samples: list, random_seed: int, seconds: float) -> dict:
        kept = [{key: sample.get(key) for key in ("text", "tokens", "stopped_by")} for sample in samples]
        return {"samples": kept, "random_seed": random_seed, "seconds": round(seconds, 4),
                "model": self.facts.get("name")}

    def _stream(self, job, random_seed: int) -> Response:
        """Server-Sent Events: a `data: {"text"}` event per piece, then `event: done` (or `event: error`)."""
        self.streams += 1
        started = time.perf_counter()
        finished = []

        async def events():
            async for event in job.events():
                if event["type"] == "text":
                    yield _sse({"text": event["text"]})
                    continue
                finished.append(True)
                if event["type"] == "done":
                    yield _sse(self._document(event["samples"], random_seed, time.perf_counter() - started), "done")
                else:
                    yield _sse({"error": event.get("error", "generation failed")}, "error")

        def closed():  # the response ended: sent in full, or the client left, or the server cancelled it
            self.streams -= 1
            if not finished:
                job.cancel()

        return _EventStream(events(), closed)


class _EventStream(StreamingResponse):
    """A text/event-stream response that calls `closed` however it ends, even before its first event."""

    def __init__(self, content, closed):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # nginx: do not buffer
        self.closed = closed

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.closed()


def _too_large(limit: int) -> BodyError:
    return BodyError(f"the body is over this server's limit of {limit:,} bytes; send less, or start it with a "
                     "higher --max-body-bytes", status=413)


def _sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _cancel(jobs: list) -> None:
    for job in jobs:
        job.cancel()


async def _collect(jobs: list) -> tuple[list, str | None]:
    """Every job's samples in order, or the first job's error line."""
    samples = []
    for job in jobs:
        async for event in job.events():
            if event["type"] == "done":
                samples.extend(event["samples"])
            elif event["type"] == "error":
                _cancel(jobs)
                return [], event.get("error", "generation failed")
    return samples, None


async def _disconnect(request: HttpRequest) -> None:
    """Returns when the client closes its connection (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _normalise(seed: str) -> str:
    from textgen.data.corpus import normalise_text  # models never see CR or a BOM: corpora are read without them

    return normalise_text(seed)


def _page() -> str:
    """The playground page, shipped as package data (textgen/serve/static/index.html)."""
    return resources.files("textgen.serve").joinpath("static/index.html").read_text(encoding="utf-8")
