"""A seq2seq model end to end through the CLI: train, resume, generate, evaluate, attention."""

from __future__ import annotations

import json

import keras
import pytest
from click.testing import CliRunner

from conftest import CORPORA
from textgen.cli.main import cli
from textgen.config import load_config
from textgen.errors import ConfigError
from textgen.generation.seq2seq import Translator
from textgen.models.architecture import model_kind
from textgen.models.layers import find_token_embedding
from textgen.training.checkpoint import read_state

DATES = CORPORA / "dates_train.tsv"


def _settings(pairs, out, **extra) -> list[str]:
    settings = {
        "corpus.paths": f"['{pairs}']", "model.type": "seq2seq", "model.cell": "gru", "model.bidirectional": "true",
        "model.embedding_dim": 16, "model.units": 32, "training.seq_length": 40, "training.batch_size": 32,
        "training.epochs": 2, "training.steps_per_epoch": 15, "training.learning_rate": 0.01,
        "training.sample_every": 0, "output.dir": str(out),
    }
    settings.update(extra)
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def _run(*args, ok=True):
    result = CliRunner().invoke(cli, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GRU encoder-decoder trained on 600 date pairs; (pairs file, run directory, train's output)."""
    root = tmp_path_factory.mktemp("seq2seq")
    pairs = root / "dates.tsv"
    pairs.write_text("".join(DATES.read_text(encoding="utf-8").splitlines(keepends=True)[:600]), encoding="utf-8")
    out = root / "run"
    output = _run("train", *_settings(pairs, out)).output
    return pairs, out, output


def _sources(pairs, n):
    return [line.split("\t")[0] for line in pairs.read_text(encoding="utf-8").splitlines()[:n]]


def test_training_reports_the_pairs_and_saves_one_file_with_both_vocabularies(trained):
    pairs, out, output = trained
    assert "pairs: 540 training, 60 validating (char level, vocabulary" in output
    model = keras.models.load_model(out / "model.keras")
    assert model_kind(model) == "seq2seq"
    source, target = (layer for layer in model.layers if isinstance(layer, type(find_token_embedding(model))))
    assert set("2026-12-04") <= set(target.tokenizer["vocabulary"])
    assert set("December") <= set(source.tokenizer["vocabulary"])
    assert find_token_embedding(model).model_card["architecture"]["type"] == "seq2seq"


def test_generate_decodes_the_seed_as_the_library_does(trained):
    pairs, out, _ = trained
    source = _sources(pairs, 1)[0]
    printed = _run("generate", "--model", str(out / "model.keras"), "--seed", source).output
    assert printed.splitlines()[-1] == Translator.load(out / "model.keras").translate([source])[0]


def test_generate_input_file_prints_one_output_a_line_in_order(trained, tmp_path):
    pairs, out, _ = trained
    sources = _sources(pairs, 5)
    given = tmp_path / "sources.txt"
    given.write_text("\n".join(sources) + "\n", encoding="utf-8")
    written = tmp_path / "outputs.txt"
    printed = _run("generate", "--model", str(out / "model.keras"), "--input-file", str(given),
                   "--output", str(written)).output.splitlines()
    expected = Translator.load(out / "model.keras").translate(sources)
    assert printed[-5:] == expected
    assert written.read_text(encoding="utf-8") == "\n".join(expected) + "\n"


def test_generate_json_and_beam_search(trained):
    pairs, out, _ = trained
    sources = _sources(pairs, 2)
    document = json.loads(_run("generate", "--model", str(out / "model.keras"), "--seed", sources[0],
                               "--beam-width", "3", "--json").output)
    assert document["sources"] == sources[:1] and document["decoding"] == "beam"
    assert document["outputs"] == Translator.load(out / "model.keras").translate(sources[:1], method="beam",
                                                                                 beam_width=3)


def test_language_model_flags_are_refused_for_a_seq2seq_model_in_one_line(trained):
    _, out, _ = trained
    result = _run("generate", "--model", str(out / "model.keras"), "--seed", "4 Dec 2026", "--num-samples", "2",
                  ok=False)
    assert result.exit_code == 2
    assert "--num-samples apply to language models" in result.output.replace("applies", "apply")
    assert "Traceback" not in result.output


def test_evaluate_pairs_scores_the_outputs_against_the_targets(trained):
    pairs, out, _ = trained
    scores = json.loads(_run("evaluate", "--model", str(out / "model.keras"), "--pairs", str(pairs),
                             "--limit", "40", "--json").output)
    lines = pairs.read_text(encoding="utf-8").splitlines()[:40]
    outputs = Translator.load(out / "model.keras").translate([line.split("\t")[0] for line in lines])
    right = sum(output == line.split("\t")[1] for output, line in zip(outputs, lines))
    assert scores["pairs"] == 40
    assert scores["exact_match"] == pytest.approx(right / 40)
    assert 0 <= scores["chrf"] <= 100 and scores["cer"] >= 0
    assert scores["source_cer"] > 0.3  # "Friday, 4 December 2026" is far from "2026-12-04"


def test_attention_draws_a_png_and_never_replaces_a_file(trained, tmp_path):
    _, out, _ = trained
    picture = tmp_path / "attention.png"
    output = _run("attention", "--model", str(out / "model.keras"), "--seed", "4 Dec 2026",
                  "--output", str(picture)).output
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {picture}" in output
    picture.write_bytes(b"mine")
    again = _run("attention", "--model", str(out / "model.keras"), "--seed", "4 Dec 2026", "--output", str(picture),
                 ok=False)
    assert again.exit_code == 2 and "exists" in again.output
    assert picture.read_bytes() == b"mine"


@pytest.mark.slow  # two more training runs; resume itself is tested for every run in make test
def test_a_seq2seq_run_resumes_where_it_stopped(trained, tmp_path):
    pairs, out, _ = trained
    run = tmp_path / "run"
    _run("train", *_settings(pairs, run, **{"training.epochs": 1}))
    assert read_state(run)["global_step"] == 15
    _run("train", "--resume", *_settings(pairs, run, **{"training.epochs": 2}))
    assert read_state(run)["global_step"] == 30
    assert len((run / "history.csv").read_text().splitlines()) == 3  # a header and two epochs


def test_a_pairs_file_without_a_tab_stops_training_with_one_line(tmp_path):
    pairs = tmp_path / "bad.tsv"
    pairs.write_text("4 Dec 2026\t2026-12-04\nno tab here\n", encoding="utf-8")
    result = _run("train", *_settings(pairs, tmp_path / "run"), ok=False)
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and str(pairs) in last and "2" in last and "tab" in last
    assert not (tmp_path / "run" / "model.keras").exists()


def test_prepare_has_nothing_to_do_for_a_seq2seq_run(tmp_path):
    result = _run("prepare", *_settings(DATES, tmp_path / "run"), ok=False)
    assert result.exit_code != 0 and "textgen train" in result.output


@pytest.mark.parametrize("setting, message", [
    ("model.cell=simple_rnn", "model.cell must be one of lstm, gru for model.type=seq2seq"),
    ("model.attention_type=dot", "model.attention_type must be one of none, additive, multiplicative, local"),
    ("corpus.labels=files", "corpus.labels (files) conditions a language model"),
])
def test_seq2seq_config_errors_name_the_key(setting, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, ["model.type=seq2seq", setting, "corpus.file_labels=[a]"]
                    if "labels" in setting else ["model.type=seq2seq", setting])


@pytest.mark.parametrize("preset", ["dates", "restore"])
def test_the_seq2seq_presets_name_their_shipped_pairs(preset):
    config = load_config(preset, check_corpus=True)
    assert config.model.type == "seq2seq"
    assert config.training.decay_over == "time" and config.training.max_minutes


def test_info_describes_the_encoder_decoder_from_the_file(trained):
    _, out, _ = trained
    facts = json.loads(_run("info", str(out / "model.keras"), "--json").output)
    assert facts["type"] == "seq2seq" and facts["cell"] == "gru" and facts["bidirectional"] is True
    assert facts["layers"] == 1 and facts["decoder_layers"] == 1 and facts["attention_type"] == "additive"
    assert facts["vocabulary_size"] == facts["target_vocabulary_size"]  # shared by default
    assert "coverage" not in facts


def test_seq2seq_commands_refuse_a_language_model_in_one_line(trained_model, tmp_path):
    for args in (["attention", "--model", str(trained_model), "--seed", "abc", "--output", str(tmp_path / "a.png")],
                 ["evaluate", "--model", str(trained_model), "--pairs", str(DATES), "--limit", "2"]):
        result = _run(*args, ok=False)
        assert result.exit_code == 2, result.output
        assert "not a seq2seq model" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "a.png").exists()


def test_a_missing_pairs_file_is_a_usage_error(trained, tmp_path):
    _, out, _ = trained
    result = _run("evaluate", "--model", str(out / "model.keras"), "--pairs", str(tmp_path / "none.tsv"), ok=False)
    assert result.exit_code == 2 and "none.tsv does not exist" in result.output.strip().splitlines()[-1]
