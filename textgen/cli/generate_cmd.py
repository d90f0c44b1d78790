"""`textgen generate`: parse the flags, check they fit together, call the library, print."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time

import click

from textgen.cli.command import LibraryCommand
from textgen.cli.output_target import output_target, write_output
from textgen.cli.params import model_option
from textgen.cli.quiet import library, note

SEED_FILE_LIMIT = 1 << 20  # bytes: far more than any seed, far less than a file read by mistake


def _normalised_seed(ctx, param, seed: str | None) -> str | None:
    if seed is None:
        return None
    return _normalise(_utf8(seed, "the seed", "type it in UTF-8, or save it as a UTF-8 file and pass --seed-file"))


def _utf8(text: str, what: str, fix: str = "type it in UTF-8") -> str:
    """`text` from argv, refused when it holds bytes that are not UTF-8 (lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = ord(text[exc.start])
        shown = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"{text[exc.start]!a}"
        raise click.BadParameter(f"{what} is not UTF-8 ({shown} at character {exc.start}); {fix}") from None
    return text


def _normalise(seed: str) -> str:
    from textgen.data.corpus import normalise_text  # models never see CR or a BOM: corpora are read without them

    return normalise_text(seed)


def _read_seed_file(path: str) -> str:
    """The seed in a UTF-8 file, or on stdin for `-`. A FIFO or device is refused (it may never end),
    and so is a file past SEED_FILE_LIMIT: a seed is the start of a text, not a corpus."""
    from textgen.errors import UsageError

    name = "stdin" if path == "-" else f"seed file {path}"
    if path == "-":
        stream = sys.stdin.buffer
        data = stream.read(SEED_FILE_LIMIT + 1)
    else:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise UsageError(f"seed file {path} does not exist; check the path") from None
        except OSError as exc:
            raise UsageError(f"seed file {path} cannot be read ({exc.strerror}); check the path") from None
        if stat.S_ISDIR(mode):
            raise UsageError(f"seed file {path} is a directory; give a UTF-8 text file")
        if not stat.S_ISREG(mode) and not _is_stdin(path):
            raise UsageError(f"seed file {path} is not a regular file (a pipe or a device); give a file, "
                             "or --seed-file - to read stdin")
        try:
            with open(path, "rb") as stream:
                data = stream.read(SEED_FILE_LIMIT + 1)
        except OSError as exc:
            raise UsageError(f"seed file {path} cannot be read ({exc.strerror}); check its permissions") from None
    if len(data) > SEED_FILE_LIMIT:
        raise UsageError(f"{name} holds more than {SEED_FILE_LIMIT // (1 << 20)} MiB; a seed is the start of a text, "
                         "give a shorter one")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the "
                         "seed as UTF-8") from None
    return _normalise(text)


def _is_stdin(path: str) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(0))
    except OSError:
        return False


@click.command(cls=LibraryCommand, checks_first=True)
@model_option()
@click.option("--seed", callback=_normalised_seed,
              help="Text to start from; printed before the generated text. Line ends and a byte-order mark "
                   "are normalised as in a corpus. Give this or --seed-file.")
@click.option("--seed-file", metavar="PATH", default=None,
              help="Read the seed from this UTF-8 file (at most 1 MiB), or from stdin for -; kept as it is, "
                   "final newline included.")
@click.option("--input-file", metavar="PATH", default=None,
              help="For a seq2seq model, instead of --seed: one source a line (UTF-8; - reads stdin). One "
                   "output a line is printed, in order; the sources are decoded as a batch.")
@click.option("--length", type=click.IntRange(min=0), default=None,
              help="Tokens to generate (at most).  [default: 500; a seq2seq model: twice the source's tokens + 10, "
                   "at most its training.seq_length]")
@click.option("--temperature", type=click.FloatRange(min=0), multiple=True,
              help="Sampling temperature; 0 is greedy (always the most likely token). "
                   "Repeat the flag for one sample per temperature.  [default: 1.0]")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Sample among the K most likely tokens only (--interactive: candidates shown, default 10).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Nucleus sampling: the smallest set of tokens with probability mass P.")
@click.option("--beam-width", type=click.IntRange(min=1), default=None,
              help="Beam search with B beams: the most likely continuation instead of a sample.")
@click.option("--same-letters/--any-letters", "same_letters", default=None,
              help="A seq2seq model: hold each output to its source's letters and digits, in order (case, "
                   "punctuation and spaces free), or let it write any.  [default: the model's model.same_letters]")
@click.option("--repetition-penalty", type=click.FloatRange(min=1), default=1.0, show_default=True,
              help="Above 1 discourages tokens already in the seed or the sample.")
@click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Independent samples per temperature, generated as one batch.")
@click.option("--min-length", type=click.IntRange(min=0), default=0, show_default=True,
              help="Tokens to generate before a stop string or sentence end may end a sample.")
@click.option("--stop", multiple=True, callback=lambda ctx, param, values: tuple(_unescape(_utf8(v, "a stop string"))
                                                                             for v in values),
              help="End a sample before this string; repeatable. \\n, \\t and \\\\ in it mean a newline, a tab "
                   "and a backslash, so --stop '\\n\\n' ends at a blank line.")
@click.option("--end-at-sentence", is_flag=True, help="End each sample at the first sentence end after --min-length.")
@click.option("--strict", is_flag=True,
              help="Refuse seed words the model does not know instead of reading them as <unk>.")
@click.option("--label", "labels", multiple=True, metavar="SPEC",
              help="For a model trained with labels: write as NAME, as GROUP=NAME where label groups share "
                   "a name, or as a blend NAME:WEIGHT,NAME:WEIGHT. Repeat for several groups (--label "
                   "author=austen --label genre=novel), or for one sample per label (--label austen --label "
                   "melville). E.g. --label austen:0.7,melville:0.3. `textgen info` lists the labels.")
@click.option("--random-seed", type=click.IntRange(min=0), default=None,
              help="Seed for sampling; the same seed, model and flags give the same text. [default: random]")
@click.option("--output", "output_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the samples to this file (one per block, separated by blank lines); a regular "
                   "file is replaced whole at the end, a device, pipe or /dev/stdout is written to (appended "
                   "to when the shell opened it with >>). - writes them to stdout instead of the display.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document with samples, settings and timing.")
@click.option("--interactive", is_flag=True,
              help="Choose every next token yourself from the model's top candidates.")
def generate(model_path, seed, seed_file, input_file, length, temperature, top_k, top_p, beam_width,
             same_letters, repetition_penalty, num_samples, min_length, stop, end_at_sentence, strict, labels,
             random_seed, output_path, as_json, interactive):

    """Generate text from a trained model, continuing SEED.

    A single sample streams to the terminal as it is produced; several samples (from
    --num-samples or repeated --temperature) are printed when done. --beam-width returns
    the most likely continuation instead of a random one. --label picks the voice of a
    model trained with labels.

    A seq2seq model (model.type seq2seq) writes the output for the source SEED, or for every
    line of --input-file, greedily unless --temperature or --beam-width say otherwise.
    """
    from textgen.cli.translate_out import is_seq2seq_file, read_sources, translate_and_show
    from textgen.errors import UsageError

    if model_path is None:
        if input_file is not None:
            raise UsageError("--input-file gives sources to a seq2seq model; name it with --model")
        from textgen.pretrained import default_model_path

        model_path = default_model_path()
    seq2seq = input_file is not None or is_seq2seq_file(model_path)
    if seq2seq and sum(x is not None for x in (seed, seed_file, input_file)) != 1:
        raise UsageError("give a seq2seq model its sources with one of --seed, --seed-file or --input-file")
    if not seq2seq:
        _check_seed_flags(seed, seed_file, interactive)
    output_path = output_target(output_path, model_path)
    if output_path and output_path.fd == 1 and (as_json or interactive):
        raise UsageError(f"--output {output_path.name} is stdout, where {'--json' if as_json else '--interactive'} "
                         "already writes; give --output a file")
    if seed_file is not None:
        seed = _read_seed_file(seed_file)
    library()  # after the checks of the flags, the output and the seed file, which need no TensorFlow
    if seq2seq:
        clashing = [name for name, given in (
            ("--interactive", interactive), ("--num-samples", num_samples != 1), ("--stop", bool(stop)),
            ("--min-length", min_length != 0), ("--end-at-sentence", end_at_sentence), ("--label", bool(labels)),
            ("--repetition-penalty", repetition_penalty != 1.0), ("--strict", strict)) if given]
        # A seed file's last line end ends the source, as a line of --input-file's does.
        sources = read_sources(input_file) if input_file is not None else \
            [seed.removesuffix("\n") if seed_file is not None else seed]
        return translate_and_show(model_path, sources, length=length, temperature=temperature, top_k=top_k,
                                  top_p=top_p, beam_width=beam_width, same_letters=same_letters,
                                  random_seed=random_seed, output_path=output_path, as_json=as_json, clashing=clashing)
    if same_letters is not None:
        raise UsageError(f"--{'same' if same_letters else 'any'}-letters holds a seq2seq model's outputs to their "
                         "sources; this is a language model")
    length = 500 if length is None else length
    if interactive:
        clashing = [name for name, given in (
            ("--beam-width", beam_width is not None), ("--top-p", top_p is not None),
            ("--num-samples", num_samples != 1), ("--json", as_json), ("--stop", bool(stop)),
            ("--min-length", min_length != 0), ("--end-at-sentence", end_at_sentence),
            ("--repetition-penalty", repetition_penalty != 1.0), ("--random-seed", random_seed is not None),
            ("a second --temperature", len(temperature) > 1)) if given]
        return _interactive(model_path, seed, length, temperature, top_k, strict, labels, output_path, clashing)
    _sample_and_show(model_path, seed, length, temperature, top_k, top_p, beam_width, repetition_penalty,
                     num_samples, min_length, stop, end_at_sentence, strict, labels, random_seed, output_path,
                     as_json)


def _sample_and_show(model_path, seed, length, temperature, top_k, top_p, beam_width, repetition_penalty,
                     num_samples, min_length, stop, end_at_sentence, strict, labels, random_seed, output_path,
                     as_json) -> None:
    """Everything but --interactive: the samples, printed or streamed, as JSON, and to --output."""
    from textgen.generation.generate import Request, fresh_random_seed, load
    from textgen.generation.samplers import make_sampler

    random_seed = random_seed if random_seed is not None else fresh_random_seed()
    requests = [Request(seed=seed, length=length, sampler=make_sampler(t, top_k, top_p, beam_width),
                        num_samples=num_samples, random_seed=random_seed, repetition_penalty=repetition_penalty,
                        min_length=min_length, stop=tuple(stop), end_at_sentence=end_at_sentence, strict=strict,
                        labels=labels)
                for t in temperature or (None,)]
    generator = load(model_path)
    for request in requests:  # refuse what this model cannot do before any output
        unknown = generator.check(request)
    _warn_unknown(unknown)

    echo = _printer(keep_going=output_path is not None)
    if output_path and output_path.fd == 1:  # the samples go to stdout once, as --output writes them
        echo = _silent
    started = time.perf_counter()
    one = len(requests) == 1 and generator.label_vectors(labels, num_samples)[1] == 1  # labels may set the samples
    results = _samples(generator, requests, echo, streamed=one and not as_json, shown=not as_json)
    seconds = time.perf_counter() - started
    if as_json:
        # A seed that drew nothing (greedy, beam) and a temperature beam search never used are null.
        drew = any(req.sampler.stochastic for req in requests)
        settings = {"length": length, "num_samples": num_samples, "random_seed": random_seed if drew else None,
                    "repetition_penalty": repetition_penalty, "min_length": min_length, "stop": list(stop),
                    "end_at_sentence": end_at_sentence, "top_k": top_k, "top_p": top_p, "beam_width": beam_width,
                    "labels": list(labels),
                    "temperatures": [None if req.sampler.beam else req.sampler.temperature for req in requests]}
        echo(_json_document(seed, results, settings, seconds))
    if output_path:
        write_output(output_path, [seed + sample.text for sample, *_ in results])


def _check_seed_flags(seed, seed_file, interactive) -> None:
    from textgen.errors import UsageError

    if seed is not None and seed_file is not None:
        raise UsageError("--seed and --seed-file both give the seed; pass only one")
    if seed is None and seed_file is None:
        raise UsageError("Missing option '--seed' (or '--seed-file'): give the text to continue")
    if seed_file == "-" and interactive:
        raise UsageError("--seed-file - reads stdin, where --interactive reads your choices; give the seed in a file")


def _samples(generator, requests, echo, *, streamed: bool, shown: bool) -> list:
    """(sample, request) for every sample the requests ask for. `streamed`: the one sample is
    printed piece by piece as it is made; else, when `shown`, each is printed when all are done."""
    from textgen.generation.generate import Sample

    seed = requests[0].seed
    if streamed:
        echo(seed, nl=False)
        pieces = []
        for piece in generator.stream(requests[0]):
            pieces.append(piece)
            echo(piece, nl=False)
        echo()
        return [(Sample("".join(pieces), requests[0].length), requests[0], _labels_of(generator, requests[0])[0])]
    results = [(sample, req, labels) for req in requests
               for sample, labels in zip(generator.run(req), _labels_of(generator, req))]
    if shown:
        for i, (sample, req, labels) in enumerate(results):
            echo(f"--- sample {i + 1} ({_describe(req, labels)})")
            echo(seed + sample.text)
    return results


def _labels_of(generator, request) -> list[dict]:
    """Each sample's labels, {group: {label: weight}}, for the groups the specs name (none: [{}, ...])."""
    if not request.labels:
        return [{} for _ in range(request.num_samples)]
    space = generator.label_space
    rows, _ = space.mix(request.labels, request.num_samples)
    named = space.parse_specs(request.labels)
    return [{group.name: {label: round(w, 4) for label, w in zip(group.labels, row[start:start + len(group.labels)])
                          if w}
             for group, start in zip(space.groups, space.offsets()) if group.name in named}
            for row in rows]


def _interactive(model_path, seed, length, temperature, top_k, strict, labels, output_path, clashing):
    """--interactive: refuse flags that only mean something for batch generation, then run the terminal UI."""
    from textgen.cli.interactive import run_interactive
    from textgen.errors import UsageError
    from textgen.generation.generate import load

    if clashing:
        raise UsageError(f"--interactive lets you pick every token and does not combine with {', '.join(clashing)}")
    shown_temperature = temperature[0] if temperature else 1.0
    if shown_temperature <= 0:
        raise UsageError(f"--interactive shows probabilities at a temperature above 0, got {shown_temperature}")
    generator = load(model_path)
    _warn_unknown(generator.encode_seed(seed, strict)[1])
    text = run_interactive(generator, seed, candidates=top_k or 10, temperature=shown_temperature,
                           max_tokens=length, strict=strict, labels=labels)
    if output_path:
        write_output(output_path, [seed + text])


def _silent(text: str = "", nl: bool = True) -> None:
    pass


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
    from textgen.data.unknown import name_tokens

    if unknown:
        note(f"warning: seed words not in the vocabulary, read as <unk>: {name_tokens(unknown)}")


def _json_document(seed, results, settings, seconds) -> str:
    tokens = sum(sample.tokens for sample, _, _ in results)
    samples = []
    for sample, req, labels in results:
        entry = {"text": sample.text, "tokens": sample.tokens, "stopped_by": sample.stopped_by,
                 **req.sampler.describe()}
        if labels:
            entry["labels"] = labels
        if sample.log_probability is not None:
            entry["log_probability"] = round(sample.log_probability, 4)
        samples.append(entry)
    return json.dumps({"seed": seed, "samples": samples, "settings": settings, "seconds": round(seconds, 4),
                       "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None},
                      indent=2, ensure_ascii=False)


def _describe(request, labels: dict) -> str:
    described = [f"{k} {v}" for k, v in request.sampler.describe().items()]
    if labels:
        blends = {group: ",".join(name if weight == 1 else f"{name}:{weight:g}" for name, weight in blend.items())
                  for group, blend in labels.items()}
        shown = next(iter(blends.values())) if len(blends) == 1 else ", ".join(f"{g}={b}" for g, b in blends.items())
        described.append(f"label {shown}")
    return ", ".join(described)


def _unescape(text: str) -> str:
    """The stop string a shell user means: \\n, \\t and \\\\ become a newline, a tab and a backslash."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)
