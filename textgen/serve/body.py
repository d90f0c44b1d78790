"""The JSON body of `POST /v1/generate`, read into generation requests and checked field by field.

Every problem is a `BodyError` that names the field and, for a server limit, the `textgen serve`
flag that raises it, so a client learns what to change from the one line it gets back. The
checks here come first and speak the API's names (`top_k`, not `--top-k`); the library's own
checks (`Request`, `make_sampler`) still run after them and catch what these do not foresee.
Labels are the exception: their specs mean what `--label` means, so the model's own LabelSpace
reads them here (one parser for the command line, the Python API and the server).
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass

from textgen.errors import TextgenError, UsageError

FIELDS = ("seed", "length", "temperature", "top_k", "top_p", "repetition_penalty", "stop", "min_length",
          "end_at_sentence", "num_samples", "random_seed", "stream", "label")
MAX_RANDOM_SEED = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server; each is a `textgen serve` flag (docs/serve.md)."""

    max_body_bytes: int = 65_536  # a request body past this is refused while it is read (413)
    max_length: int = 2_000  # tokens per sample
    max_num_samples: int = 16  # samples per request: num_samples x the number of temperatures
    max_streams: int = 32  # streaming responses open at once; more are refused (429)


class BodyError(TextgenError):
    """A request the server refuses: `status` is the HTTP code, `field` the body's field or None."""

    def __init__(self, message: str, field: str | None = None, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


@dataclass(frozen=True)
class Body:
    """A checked body: one Request per temperature, and how to answer."""

    requests: list  # textgen.generation.request.Request
    random_seed: int
    stream: bool


def decode(raw: bytes) -> dict:
    """The body's JSON object; a BodyError (400) for bytes that are not UTF-8 JSON, 422 for another value."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise BodyError(f"the body is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        "send JSON encoded as UTF-8", status=400) from None
    except json.JSONDecodeError as exc:
        raise BodyError(f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                        'send an object such as {"seed": "ROMEO:"}', status=400) from None
    except (RecursionError, ValueError) as exc:  # nesting past Python's stack; a number past int's digit limit
        raise BodyError(f"the body cannot be read as JSON ({type(exc).__name__}); send a flat JSON object",
                        status=400) from None
    if not isinstance(value, dict):
        raise BodyError(f'the body must be a JSON object such as {{"seed": "ROMEO:"}}, got {_kind(value)}')
    return value


def _refuse_constant(name: str):
    raise BodyError(f"{name} is not a number JSON allows; send a finite number", status=400)


def read_body(value: dict, limits: Limits, normalise=lambda text: text, label_space=None) -> Body:
    """The requests `value` (a decoded body) asks for; `normalise` prepares the seed as a corpus is.

    `label_space` is the model's (textgen.labels.LabelSpace; None for a model without labels).
    """
    from textgen.generation.request import Request, fresh_random_seed

    for name in value:
        if name not in FIELDS:
            close = difflib.get_close_matches(str(name), FIELDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise BodyError(f"unknown field {name!r}; {hint}the fields are {', '.join(FIELDS)}", name)
    given = {name: v for name, v in value.items() if v is not None}  # null means the field's default
    if "seed" not in given:
        raise BodyError('the field "seed" is required: the text to continue', "seed")
    seed = _string(given, "seed")
    if seed == "":
        raise BodyError("seed is empty; give at least one character of text to continue", "seed")
    length = _whole(given, "length", 200, limits.max_length, "--max-length")
    temperatures = _temperatures(given)
    top_k, top_p = _sampling(given, temperatures)
    num_samples = _whole(given, "num_samples", 1, limits.max_num_samples, "--max-num-samples", low=1)
    labels = _labels(given)
    rows = _label_rows(labels, num_samples, label_space)
    if rows * len(temperatures) > limits.max_num_samples:
        asked = f"num_samples {num_samples}" if rows == num_samples else f"{rows} labels of one group"
        raise BodyError(f"{asked} x {len(temperatures)} temperatures asks for "
                        f"{rows * len(temperatures)} samples, over this server's limit of "
                        f"{limits.max_num_samples}; ask for fewer, or start it with a higher --max-num-samples",
                        "num_samples")
    min_length = _whole(given, "min_length", 0, length, None)
    random_seed = _whole(given, "random_seed", None, MAX_RANDOM_SEED, None)
    penalty = _number(given, "repetition_penalty", 1.0)
    if penalty < 1:
        raise BodyError(f"repetition_penalty must be 1 (off) or more, got {penalty}", "repetition_penalty")
    stream = _flag(given, "stream")
    if stream and rows * len(temperatures) != 1:
        raise BodyError("streaming sends one sample; set num_samples to 1 and give one temperature "
                        "and one label per group, or drop stream", "stream")
    random_seed = fresh_random_seed() if random_seed is None else random_seed
    try:
        requests = [Request(seed=normalise(seed), length=length, sampler=_sampler(t, top_k, top_p),
                            num_samples=num_samples, random_seed=random_seed, repetition_penalty=penalty,
                            min_length=min_length, stop=_stops(given), end_at_sentence=_flag(given, "end_at_sentence"),
                            labels=labels)
                    for t in temperatures]
    except UsageError as exc:  # what the checks above do not foresee, in the library's words
        raise BodyError(str(exc)) from None
    return Body(requests, random_seed, stream)


def _sampler(temperature: float, top_k, top_p):
    from textgen.generation.samplers import make_sampler

    return make_sampler(temperature, top_k, top_p)


def _temperatures(given: dict) -> list[float]:
    value = given.get("temperature", 1.0)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise BodyError("temperature is an empty list; give a number or a list of numbers", "temperature")
    for t in values:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise BodyError(f"temperature must be a number or a list of numbers, got {_kind(t)}", "temperature")
        if t < 0:
            raise BodyError(f"temperature must be 0 (greedy) or more, got {t}", "temperature")
    return [float(t) for t in values]


def _sampling(given: dict, temperatures: list[float]) -> tuple[int | None, float | None]:
    top_k = _whole(given, "top_k", None, None, None, low=1)
    top_p = _number(given, "top_p", None)
    if top_p is not None and not 0 < top_p <= 1:
        raise BodyError(f"top_p must be above 0 and at most 1, got {top_p}", "top_p")
    if top_k is not None and top_p is not None:
        raise BodyError("give either top_k or top_p, not both", "top_p")
    if 0.0 in temperatures and (top_k not in (None, 1) or top_p is not None):
        raise BodyError("temperature 0 is greedy decoding; drop top_k/top_p or use a temperature above 0",
                        "temperature")
    return top_k, top_p


def _labels(given: dict) -> tuple[str, ...]:
    value = given.get("label", [])
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(s, str) for s in values):
        raise BodyError(f"label must be a label spec or a list of them (such as \"austen\", \"author=austen\" "
                        f"or \"austen:0.7,melville:0.3\"), got {_kind(value)}", "label")
    if "label" in given and not values:
        raise BodyError("label is an empty list; give a label spec or a list of them, or drop label to write "
                        "as the model's `any`", "label")
    return tuple(values)


def _label_rows(labels: tuple[str, ...], num_samples: int, label_space) -> int:
    """Samples per temperature once the labels are read: several labels of one group give one sample each."""
    if not labels:
        return num_samples
    if label_space is None:
        raise BodyError("this model was trained without labels; drop label", "label")
    try:
        return label_space.mix(labels, num_samples)[1]
    except UsageError as exc:  # LabelSpace speaks the command line's flags; the body names its fields
        raise BodyError(str(exc).replace("--num-samples", "num_samples").replace("--label ", "label "),
                        "label") from None


def _stops(given: dict) -> tuple[str, ...]:
    value = given.get("stop", [])
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(s, str) for s in values):
        raise BodyError(f"stop must be a string or a list of strings, got {_kind(value)}", "stop")
    if "" in values:
        raise BodyError("a stop string cannot be empty", "stop")
    return tuple(values)


def _whole(given: dict, name: str, default, high: int | None, flag: str | None, low: int = 0):
    if name not in given:
        return default
    value = given[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BodyError(f"{name} must be a whole number, got {_kind(value)}", name)
    if value < low:
        raise BodyError(f"{name} must be {low} or more, got {value}", name)
    if high is not None and value > high:
        if flag is None:
            limit = "the length" if name == "min_length" else f"{high}"
            raise BodyError(f"{name} must be at most {limit}, got {value}", name)
        raise BodyError(f"{name} {value} is over this server's limit of {high}; ask for less, or start it with "
                        f"a higher {flag}", name)
    return value


def _number(given: dict, name: str, default):
    if name not in given:
        return default
    value = given[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BodyError(f"{name} must be a number, got {_kind(value)}", name)
    return float(value)


def _flag(given: dict, name: str) -> bool:
    value = given.get(name, False)
    if not isinstance(value, bool):
        raise BodyError(f"{name} must be true or false, got {_kind(value)}", name)
    return value


def _string(given: dict, name: str) -> str:
    value = given[name]
    if not isinstance(value, str):
        raise BodyError(f"{name} must be a string, got {_kind(value)}", name)
    return value


def _kind(value) -> str:
    """How a JSON value is described in an error: its type, and the value itself when short."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    shown = json.dumps(value)
    described = kinds.get(type(value), type(value).__name__)
    return f"{described} ({shown})" if len(shown) <= 40 else described
