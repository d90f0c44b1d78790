"""Word-level models end to end: train, save, load in a fresh process, generate, describe."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import textgen
from conftest import CORPORA, tiny_overrides
from textgen.cli.main import cli
from textgen.config import ModelConfig, TokenizerConfig, load_config
from textgen.generation.generate import Generator
from textgen.models.builder import build_model
from textgen.data.tokenizer import UNK, WordTokenizer

SEED = "There now is your city of the sea, I"


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    """A tiny word-level GRU on the first 15,000 characters of Moby Dick; (model path, log lines)."""
    from textgen.training.train import train

    root = tmp_path_factory.mktemp("word")
    corpus = root / "moby_head.txt"
    corpus.write_text((CORPORA / "moby_dick_four_chapters.txt").read_text(encoding="utf-8")[:15_000],
                      encoding="utf-8")
    config = load_config(None, tiny_overrides(corpus, root / "run", **{
        "tokenizer.level": "word", "tokenizer.min_count": 2, "training.seq_length": 16}))
    lines = []
    result = train(config, echo=lines.append, verbose=0)
    return result.model_path, lines


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_training_logs_perplexity_not_bits_per_char(word_run):
    model_path, lines = word_run
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert epochs and all("perplexity" in line and "bits/char" not in line for line in epochs)
    assert any("word level" in line for line in lines)
    header = (model_path.parent / "history.csv").read_text().splitlines()[0]
    assert "perplexity" in header and "bpc" not in header


def test_seed_is_read_as_words_not_characters(word_run):
    generator = textgen.load(word_run[0])
    ids, unknown = generator.encode_seed(SEED)
    assert [generator.tokenizer.vocabulary[i] for i in ids] == ["There", "now", "is", "your", "city", "of", "the", "sea", ",", "I"]
    assert unknown == []


def test_a_seed_ending_in_a_space_is_continued_with_one_space(word_run):
    generator = textgen.load(word_run[0])
    spaced = generator.generate("the sea ", length=8, random_seed=3)[0]
    plain = generator.generate("the sea", length=8, random_seed=3)[0]
    assert not spaced.startswith(" ")  # the seed's own space is the only one
    assert spaced == (plain[1:] if plain.startswith(" ") else plain)


@pytest.mark.slow  # a fresh process; the tests above generate words from the same file in-process
def test_fresh_process_loads_the_file_and_generates_words(word_run, tmp_path):
    model_path = word_run[0]
    cmd = [sys.executable, "-m", "textgen", "generate", "--model", str(model_path), "--seed", SEED,
           "--length", "40", "--temperature", "0.8", "--random-seed", "5"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(SEED)
    generated = out.stdout[len(SEED):]
    generator = textgen.load(model_path)
    vocabulary = set(generator.tokenizer.vocabulary)
    words = re.findall(r"[A-Za-z']+", generated)
    assert len(words) >= 10 and all(w in vocabulary for w in words)  # whole words, not letters
    assert UNK not in generated and "<space>" not in generated and "<nospace>" not in generated
    again = generator.generate(SEED, length=40, temperature=0.8, random_seed=5)[0]
    assert generated.rstrip("\n") == again.rstrip("\n")  # the file alone reproduces the in-process model


def test_info_shows_level_vocabulary_coverage_and_perplexity(word_run):
    result = run("info", word_run[0], "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    tokenizer = textgen.load(word_run[0]).tokenizer
    assert facts["level"] == "word" and facts["vocabulary_size"] == tokenizer.vocab_size
    assert 0.5 < facts["coverage"] < 1.0  # min_count 2 leaves some words out
    assert facts["final_validation_perplexity"] > 1 and not any("bits_per_char" in k for k in facts)
    assert facts["tokenizer"] == {"lowercase": False, "max_vocab": None, "min_count": 2, "pattern": None}
    text = run("info", word_run[0]).output
    assert "level: word" in text and "coverage: 0." in text and "min_count: 2" in text


def test_unknown_seed_words_warn_and_strict_refuses(word_run):
    model = word_run[0]
    ok = run("generate", "--model", model, "--seed", "There now is Zarathustra", "--length", "5", "--random-seed", "1")
    assert ok.exit_code == 0, ok.output
    assert "Zarathustra" in ok.stderr and "<unk>" in ok.stderr and "warning" in ok.stderr
    assert ok.stdout.startswith("There now is Zarathustra")
    strict = run("generate", "--model", model, "--seed", "There now is Zarathustra", "--length", "5", "--strict")
    assert strict.exit_code == 2
    assert "'Zarathustra'" in strict.output and "--strict" in strict.output


def test_unk_is_never_generated_even_when_the_model_prefers_it():
    tokenizer = WordTokenizer.fit("the cat sat on the mat . a dog ran", TokenizerConfig(level="word"))
    model = build_model(ModelConfig(cell="gru", embedding_dim=8, units=8), tokenizer.get_config())
    head = model.get_layer("logits")
    kernel, bias = head.get_weights()
    bias[tokenizer.unk_id] = 1e4  # every step's most likely token by far
    head.set_weights([kernel, bias])
    raw = model(np.array([tokenizer.encode("the cat")], dtype=np.int32))
    assert int(np.argmax(raw[0, -1])) == tokenizer.unk_id  # without the mask <unk> would win
    generator = Generator(model)
    for temperature in (0.0, 1.0, 5.0):
        texts = generator.generate("the cat", length=60, temperature=temperature, num_samples=3, random_seed=2)
        assert all(UNK not in text and len(text.split()) >= 20 for text in texts)


@pytest.mark.parametrize("name", ["moby-dick-word", "pride-and-prejudice-word"])
def test_word_presets_load_and_name_bundled_corpora(name):
    root = CORPORA.parent
    config = load_config(root / "configs" / f"{name}.yaml")
    assert config.tokenizer.level == "word"
    assert all((root / path).is_file() for path in config.corpus.paths)
