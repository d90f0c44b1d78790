"""`textgen evaluate`."""

from __future__ import annotations

import json

import click

from textgen.cli.command import LibraryCommand
from textgen.cli.params import TextEncoding, model_option
from textgen.cli.quiet import library, progress_stream
from textgen.config import INT_LIMITS
from textgen.config.schema import LABEL_SOURCES


@click.command(cls=LibraryCommand, checks_first=True)
@model_option()
@click.option("--text", "text_path", type=click.Path(allow_dash=True),
              help="The held-out text file to score (text the model did not train on); - reads stdin. With "
                   "--labels: a labelled corpus (a folder of label sub-folders, a JSON Lines, CSV or TSV file).")
@click.option("--config", "config_name", default=None,
              help="Instead of --text: the labelled corpus of this config (a preset name or a YAML file), "
                   "scored label by label; with --validation-split, the held-out tails training uses.")
@click.option("--pairs", "pairs_path", multiple=True, metavar="PATH",
              help="For a seq2seq model, instead of --text: a pairs file (tab-separated or JSON Lines, as "
                   "training reads them) whose sources are decoded and scored against their targets: exact "
                   "match, character error rate and chrF. Repeatable.")
@click.option("--beam-width", type=click.IntRange(min=1), default=None,
              help="With --pairs: decode with beam search of this width.  [default: greedy]")
@click.option("--same-letters/--any-letters", "same_letters", default=None,
              help="With --pairs: hold each output to its source's letters and digits, in order (case, "
                   "punctuation and spaces free), or let it write any.  [default: the model's model.same_letters]")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="With --pairs: score the first N pairs only.  [default: all]")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON document.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Windows scored per step.")
@click.option("--seq-length", type=click.IntRange(1, INT_LIMITS["training.seq_length"]), default=None,
              help="Tokens of context per window.  [default: the model's training.seq_length]")
@click.option("--encoding", type=TextEncoding(), default="utf-8", show_default=True,
              help="The text file's encoding.")
@click.option("--skip-unknown", is_flag=True,
              help="Leave out characters (or words) the model's vocabulary lacks instead of failing on them "
                   "(word models otherwise score them as <unk>).")
@click.option("--labels", "label_source", type=click.Choice(LABEL_SOURCES), default=None,
              help="Score --text label by label, reading its labels like corpus.labels.  [default: the "
                   "corpus.labels the model trained with; a file is plain text to a model labelled by folders]")
@click.option("--label-column", "label_columns", multiple=True,
              help="With --labels: a field holding labels, one group each (repeatable; folders: the group's "
                   "name).  [default: the model's corpus.label_columns]")
@click.option("--text-column", default=None,
              help="With --labels jsonl/csv/tsv: the field holding the text.  [default: the model's "
                   "corpus.text_column]")
@click.option("--validation-split", is_flag=True,
              help="With labels: score only the tail of each label's text that training holds out "
                   "(corpus.validation_fraction): on the training corpus, the run's validation split.")
def evaluate(model_path, text_path, config_name, pairs_path, beam_width, same_letters, limit, as_json, batch_size,
             seq_length, encoding, skip_unknown, label_source, label_columns, text_column, validation_split):
    """Measure a model on held-out text: loss, perplexity and bits per character.

    Without --model, the pretrained model shipped with textgen is measured.

    The text is read in blocks and scored in batches, so a file of any size fits in
    memory; on a terminal a line on stderr shows the characters scored and the time left.
    Scoring is validation's: windows of seq_length tokens, each predicted from a fresh
    state, but every token is scored (validation during training leaves out its last
    partial batch).

    A model trained on labelled text (corpus.labels) scores a labelled --text label by
    label, each token under its own label, reading it as its corpus was read unless
    --labels says otherwise; --labels none scores plain text as text without a label.

    A seq2seq model is scored on --pairs: its outputs against the targets.
    """
    from textgen.data.corpus import check_text_path

    if pairs_path or beam_width is not None or limit is not None or same_letters is not None:
        return _evaluate_pairs(model_path, pairs_path, beam_width, same_letters, limit, encoding, as_json,
                               language_model_input=text_path is not None or config_name is not None)
    if (text_path is None) == (config_name is None):
        raise click.UsageError("give the text to score with --text FILE, or a labelled corpus with --config NAME "
                               "(a seq2seq model: pairs with --pairs FILE)")
    if config_name is not None:
        _evaluate_config(model_path, config_name, as_json, batch_size, seq_length, skip_unknown, validation_split,
                         other_options=label_source or label_columns or text_column)
        return
    labelled = label_source not in (None, "none")
    if label_source == "none" or (label_source is None and not _is_folder(text_path)):
        check_text_path(text_path)  # before TensorFlow and the model load: a wrong path is answered at once
    library()
    from textgen.data.progress import ReadProgress
    from textgen.evaluation.evaluate import evaluate_file
    from textgen.generation.generate import load_keras_model

    if model_path is None:
        from textgen.pretrained import default_model_path

        model_path = default_model_path()
    model = load_keras_model(model_path)
    if labelled or (label_source is None and _reads_as_labelled(model, text_path)):
        _evaluate_labelled(model, model_path, text_path, as_json, batch_size, seq_length, encoding, skip_unknown,
                           label_source, label_columns, text_column, validation_split)
        return
    if validation_split or label_columns or text_column:
        raise click.UsageError("--validation-split, --label-column and --text-column apply to labelled text; "
                               "give --labels too")
    check_text_path(text_path)
    shown = progress_stream(logs=False)  # progress only where someone watches; logs stay clean
    with ReadProgress(f"scoring {text_path}:", None, shown, unit="characters") as progress:
        result = evaluate_file(model, text_path, encoding=encoding, seq_length=seq_length, batch_size=batch_size,
                               skip_unknown=skip_unknown, progress=progress)
    _print_plain(result, model_path, text_path, skip_unknown, as_json)


def _print_plain(result, model_path, text_path, skip_unknown, as_json) -> None:
    if as_json:
        click.echo(json.dumps({"model": str(model_path), **result.to_dict()}, indent=2))
        return
    unknown = ""
    if result.unknown_tokens:
        unknown = f", {result.unknown_tokens:,} unknown {'left out' if skip_unknown else 'scored as <unk>'}"
    click.echo(f"model: {model_path} ({result.level} level)")
    click.echo(f"text: {text_path} ({result.characters:,} characters, {result.tokens:,} tokens scored with "
               f"{result.seq_length} tokens of context{unknown})")
    click.echo(f"loss: {result.loss:.4f} nats per token")
    click.echo(f"perplexity: {result.perplexity:.3f}")
    click.echo(f"bits per character: {result.bits_per_char:.4f}")


def _evaluate_pairs(model_path, pairs_path, beam_width, same_letters, limit, encoding, as_json,
                    language_model_input) -> None:
    if not pairs_path:
        raise click.UsageError("--beam-width, --same-letters/--any-letters and --limit go with --pairs, which "
                               "scores a seq2seq model")
    if language_model_input:
        raise click.UsageError("--pairs scores a seq2seq model, --text and --config a language model; give one")
    if model_path is None:
        raise click.UsageError("--pairs scores a seq2seq model; give it with --model")
    library()
    from textgen.evaluation.pairs_eval import describe_scores, evaluate_pairs
    from textgen.generation.seq2seq import Translator

    translator = Translator.load(model_path, same_letters)
    scores = evaluate_pairs(translator, pairs_path, encoding=encoding, beam_width=beam_width, limit=limit)
    if as_json:
        click.echo(json.dumps({"model": str(model_path), **scores}, indent=2, ensure_ascii=False))
        return
    click.echo(f"model: {model_path}")
    click.echo(describe_scores(scores))


def _is_folder(path: str) -> bool:
    from pathlib import Path

    return path != "-" and Path(path).is_dir()


def _reads_as_labelled(model, text_path: str) -> bool:
    """Whether --text is labelled as the model's corpus was: a file is plain text to a model
    whose labels came from folders."""
    from textgen.models.layers import find_token_embedding

    source = find_token_embedding(model).model_card.get("config", {}).get("corpus", {}).get("labels", "none")
    return source != "none" and (source != "folders" or _is_folder(text_path))


def _evaluate_config(model_path, config_name, as_json, batch_size, seq_length, skip_unknown, validation_split,
                     other_options) -> None:
    from textgen.config import load_config

    if other_options:
        raise click.UsageError("--labels, --label-column and --text-column go with --text; --config's corpus "
                               "section says how its text is labelled")
    corpus = load_config(config_name, check_corpus=True).corpus
    if corpus.labels == "none":
        raise click.UsageError(f"the corpus of {config_name} has no labels (corpus.labels is none); score plain "
                               "text with --text")
    library()
    from textgen.evaluation.labelled import evaluate_labelled
    from textgen.generation.generate import load_keras_model

    if model_path is None:
        from textgen.pretrained import default_model_path

        model_path = default_model_path()
    model = load_keras_model(model_path)
    result = evaluate_labelled(model, corpus, seq_length=seq_length, batch_size=batch_size,
                               validation_only=validation_split, skip_unknown=skip_unknown)
    _print_labelled(result, model_path, f"the corpus of {config_name}", corpus, as_json, validation_split)


def _evaluate_labelled(model, model_path, text_path, as_json, batch_size, seq_length, encoding, skip_unknown,
                       label_source, label_columns, text_column, validation_split) -> None:
    from pathlib import Path

    from textgen.evaluation.labelled import evaluate_labelled, labelled_corpus_config

    if text_path == "-":
        raise click.UsageError("labelled text cannot come from stdin; give its file or folder with --text")
    if not Path(text_path).exists():
        raise click.UsageError(f"text {text_path} does not exist; check the path")
    corpus = labelled_corpus_config(model, Path(text_path).resolve(), labels=label_source,
                                    label_columns=label_columns, text_column=text_column, encoding=encoding)
    result = evaluate_labelled(model, corpus, seq_length=seq_length, batch_size=batch_size,
                               validation_only=validation_split, skip_unknown=skip_unknown)
    _print_labelled(result, model_path, text_path, corpus, as_json, validation_split)


def _print_labelled(result, model_path, text_name, corpus, as_json, validation_split) -> None:
    if as_json:
        click.echo(json.dumps({"model": str(model_path), **result.to_dict()}, indent=2))
        return
    part = "the held-out tail of each label's text" if validation_split else "all of it"
    click.echo(f"model: {model_path} ({result.level} level)")
    click.echo(f"text: {text_name} ({corpus.labels}; {part}: {result.characters:,} characters, {result.tokens:,} "
               f"tokens scored with {result.seq_length} tokens of context)")
    click.echo(f"loss: {result.loss:.4f} nats per token, {result.bits_per_char:.4f} bits per character")
    click.echo("per label (each token under its own label):")
    width = max(len(f"{s.group}={s.label}") for s in result.labels)
    for score in result.labels:
        name = f"{score.group}={score.label}"
        click.echo(f"  {name:<{width}}  {score.tokens:>9,} tokens  loss {score.loss:.4f}  "
                   f"bits per character {score.bits_per_char:.4f}")
