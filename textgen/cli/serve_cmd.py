"""`textgen serve`: load a model, start its batch engine and serve the HTTP API (docs/serve.md)."""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path

import click

from textgen.cli.command import LibraryCommand
from textgen.cli.params import model_option
from textgen.cli.quiet import note
from textgen.serve.body import Limits

TOKEN_VARIABLE = "TEXTGEN_SERVE_TOKEN"
_DEFAULTS = Limits()


class ServeCommand(LibraryCommand):
    """Refuses to start without the `serve` extra before TensorFlow is imported."""

    def start(self, flags: dict) -> None:
        missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
        if missing:
            raise click.UsageError(f"textgen serve needs {' and '.join(missing)}; install them with "
                                   "pip install 'textgen[serve]'")
        super().start(flags)


def _token(ctx, param, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter(f"the token is empty; give a secret, or unset {TOKEN_VARIABLE} to serve without one")
    return value


@click.command(cls=ServeCommand)
@model_option()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 127.0.0.1 answers this machine only, 0.0.0.0 every network "
                   "(then set --token, or put it behind a proxy that checks who calls).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on; 0 picks a free one (the URL printed says which).")
@click.option("--token", envvar=TOKEN_VARIABLE, show_envvar=True, default=None, callback=_token,
              help="Require `Authorization: Bearer TOKEN` on every endpoint but /healthz and the page. "
                   "Prefer the environment variable: a command line is visible to other users.")
@click.option("--max-body-bytes", type=click.IntRange(min=256), default=_DEFAULTS.max_body_bytes, show_default=True,
              help="Largest request body; a bigger one is refused (413) as it is read.")
@click.option("--max-length", type=click.IntRange(min=1), default=_DEFAULTS.max_length, show_default=True,
              help="Largest `length` (tokens per sample) a request may ask for (422 above it).")
@click.option("--max-num-samples", type=click.IntRange(min=1), default=_DEFAULTS.max_num_samples,
              show_default=True,
              help="Most samples one request may ask for: num_samples times its temperatures (422 above it); "
                   "for a seq2seq model, the most sources.")
@click.option("--max-queue", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests waiting for the engine to start them; more are refused with 429 and Retry-After.")
@click.option("--max-streams", type=click.IntRange(min=1), default=_DEFAULTS.max_streams, show_default=True,
              help="Streaming responses open at once; more are refused with 429 and Retry-After.")
@click.option("--batch-window-ms", type=click.FloatRange(min=0, max=1000), default=5.0, show_default=True,
              help="How long the engine waits for more requests to batch with the first one, in milliseconds.")
@click.option("--warm-up/--no-warm-up", default=True, show_default=True,
              help="Compile the generation loop for every batch size before listening (a few seconds), "
                   "so the first requests do not wait for it.")
@click.pass_context
def serve(ctx, model_path, host, port, token, max_body_bytes, max_length, max_num_samples, max_queue, max_streams,
          batch_window_ms, warm_up):
    """Serve a model over HTTP: a JSON and streaming API, and a playground page.

    A seq2seq model answers {"source": ...} or {"sources": [...]} with its targets (no streaming,
    no playground).

    Requests that arrive together run as one batch. Ctrl-C or SIGTERM stops accepting
    connections, answers the requests in flight, then exits with 0. Open the printed
    address in a browser for the playground; docs/serve.md has the API.
    """
    from textgen.errors import UsageError
    from textgen.serve.app import create_app
    from textgen.serve.server import bind, serve as run_server, url_of

    if model_path is None:
        from textgen.pretrained import default_model_path

        model_path = default_model_path()
    try:
        sock = bind(host, port)
    except (OSError, OverflowError) as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc}); "
                         "pick another --port or --host") from None
    with sock:
        engine, facts = _engine(model_path, batch_window_ms, max_queue)
        limits = Limits(max_body_bytes=max_body_bytes, max_length=max_length, max_num_samples=max_num_samples,
                        max_streams=max_streams)
        if warm_up:
            note("compiling the decoding loops..." if facts.get("kind") == "seq2seq"
                 else "compiling the generation loop for every batch size...")
            engine.warm_up()
        app = create_app(engine, facts, token=token, limits=limits)
        if token is None and not _loopback(host):
            note(f"listening on {host} without a token: anyone who reaches this port can use it; set "
                 f"{TOKEN_VARIABLE} or --token")
        click.echo(f"serving {facts['name']} at {url_of(sock)}  (Ctrl-C or SIGTERM to stop)")
        run_server(app, sock, verbose=ctx.obj["verbose"])
    note("stopped: every request in flight was answered")


def _engine(model_path, window_ms: float, max_queue: int):
    """(the engine, what GET /v1/model answers) for the model file: a seq2seq model translates, the
    others generate."""
    from textgen.generation.generate import Generator
    from textgen.models.architecture import model_kind
    from textgen.saving import load_keras_model

    model, name = load_keras_model(model_path), _model_name(Path(model_path))
    if model_kind(model) == "seq2seq":
        from textgen.generation.seq2seq import Translator
        from textgen.serve.seq2seq_engine import Seq2SeqEngine
        from textgen.serve.translate import describe_seq2seq

        translator = Translator(model)
        return Seq2SeqEngine(translator, window_ms=window_ms, max_queue=max_queue), describe_seq2seq(translator, name)
    from textgen.serve.app import describe_model
    from textgen.serve.engine import BatchEngine

    generator = Generator(model)
    return BatchEngine(generator, window_ms=window_ms, max_queue=max_queue), describe_model(generator, name)


def _model_name(path: Path) -> str:
    """What the API calls the model: the file's name, or its run directory's for a `model.keras`."""
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
