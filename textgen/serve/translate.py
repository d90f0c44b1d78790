"""`textgen serve` for a seq2seq model: `POST /v1/generate` takes sources and answers targets.

    {"source": "..."} or {"sources": ["...", ...]}, optional "max_length", "beam_width",
    "temperature", "random_seed"  ->  {"outputs": ["...", ...], "random_seed", "seconds", "model"}

Greedy decoding unless the body asks for a `temperature` above 0 (sampling) or a `beam_width`
above 1 (beam search). `Seq2SeqEngine` is the language models' batch engine made simple: a
worker thread takes what arrived within `window_ms` of the first request and decodes every
request that decodes alike (greedy, or beam search of one width, with one max_length) as one
call of `Translator.translate`, whose compiled loop steps all their rows at once. Rows of one
batch do not touch each other, so each request gets what `Translator.translate` gives its own
sources. A sampled request decodes alone: its random numbers are drawn per row of its own call,
so it equals `Translator.translate` for its random seed. No streaming: a target is short and
comes whole. The routes, the token and the error shape are textgen.serve.app's.
"""

from __future__ import annotations

import asyncio
import difflib
import time
from dataclasses import dataclass

from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, JSONResponse, Response

from textgen.errors import TextgenError, UsageError
from textgen.generation.request import fresh_random_seed
from textgen.serve.app import RETRY_AFTER, _Api, _disconnect, error, public_card
from textgen.serve.body import MAX_RANDOM_SEED, BodyError, Limits, _kind, _number, _whole, decode

__all__ = ["TranslateApi", "TranslateRequest", "describe_seq2seq", "read_translate_body"]

FIELDS = ("source", "sources", "max_length", "beam_width", "temperature", "random_seed")
LANGUAGE_MODEL_FIELDS = {"seed": ["source"], "length": ["max_length"], "num_samples": ["sources"]}
MAX_BEAM_WIDTH = 16  # beams per source; each is a row of the batch


@dataclass(frozen=True)
class TranslateRequest:
    """A checked body: the sources and how to decode them."""

    sources: tuple[str, ...]
    method: str = "greedy"  # greedy | sample | beam
    temperature: float = 1.0
    beam_width: int = 1
    max_length: int | None = None  # None: each source's own limit (Translator.length_limits)
    random_seed: int | None = None  # sampling only

    @property
    def batch_key(self):
        """Requests with equal keys decode as one Translator call; a sampled one never shares."""
        return None if self.method == "sample" else (self.method, self.beam_width, self.max_length)


def describe_seq2seq(translator, name: str) -> dict:
    """What GET /v1/model answers for a seq2seq model: its card, `kind: seq2seq`, both vocabularies' sizes
    and whether its outputs are held to their sources' letters."""
    from textgen.models.architecture import architecture

    card = public_card(translator.stepper.parts.source_embedding.model_card)
    source, target = translator.source_tokenizer, translator.target_tokenizer
    return {**card, "name": name, "kind": "seq2seq", "level": source.level,
            "source_vocab_size": int(source.vocab_size), "target_vocab_size": int(target.vocab_size),
            "same_letters": translator.letters is not None, "architecture": architecture(translator.model)}


def read_translate_body(value: dict, limits: Limits) -> TranslateRequest:
    """The request a decoded body asks for, or a BodyError naming the field."""
    for name in value:
        if name not in FIELDS:
            # A language model's field names are the likely mistake: say which field means the same here.
            close = LANGUAGE_MODEL_FIELDS.get(name) or difflib.get_close_matches(str(name), FIELDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            if name in LANGUAGE_MODEL_FIELDS:
                hint = f"this server runs a seq2seq model: {hint}"
            raise BodyError(f"unknown field {name!r}; {hint}the fields are {', '.join(FIELDS)}", name)
    given = {name: v for name, v in value.items() if v is not None}  # null means the field's default
    sources = _sources(given, limits)
    max_length = _whole(given, "max_length", None, limits.max_length, "--max-length", low=1)
    beam_width = _whole(given, "beam_width", 1, MAX_BEAM_WIDTH, None, low=1)
    temperature = _number(given, "temperature", 0.0)
    if temperature < 0:
        raise BodyError(f"temperature must be 0 (greedy) or more, got {temperature}", "temperature")
    if temperature > 0 and beam_width > 1:
        raise BodyError("give either a temperature above 0 (sampling) or a beam_width above 1 (beam search), "
                        "not both", "beam_width")
    random_seed = _whole(given, "random_seed", None, MAX_RANDOM_SEED, None)
    if temperature > 0:
        seed = fresh_random_seed() if random_seed is None else random_seed
        return TranslateRequest(sources, "sample", temperature, 1, max_length, seed)
    return TranslateRequest(sources, "beam" if beam_width > 1 else "greedy", 1.0, beam_width, max_length)


def _sources(given: dict, limits: Limits) -> tuple[str, ...]:
    if ("source" in given) == ("sources" in given):
        raise BodyError('give the field "source" (one text) or "sources" (a list of texts), one of them',
                        "source" if "source" not in given else "sources")
    if "source" in given:
        if not isinstance(given["source"], str):
            raise BodyError(f"source must be a string, got {_kind(given['source'])}", "source")
        return (given["source"],)
    sources = given["sources"]
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise BodyError(f"sources must be a list of strings, got {_kind(sources)}", "sources")
    if not sources:
        raise BodyError("sources is an empty list; give at least one text", "sources")
    if len(sources) > limits.max_num_samples:
        raise BodyError(f"{len(sources)} sources is over this server's limit of {limits.max_num_samples} per "
                        "request; send fewer, or start it with a higher --max-num-samples", "sources")
    return tuple(sources)


class TranslateApi(_Api):
    """textgen.serve.app's handlers (token, health, model, body limits) with `generate` and the page
    of a seq2seq model."""

    async def page(self, request: HttpRequest) -> Response:
        return HTMLResponse(PAGE.replace("{name}", _html(str(self.facts.get("name")))))

    async def generate(self, request: HttpRequest) -> Response:
        from textgen.serve.engine import QueueFull

        refusal = self.refused(request)
        if refusal is not None:
            return refusal
        try:
            body = read_translate_body(decode(await self._read(request)), self.limits)
        except BodyError as exc:
            return error(exc.status, str(exc), exc.field)
        try:
            job = self.engine.submit(body)
        except QueueFull:
            return error(429, "the server's queue is full; try again shortly, or start it with a higher --max-queue",
                         headers={"Retry-After": RETRY_AFTER})
        except UsageError as exc:  # a source the vocabulary cannot spell, or the server shutting down
            field = None if not str(exc).startswith("source") else "source" if len(body.sources) == 1 else "sources"
            return error(422, str(exc), field)
        return await self._answer(request, job, body)

    async def _answer(self, request: HttpRequest, job, body: TranslateRequest) -> Response:
        """The JSON answer once the job is decoded; a client that leaves first has its job cancelled."""
        started = time.perf_counter()
        decoding = asyncio.ensure_future(job.outputs())
        leaving = asyncio.ensure_future(_disconnect(request))
        done = set()
        try:
            done, _ = await asyncio.wait({decoding, leaving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leaving.cancel()
            if not decoding.done():
                decoding.cancel()
                job.cancel()
        if decoding not in done:
            return Response(status_code=499)  # the client left: nobody reads this
        try:
            outputs = decoding.result()
        except TextgenError as exc:
            return error(500, str(exc))
        return JSONResponse({"outputs": outputs, "random_seed": body.random_seed,
                             "seconds": round(time.perf_counter() - started, 4), "model": self.facts.get("name")})


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# The playground writes continuations of a seed, which a seq2seq model does not do; this page says
# how to call the API instead of showing controls that would not work.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>textgen: {name}</title>
<style>body{font-family:system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;line-height:1.5}
code,pre{background:#f3f3f3;padding:.1rem .3rem}</style></head>
<body><h1>{name}</h1>
<p>This server runs a <strong>sequence-to-sequence</strong> model: it turns each source text into a target text.
The playground is for language models; call the API instead:</p>
<pre>curl -s http://HOST:PORT/v1/generate -H 'Content-Type: application/json' \\
     -d '{"sources": ["first source", "second source"]}'</pre>
<p>Optional fields: <code>max_length</code>, <code>beam_width</code>, <code>temperature</code>,
<code>random_seed</code>. <code>GET /v1/model</code> describes the model; docs/serve.md has the rest.</p>
</body></html>
"""
