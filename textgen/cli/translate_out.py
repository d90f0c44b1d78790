"""`textgen generate` for a seq2seq model: sources in (--seed, --seed-file or --input-file), one
output a line out, decoded as one batch."""

from __future__ import annotations

import json
import time

import click

from textgen.cli.output_target import write_output
from textgen.errors import UsageError

INPUT_FILE_LIMIT = 64 << 20  # bytes: sources a line; a file this big is a corpus given by mistake


def is_seq2seq_file(model_path) -> bool:
    """Whether the model file is a seq2seq model, from its card, without TensorFlow (False when
    only Keras can read the file: loading it then says what is wrong)."""
    from textgen.model_file import NeedsKeras, model_card, read_model_file, token_embedding
    from textgen.errors import ModelFileError

    try:
        stored = read_model_file(model_path)
    except (NeedsKeras, ModelFileError):
        return False
    embedding = token_embedding(stored.config)
    card = model_card(embedding) if embedding is not None else {}
    return (card.get("architecture") or {}).get("type") == "seq2seq"


def read_sources(path: str) -> list[str]:
    """The lines of --input-file (stdin for -), each one source; a final line end ends the last line."""
    import sys

    name = "stdin" if path == "-" else f"--input-file {path}"
    try:
        if path == "-":
            data = sys.stdin.buffer.read(INPUT_FILE_LIMIT + 1)
        else:
            with open(path, "rb") as stream:
                data = stream.read(INPUT_FILE_LIMIT + 1)
    except FileNotFoundError:
        raise UsageError(f"{name} does not exist; check the path") from None
    except IsADirectoryError:
        raise UsageError(f"{name} is a directory; give a UTF-8 text file with one source a line") from None
    except OSError as exc:
        raise UsageError(f"{name} cannot be read ({exc.strerror}); check the path and its permissions") from None
    if len(data) > INPUT_FILE_LIMIT:
        raise UsageError(f"{name} holds more than {INPUT_FILE_LIMIT >> 20} MiB; split it into smaller files")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UsageError(f"{name} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); save it as "
                         "UTF-8") from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise UsageError(f"{name} is empty; give one source a line")
    return lines


def translate_and_show(model_path, sources: list[str], *, length, temperature, top_k, top_p, beam_width,
                       same_letters, random_seed, output_path, as_json, clashing: list[str]) -> None:
    """Decode `sources` and print one output a line (or a JSON document), and write --output."""
    from textgen.generation.seq2seq import Translator

    if clashing:
        raise UsageError(f"a seq2seq model writes one output per source; {', '.join(clashing)} "
                         f"{'applies' if len(clashing) == 1 else 'apply'} to language models")
    if len(temperature) > 1:
        raise UsageError("a seq2seq model takes one --temperature (0 or none: greedy)")
    t = temperature[0] if temperature else 0.0
    method = "beam" if beam_width else ("sample" if t > 0 else "greedy")
    if method != "sample" and (top_k is not None or top_p is not None):
        raise UsageError("--top-k and --top-p shape sampling; give --temperature above 0 too")
    translator = Translator.load(model_path, same_letters)
    started = time.perf_counter()
    outputs = translator.translate(sources, method=method, temperature=t or 1.0, top_k=top_k, top_p=top_p,
                                   beam_width=beam_width or 1, max_length=length, random_seed=random_seed)
    seconds = time.perf_counter() - started
    to_stdout = output_path is not None and output_path.fd == 1
    if as_json:
        click.echo(json.dumps({"sources": sources, "outputs": outputs, "decoding": method,
                               "settings": {"temperature": t if method == "sample" else None, "top_k": top_k,
                                            "top_p": top_p, "beam_width": beam_width, "max_length": length,
                                            "same_letters": translator.letters is not None,
                                            "random_seed": random_seed if method == "sample" else None},
                               "seconds": round(seconds, 4)}, indent=2, ensure_ascii=False))
    elif not to_stdout:
        for output in outputs:
            click.echo(output)
    if output_path:
        write_output(output_path, outputs, separator="\n")
