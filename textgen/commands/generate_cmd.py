"""`textgen generate`: parse the flags, check they fit together, call the library, print."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from pathlib import Path

import click

from textgen.commands.params import ModelFile


SEED_FILE_LIMIT = 64 << 20  # bytes: far past any seed worth reading, far below a mistaken /dev/zero
_DESCRIPTOR = re.compile(r"^/(?:proc/(?:self|thread-self|\d+)|dev)/fd/(\d+)$")
_STANDARD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _normalised_seed(ctx, param, seed: str | None) -> str | None:
    if seed is None:
        return None
    return _checked_seed(seed, "--seed")


def _checked_seed(seed: str, where: str) -> str:
    from textgen.corpus import normalise_text  # models never see CR or a BOM: corpora are read without them

    try:
        seed.encode("utf-8")
    except UnicodeEncodeError as exc:  # argv bytes that are not UTF-8 arrive as lone surrogates
        raise click.BadParameter(f"the seed holds bytes that are not UTF-8 (at character {exc.start + 1}); give "
                                 "it as UTF-8 text", param_hint=where) from None
    return normalise_text(seed)


def read_seed_file(path: str) -> str:
    """The seed in a UTF-8 file, or on standard input for `-`; a FIFO or device other than
    standard input is refused rather than waited on."""
    import stat

    if path == "-":
        stream = sys.stdin
        if stream is None or stream.isatty():
            raise click.BadParameter("- reads the seed from standard input, which is a terminal or closed; pipe "
                                     "it in: echo 'ROMEO:' | textgen generate --seed-file -", param_hint="--seed-file")
        data = getattr(stream, "buffer", stream).read(SEED_FILE_LIMIT + 1)
        data = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    else:
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="--seed-file") from None
        if not stat.S_ISREG(mode):
            raise click.BadParameter(f"{path} is not a regular file; give a text file, or - and pipe the seed in",
                                     param_hint="--seed-file")
        with open(path, "rb") as handle:
            data = handle.read(SEED_FILE_LIMIT + 1)
    if len(data) > SEED_FILE_LIMIT:
        raise click.BadParameter(f"the seed is longer than {SEED_FILE_LIMIT >> 20} MB; give a shorter one",
                                 param_hint="--seed-file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"the seed is not UTF-8 (byte offset {exc.start}); convert it to UTF-8",
                                 param_hint="--seed-file") from None
    return _checked_seed(text, "--seed-file")


@click.command()
@click.option("--model", "model_path", default=None, type=ModelFile(),
              help="A model.keras file written by `textgen train`, or its run directory.  [default: the pretrained "
                   "Shakespeare character model shipped with textgen]")
@click.option("--seed", default=None, callback=_normalised_seed,
              help="Text to start from; printed before the generated text. Line ends and a byte-order mark "
                   "are normalised as in a corpus. Required unless --seed-file is given.")
@click.option("--seed-file", default=None, metavar="PATH",
              help="Read the seed from this UTF-8 file, or from standard input for -, instead of --seed.")
@click.option("--length", type=int, default=500, show_default=True, help="Tokens to generate (at most).")
@click.option("--temperature", type=float, multiple=True,
              help="Sampling temperature; 0 is greedy (always the most likely token). "
                   "Repeat the flag for one sample per temperature.  [default: 1.0]")
@click.option("--top-k", type=int, default=None,
              help="Sample among the K most likely tokens only (--interactive: candidates shown, default 10).")
@click.option("--top-p", type=float, default=None,
              help="Nucleus sampling: the smallest set of tokens with probability mass P, in (0, 1].")
@click.option("--beam-width", type=int, default=None,
              help="Beam search with B beams: the most likely continuation instead of a sample.")
@click.option("--repetition-penalty", type=float, default=1.0, show_default=True,
              help="Above 1 discourages tokens already in the seed or the sample.")
@click.option("--num-samples", type=int, default=1, show_default=True,
              help="Independent samples per temperature, generated as one batch.")
@click.option("--min-length", type=int, default=0, show_default=True,
              help="Tokens to generate before a stop string or sentence end may end a sample.")
@click.option("--stop", multiple=True, callback=lambda ctx, param, values: tuple(_unescape(v) for v in values),
              help="End a sample before this string; repeatable. \\n, \\t and \\\\ in it mean a newline, a tab "
                   "and a backslash, so --stop '\\n\\n' ends at a blank line.")
@click.option("--end-at-sentence", is_flag=True, help="End each sample at the first sentence end after --min-length.")
@click.option("--strict", is_flag=True,
              help="Refuse seed words the model does not know instead of reading them as <unk>.")
@click.option("--random-seed", type=int, default=None,
              help="Seed for sampling; the same seed, model and flags give the same text. [default: random]")
@click.option("--output", "output_path", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Also write the samples to this file (one per block, separated by blank lines); - is "
                   "standard output. A regular file is replaced whole once generation is done; /dev/stdout, "
                   "pipes and devices are written to as they are.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document with samples, settings and timing.")
@click.option("--interactive", is_flag=True,
              help="Choose every next token yourself from the model's top candidates.")
def generate(model_path, seed, seed_file, length, temperature, top_k, top_p, beam_width, repetition_penalty,
             num_samples, min_length, stop, end_at_sentence, strict, random_seed, output_path, as_json, interactive):
    """Generate text from a trained model, continuing SEED.

    A single sample streams to the terminal as it is produced; several samples (from
    --num-samples or repeated --temperature) are printed when done. --beam-width returns
    the most likely continuation instead of a random one.
    """
    from textgen.generate import Request, Sample, fresh_random_seed, load
    from textgen.samplers import make_sampler

    if (seed is None) == (seed_file is None):
        raise click.UsageError("give the text to start from with --seed TEXT or --seed-file PATH (one of them)"
                               if seed is None else "--seed and --seed-file both give the seed; pass only one")
    if seed_file is not None:
        seed = read_seed_file(seed_file)
    if model_path is None:
        from textgen.pretrained import default_model_path

        model_path = default_model_path()
    output_path = _output_target(output_path, model_path)
    if interactive:
        clashing = [name for name, given in (
            ("--beam-width", beam_width is not None), ("--top-p", top_p is not None),
            ("--num-samples", num_samples != 1), ("--json", as_json), ("--stop", bool(stop)),
            ("--min-length", min_length != 0), ("--end-at-sentence", end_at_sentence),
            ("--repetition-penalty", repetition_penalty != 1.0), ("--random-seed", random_seed is not None),
            ("a second --temperature", len(temperature) > 1)) if given]
        return _interactive(model_path, seed, length, temperature, top_k, strict, output_path, clashing)
    random_seed = random_seed if random_seed is not None else fresh_random_seed()
    requests = [Request(seed=seed, length=length, sampler=make_sampler(t, top_k, top_p, beam_width),
                        num_samples=num_samples, random_seed=random_seed, repetition_penalty=repetition_penalty,
                        min_length=min_length, stop=tuple(stop), end_at_sentence=end_at_sentence, strict=strict)
                for t in temperature or (None,)]
    generator = load(model_path)
    for request in requests:  # refuse what this model cannot do before any output
        unknown = generator.check(request)
    _warn_unknown(unknown)

    echo = _printer(keep_going=output_path is not None)
    started = time.perf_counter()
    if len(requests) == 1 and num_samples == 1 and not as_json:
        echo(seed, nl=False)
        pieces = []
        for piece in generator.stream(requests[0]):
            pieces.append(piece)
            echo(piece, nl=False)
        echo()
        results = [(Sample("".join(pieces), length), requests[0])]  # only its text is used
    else:
        results = [(sample, req) for req in requests for sample in generator.run(req)]
        if not as_json:
            for i, (sample, req) in enumerate(results):
                echo(f"--- sample {i + 1} ({_describe(req)})")
                echo(seed + sample.text)
    seconds = time.perf_counter() - started

    if as_json:
        # A seed that drew nothing (greedy, beam) and a temperature beam search never used are null.
        drew = any(req.sampler.stochastic for req in requests)
        settings = {"length": length, "num_samples": num_samples, "random_seed": random_seed if drew else None,
                    "repetition_penalty": repetition_penalty, "min_length": min_length, "stop": list(stop),
                    "end_at_sentence": end_at_sentence, "top_k": top_k, "top_p": top_p, "beam_width": beam_width,
                    "temperatures": [None if req.sampler.beam else req.sampler.temperature for req in requests]}
        echo(_json_document(seed, results, settings, seconds))
    if output_path is not None and (output_path != 1 or as_json):  # printed samples on stdout are the output
        _write_output(output_path, [seed + sample.text for sample, _ in results])


def _interactive(model_path, seed, length, temperature, top_k, strict, output_path, clashing):
    """--interactive: refuse flags that only mean something for batch generation, then run the terminal UI."""
    from textgen.commands.interactive import run_interactive
    from textgen.errors import UsageError
    from textgen.generate import load

    if clashing:
        raise UsageError(f"--interactive lets you pick every token and does not combine with {', '.join(clashing)}")
    if length < 0:
        raise UsageError(f"length must be 0 or more, got {length}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"top-k must be at least 1, got {top_k}")
    shown_temperature = temperature[0] if temperature else 1.0
    if shown_temperature <= 0:
        raise UsageError(f"--interactive shows probabilities at a temperature above 0, got {shown_temperature}")
    generator = load(model_path)
    _warn_unknown(generator.encode_seed(seed, strict)[1])
    text = run_interactive(generator, seed, candidates=top_k or 10, temperature=shown_temperature,
                           max_tokens=length, strict=strict)
    if output_path is not None and output_path != 1:
        _write_output(output_path, [seed + text])


def _printer(keep_going: bool):
    """click.echo to stdout, which a reader may close part-way (`| head -c 10`). Without
    --output that ends the command, quietly, as click ends any command; with --output the
    samples are still wanted, so generation goes on and only the printing stops."""
    closed = False

    def echo(text: str = "", nl: bool = True) -> None:
        nonlocal closed
        if closed:
            return
        try:
            click.echo(text, nl=nl)
        except BrokenPipeError:
            if not keep_going:
                raise
            closed = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is left to flush goes nowhere

    return echo


def _warn_unknown(unknown: list[str]) -> None:
    if unknown:
        shown = ", ".join(repr(t) for t in unknown[:10])
        click.echo(f"warning: seed words not in the vocabulary, read as <unk>: {shown}", err=True)


def _output_target(output_path, model_path) -> Path | int | None:
    """Where --output goes, checked before any time is spent generating.

    A descriptor the process already holds (`-`, /dev/stdout, /dev/fd/N, /proc/self/fd/N) is
    returned as its number and written through, so a file the shell opened for appending
    (`--output /dev/stdout >> log.txt`) keeps what it held. Another path that is not a regular
    file (a pipe, a terminal, /dev/null) is written to as it is. A regular file (or a link to
    one) is replaced atomically, so its directory must take a new file. The model being read
    is refused.
    """
    from textgen.errors import TextgenError, UsageError
    from textgen.saving import probe_writable

    if output_path is None:
        return None
    descriptor = _descriptor(output_path)
    if descriptor is not None:
        return descriptor
    given = Path(output_path)
    if given.exists() and not given.is_file():
        return given  # not a directory (click refuses those): a device or a pipe
    target = given.resolve()
    if target == Path(model_path).resolve():
        raise UsageError(f"--output {output_path} is the model being read; write the samples to another file")
    if not target.parent.is_dir():
        raise TextgenError(f"the directory of --output {output_path} does not exist; create it or choose another")
    try:  # the file is written beside its destination and renamed, so prove a file can be made there
        probe_writable(target.parent)
    except OSError as exc:
        raise TextgenError(f"the directory of --output {output_path} cannot be written ({exc.strerror}); "
                           "choose another") from None
    return target


def _descriptor(path: str) -> int | None:
    """The open descriptor `path` names: `-` is standard output; otherwise follow the chain of
    links (/dev/stdout -> /proc/self/fd/1) and stop at a /dev/fd/N or /proc/PID/fd/N hop."""
    if path == "-":
        return 1
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        if current in _STANDARD:
            return _STANDARD[current]
        match = _DESCRIPTOR.match(current)
        if match and ("/proc/" not in current or current.split("/")[2] in ("self", "thread-self", str(os.getpid()))):
            return int(match.group(1))
        if not os.path.islink(current):
            return None
        current = os.path.normpath(os.path.join(os.path.dirname(current), os.readlink(current)))
    return None


def _write_output(target: Path | int, texts: list[str]) -> None:
    from textgen.saving import write_text_atomic

    text = "\n\n".join(texts) + "\n"
    if isinstance(target, int):
        if target in (1, 2):
            (sys.stdout if target == 1 else sys.stderr).flush()  # what was printed before comes first
        with open(target, "w", encoding="utf-8", closefd=False) as stream:  # no reopening: nothing truncated
            stream.write(text)
    elif target.is_file() or not target.exists():
        write_text_atomic(target, text)
    else:  # a device or pipe, opened without waiting for a reader and without truncating anything
        from textgen.errors import TextgenError

        try:
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise TextgenError(f"--output {target} is a pipe that no process reads; start its reader first "
                                   "or write to a file") from None
            raise
        os.set_blocking(fd, True)
        with open(fd, "w", encoding="utf-8") as stream:
            stream.write(text)


def _json_document(seed, results, settings, seconds) -> str:
    tokens = sum(sample.tokens for sample, _ in results)
    samples = []
    for sample, req in results:
        entry = {"text": sample.text, "tokens": sample.tokens, "stopped_by": sample.stopped_by,
                 **req.sampler.describe()}
        if sample.log_probability is not None:
            entry["log_probability"] = round(sample.log_probability, 4)
        samples.append(entry)
    return json.dumps({"seed": seed, "samples": samples, "settings": settings, "seconds": round(seconds, 4),
                       "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None},
                      indent=2, ensure_ascii=False)


def _describe(request) -> str:
    return ", ".join(f"{k} {v}" for k, v in request.sampler.describe().items())


def _unescape(text: str) -> str:
    """The stop string a shell user means: \\n, \\t and \\\\ become a newline, a tab and a backslash."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)
