"""`textgen generate`."""

from __future__ import annotations

import json
import os
import time

import click


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="A model.keras file written by `textgen train`.")
@click.option("--seed", required=True, help="Text to start from; printed before the generated text.")
@click.option("--length", type=int, default=500, show_default=True, help="Tokens to generate.")
@click.option("--temperature", type=float, multiple=True,
              help="Sampling temperature; 0 is greedy (always the most likely token). "
                   "Repeat the flag for one sample per temperature.  [default: 1.0]")
@click.option("--top-k", type=int, default=None, help="Sample among the K most likely tokens only.")
@click.option("--top-p", type=float, default=None,
              help="Nucleus sampling: the smallest set of tokens with probability mass P, in (0, 1].")
@click.option("--repetition-penalty", type=float, default=1.0, show_default=True,
              help="Above 1 discourages tokens already in the seed or the sample.")
@click.option("--num-samples", type=int, default=1, show_default=True,
              help="Independent samples per temperature, generated as one batch.")
@click.option("--min-length", type=int, default=0, show_default=True,
              help="Tokens to generate before a stop string or sentence end may end a sample.")
@click.option("--stop", multiple=True, help="End a sample before this string; repeatable.")
@click.option("--end-at-sentence", is_flag=True, help="End each sample at the first sentence end after --min-length.")
@click.option("--strict", is_flag=True,
              help="Refuse seed words the model does not know instead of reading them as <unk>.")
@click.option("--random-seed", type=int, default=None,
              help="Seed for sampling; the same seed, model and flags give the same text. [default: random]")
@click.option("--output", "output_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the samples to this file (one per block, separated by blank lines).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document with samples, settings and timing.")
def generate(model_path, seed, length, temperature, top_k, top_p, repetition_penalty, num_samples, min_length,
             stop, end_at_sentence, strict, random_seed, output_path, as_json):
    """Generate text from a trained model, continuing SEED.

    A single sample streams to the terminal as it is produced; several samples (from
    --num-samples or repeated --temperature) are printed when done.
    """
    from textgen.generate import Request, load
    from textgen.samplers import make_sampler

    temperatures = temperature or (1.0,)
    random_seed = random_seed if random_seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
    requests = [Request(seed=seed, length=length, sampler=make_sampler(t, top_k, top_p), num_samples=num_samples,
                        random_seed=random_seed, repetition_penalty=repetition_penalty, min_length=min_length,
                        stop=tuple(stop), end_at_sentence=end_at_sentence, strict=strict) for t in temperatures]
    generator = load(model_path)
    _, unknown = generator.encode_seed(seed, strict)  # report an unusable seed before any output
    if unknown:
        shown = ", ".join(repr(t) for t in unknown[:10])
        click.echo(f"warning: seed words not in the vocabulary, read as <unk>: {shown}", err=True)

    started = time.perf_counter()
    if len(requests) == 1 and num_samples == 1 and not as_json:
        click.echo(seed, nl=False)
        pieces = []
        for piece in generator.stream(requests[0]):
            pieces.append(piece)
            click.echo(piece, nl=False)
        click.echo()
        texts = [("".join(pieces), requests[0])]
    else:
        texts = [(sample.text, req) for req in requests for sample in generator.run(req)]
        if not as_json:
            for i, (text, req) in enumerate(texts):
                click.echo(f"--- sample {i + 1} ({_describe(req)})")
                click.echo(seed + text)
    seconds = time.perf_counter() - started

    if as_json:
        click.echo(json.dumps({
            "seed": seed,
            "samples": [{"text": text, **req.sampler.describe()} for text, req in texts],
            "settings": {"length": length, "num_samples": num_samples, "random_seed": random_seed,
                         "repetition_penalty": repetition_penalty, "min_length": min_length, "stop": list(stop),
                         "end_at_sentence": end_at_sentence, "top_k": top_k, "top_p": top_p,
                         "temperatures": list(temperatures)},
            "seconds": round(seconds, 4),
        }, indent=2, ensure_ascii=False))
    if output_path:
        from textgen.saving import write_text_atomic

        write_text_atomic(output_path, "\n\n".join(seed + text for text, _ in texts) + "\n")


def _describe(request) -> str:
    return ", ".join(f"{k} {v}" for k, v in request.sampler.describe().items())
