"""Training and evaluating a conditioned model end to end on tiny labelled corpora."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CORPORA
from textgen.cli.main import cli
from textgen.data.dataset import split_labelled
from textgen.data.prepare import prepare_corpus
from textgen.config import load_config
from textgen.models.layers import find_label_embedding, find_token_embedding
from textgen.saving import load_keras_model
from textgen.training.checkpoint import read_state


def _text(name: str, start: int, size: int) -> str:
    return (CORPORA / name).read_text(encoding="utf-8")[start:start + size]


def _folders(root):
    for author, name in (("austen", "pride_and_prejudice.txt"), ("melville", "moby_dick_four_chapters.txt")):
        (root / author).mkdir(parents=True)
        (root / author / "book.txt").write_text(_text(name, 3000, 2500), encoding="utf-8")
    (root / "plain.txt").write_text(_text("tinyshakespeare.txt", 0, 1000), encoding="utf-8")
    return root


def _settings(corpus, out, **extra) -> list[str]:
    settings = {
        "corpus.paths": f"['{corpus}']", "corpus.labels": "folders", "corpus.label_columns": "[author]",
        "model.cell": "lstm", "model.embedding_dim": 16, "model.units": 24, "training.seq_length": 24,
        "training.batch_size": 8, "training.epochs": 1, "training.steps_per_epoch": 3,
        "training.sample_every": 0, "output.dir": str(out),  # one test turns the samples on
    }
    settings.update(extra)
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def _train(*args):
    result = CliRunner().invoke(cli, ["train", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny LSTM trained on two authors' folders and unlabelled text."""
    root = tmp_path_factory.mktemp("labelled")
    corpus, out = _folders(root / "data"), root / "run"
    output = _train(*_settings(corpus, out))
    return corpus, out, output


def test_a_conditioned_model_prints_samples_without_a_label(tmp_path):
    corpus = _folders(tmp_path / "data")
    output = _train(*_settings(corpus, tmp_path / "run", **{"training.sample_every": 1,
                                                           "training.sample_temperatures": "[0]"}))
    assert "samples switched off" not in output
    assert "temperature 0" in output, output


def test_training_on_folders_makes_a_conditioned_model_whose_card_has_the_labels(trained):
    corpus, out, output = trained
    assert "labels: author: austen, melville (and any)" in output
    model = load_keras_model(out / "model.keras")
    card = find_token_embedding(model).model_card
    assert card["labels"] == [{"name": "author", "labels": ["any", "austen", "melville"]}]
    assert find_label_embedding(model).embeddings.shape == (3, 16)
    assert [i.name for i in model.inputs] == ["token_ids", "label_ids"]
    assert read_state(out)["card"]["labels"] == card["labels"]


def test_a_transformer_trains_on_jsonl_with_two_label_groups(tmp_path):
    lines = [{"text": _text("pride_and_prejudice.txt", 3000 + 700 * i, 700), "author": "austen",
              "genre": "novel" if i % 2 else None} for i in range(4)]
    lines += [{"text": _text("moby_dick_four_chapters.txt", 3000 + 700 * i, 700), "author": "melville",
               "genre": "sea"} for i in range(3)]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    output = _train(*_settings(path, tmp_path / "run", **{
        "corpus.labels": "jsonl", "corpus.label_columns": "[author, genre]", "model.type": "transformer",
        "model.heads": 2, "model.context_length": 32}))
    assert "labels: author: austen, melville (and any); genre: novel, sea (and any)" in output
    card = find_token_embedding(load_keras_model(tmp_path / "run" / "model.keras")).model_card
    assert [group["labels"] for group in card["labels"]] == [["any", "austen", "melville"], ["any", "novel", "sea"]]


def test_a_resumed_run_keeps_its_label_space(trained, tmp_path):
    corpus, _, _ = trained
    out = tmp_path / "run"
    _train(*_settings(corpus, out))
    before = find_label_embedding(load_keras_model(out / "model.keras")).groups
    output = _train("--resume", "--output", str(out), "--set", "training.epochs=2")
    assert "labels: author: austen, melville (and any)" in output and "Epoch 2/2" in output
    assert find_label_embedding(load_keras_model(out / "model.keras")).groups == before


def test_fine_tuning_keeps_the_models_labels_for_a_corpus_with_fewer(trained, tmp_path):
    corpus, out, _ = trained
    output = _train("--init-from", str(out / "model.keras"),
                    *_settings(corpus / "melville", tmp_path / "ft", **{"corpus.labels": "none"}))
    assert "(this corpus has none: it trains as any)" in output
    model = load_keras_model(tmp_path / "ft" / "model.keras")
    assert find_token_embedding(model).model_card["labels"][0]["labels"] == ["any", "austen", "melville"]


def test_fine_tuning_joins_labels_as_the_model_does(trained, tmp_path):
    corpus, out, _ = trained
    assert find_label_embedding(load_keras_model(out / "model.keras")).merge == "concat"  # an LSTM's, by auto
    # A model whose labels are added, its card written before model.label_merge existed
    added = tmp_path / "added"
    _train(*_settings(corpus, added, **{"model.label_merge": "add"}))
    model = load_keras_model(added / "model.keras")
    card = find_token_embedding(model).model_card
    del card["config"]["model"]["label_merge"]
    model.save(added / "old.keras")
    _train("--init-from", str(added / "old.keras"), *_settings(corpus, tmp_path / "ft"))
    assert find_label_embedding(load_keras_model(tmp_path / "ft" / "model.keras")).merge == "add"


def test_a_labelled_corpus_cannot_fine_tune_a_model_without_labels(trained, tmp_path, small_corpus):
    corpus, _, _ = trained
    _train(*_settings(small_corpus, tmp_path / "plain", **{"corpus.labels": "none"}))
    result = CliRunner().invoke(cli, ["train", "--init-from", str(tmp_path / "plain" / "model.keras"),
                                      *_settings(corpus, tmp_path / "ft")])
    assert result.exit_code != 0
    assert "has no labels, so it cannot learn a labelled corpus (corpus.labels=folders)" in result.output
    assert "Traceback" not in result.output
    # A model without labels is still scored label by label, for comparing it with a conditioned one.
    report = json.loads(_evaluate("--model", str(tmp_path / "plain" / "model.keras"), "--text", str(corpus),
                                  "--labels", "folders", "--label-column", "author", "--skip-unknown", "--json"))
    assert [score["label"] for score in report["labels"]] == ["any", "austen", "melville"]


def test_a_bad_labelled_corpus_stops_train_with_one_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n{"text": "broken"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["train", *_settings(path, tmp_path / "run", **{"corpus.labels": "jsonl",
                                                                                       "corpus.label_columns": "[label]"})])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {path} line 2 is not valid JSON")


# --------------------------------------------------------------------------- evaluate


def _evaluate(*args):
    result = CliRunner().invoke(cli, ["evaluate", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_evaluate_scores_a_labelled_folder_label_by_label(trained):
    corpus, out, _ = trained
    report = json.loads(_evaluate("--model", str(out / "model.keras"), "--text", str(corpus), "--json"))
    scores = {score["label"]: score for score in report["labels"]}
    assert set(scores) == {"any", "austen", "melville"}
    texts = [path.read_text(encoding="utf-8") for path in corpus.rglob("*.txt")]
    characters = sum(len(text) + (not text.endswith("\n")) for text in texts)  # each file ends with a newline
    assert sum(score["tokens"] for score in scores.values()) == report["tokens"] == characters - 1
    total = sum(score["loss"] * score["tokens"] for score in scores.values())
    assert total / report["tokens"] == pytest.approx(report["loss"])
    # Plain text is read as `any`: scoring the unlabelled file alone gives the same loss per token,
    # up to the one token the per-label score predicts across the join.
    plain = json.loads(_evaluate("--model", str(out / "model.keras"), "--text", str(corpus / "plain.txt"), "--json"))
    assert plain["loss"] == pytest.approx(scores["any"]["loss"], rel=0.01)
    text = _evaluate("--model", str(out / "model.keras"), "--text", str(corpus))
    assert "per label (each token under its own label):" in text and "author=melville" in text


def test_evaluate_validation_split_is_the_runs_per_label_validation_text(trained):
    corpus, out, _ = trained
    report = json.loads(_evaluate("--model", str(out / "model.keras"), "--text", str(corpus), "--json",
                                  "--validation-split"))
    config = load_config(None, _settings(corpus, out)[1::2])
    prepared = prepare_corpus(config, out / "cache", progress=None)
    _, val_ids, _, val_labels = split_labelled(prepared.ids, prepared.labels, prepared.segments, 0.1, 24)
    assert report["split"] == "validation" and report["tokens"] == len(val_ids) - 1
    counts = {score["label"]: score["tokens"] for score in report["labels"]}
    assert counts["melville"] == np.count_nonzero(val_labels[1:, 0] == 2)


def test_evaluate_config_scores_that_configs_labelled_corpus(trained, tmp_path):
    corpus, out, _ = trained
    config = tmp_path / "files.yaml"
    config.write_text(f"corpus:\n  paths: ['{corpus / 'austen'}', '{corpus / 'melville'}']\n  labels: files\n"
                      "  label_columns: [author]\n  file_labels: [austen, melville]\n", encoding="utf-8")
    model = str(out / "model.keras")
    by_config = json.loads(_evaluate("--model", model, "--config", str(config), "--json", "--validation-split"))
    by_folder = json.loads(_evaluate("--model", model, "--text", str(corpus), "--json", "--validation-split"))
    # The same books under the same labels: the same held-out tails, whichever source labels them. The
    # folder's unlabelled text comes first, so there the first austen token is scored too (one more),
    # and the scoring windows start elsewhere (each window starts from a fresh state).
    for report in (by_config, by_folder):
        report["labels"] = {s["label"]: (s["tokens"], s["loss"]) for s in report["labels"]}
    assert set(by_config["labels"]) == {"austen", "melville"}
    assert by_config["labels"]["melville"][0] == by_folder["labels"]["melville"][0]
    assert by_config["labels"]["austen"][0] == by_folder["labels"]["austen"][0] - 1
    for label in ("austen", "melville"):
        assert by_config["labels"][label][1] == pytest.approx(by_folder["labels"][label][1], rel=0.01)
    for args, message in ((["--config", str(config), "--text", str(corpus)], "with --text FILE, or"),
                          ([], "with --text FILE, or"),
                          (["--config", "quick"], "has no labels"),
                          (["--config", str(config), "--labels", "csv"], "go with --text")):
        result = CliRunner().invoke(cli, ["evaluate", "--model", model, *args])
        assert result.exit_code == 2 and message in result.output, result.output


def test_evaluate_with_labels_needs_a_labelled_text(trained, tmp_path):
    _, out, _ = trained
    path = tmp_path / "docs.csv"
    path.write_text("text,author\nhello,\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(out / "model.keras"), "--text", str(path),
                                      "--labels", "csv", "--label-column", "author"])
    assert result.exit_code == 1 and "no document of the corpus has a label in its 'author' field" in result.output
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(out / "model.keras"), "--text", str(path),
                                      "--labels", "none", "--validation-split"])
    assert result.exit_code == 2 and "give --labels too" in result.output


def test_prepare_reports_the_labels(tmp_path):
    corpus = _folders(tmp_path / "data")
    result = CliRunner().invoke(cli, ["prepare", *_settings(corpus, tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "labels: author: austen, melville (and any)"
    assert (tmp_path / "run" / "cache" / "labels.bin").exists()
