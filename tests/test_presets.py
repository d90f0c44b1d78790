"""Presets by name (`--config quick`), `textgen presets` and `textgen init`, from any folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import textgen
from textgen.cli.main import cli
from textgen.cli.params import ConfigSource
from textgen.config import Config, load_config
from textgen.config.presets import list_presets, preset_path
from textgen.config.starter import PLACEHOLDER, STARTER_NAME
from textgen.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(textgen.__file__).resolve().parent
NAMES = sorted(p.stem for p in (PACKAGE / "presets").glob("*.yaml"))


def run(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def one_error_line(result) -> str:
    """The single `Error:` line of a handled failure (no traceback)."""
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# --------------------------------------------------------------------------- the package's data

def test_the_checkout_folders_are_links_into_the_package():
    """One copy of each file: configs/ and corpora/ in the checkout are the package's folders."""
    assert (ROOT / "configs").resolve() == PACKAGE / "presets"
    assert (ROOT / "corpora").resolve() == PACKAGE / "corpora"
    assert (PACKAGE / "corpora" / "SOURCES.md").is_file()  # the texts' sources ship with them


def test_the_default_corpus_is_the_packaged_tiny_shakespeare(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty folder: nothing of the checkout around
    packaged = str(PACKAGE / "corpora" / "tinyshakespeare.txt")
    assert Config().corpus.paths == (packaged,)
    assert load_config(check_corpus=True).corpus.paths == (packaged,)


# --------------------------------------------------------------------------- listing

def test_every_preset_is_listed_with_its_first_comment_line():
    presets = list_presets()
    assert [p.name for p in presets] == NAMES and {"quick", "shakespeare-fast"} <= set(NAMES)
    for preset in presets:
        first = preset.path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# ") and preset.description == first[2:].strip()
        assert preset.path == PACKAGE / "presets" / f"{preset.name}.yaml"


def test_textgen_presets_prints_one_line_each_and_json():
    result = run("presets")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == NAMES
    quick = next(line for line in lines if line.startswith("quick "))
    assert "Tiny Shakespeare" in quick
    listed = json.loads(run("presets", "--json").output)
    assert [p["name"] for p in listed] == NAMES
    assert all(Path(p["path"]).is_file() and p["description"] for p in listed)


# --------------------------------------------------------------------------- --config NAME

@pytest.mark.parametrize("name", NAMES)
def test_a_preset_by_name_is_the_same_config_as_its_file(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    by_name = load_config(name, check_corpus=True)
    assert by_name == load_config(PACKAGE / "presets" / f"{name}.yaml")
    for corpus in by_name.corpus.paths:  # ../corpora/... resolved inside the package
        assert Path(corpus).is_file() and Path(corpus).parent == PACKAGE / "corpora"


def test_the_checkout_path_and_the_name_are_one_config(monkeypatch):
    """configs/ is a link: `..` in a preset resolves through it as the OS does, so a run started
    with --config configs/quick.yaml resumes with --config quick (its corpus is the same file)."""
    monkeypatch.chdir(ROOT)
    assert load_config("configs/quick.yaml") == load_config("quick")


def test_an_unknown_name_is_one_error_listing_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no config file or preset named 'quik' \(did you mean quick\?\); "
                                          r"presets: .*shakespeare-fast"):
        load_config("quik")
    result = run("prepare", "--config", "quik")
    assert result.exit_code == 2
    assert "presets: authors, dates, moby-dick-word" in one_error_line(result)
    assert not (tmp_path / "runs").exists()


def test_an_unknown_name_is_answered_before_tensorflow_loads(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "textgen", "train", "--config", "quik"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no config file or preset named 'quik' (did you mean quick?)" in errors[0]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "textgen.cli.main" in imported and "tensorflow" not in imported


def test_a_checkout_path_outside_the_checkout_names_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config file configs/quick.yaml does not exist; for the preset of "
                                          r"that name pass --config quick"):
        load_config("configs/quick.yaml")
    with pytest.raises(ConfigError, match=r"^config file elsewhere/mine.yaml does not exist$"):
        load_config("elsewhere/mine.yaml")


def test_a_file_in_the_working_directory_wins_over_a_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick").write_text("model: {units: 24}\n")
    assert load_config("quick").model.units == 24
    (tmp_path / "quick").unlink()
    (tmp_path / "quick").mkdir()  # a folder cannot be a config: the preset is meant
    assert load_config("quick").model.units == load_config(preset_path("quick")).model.units == 256
    (tmp_path / "nopreset").mkdir()
    with pytest.raises(ConfigError, match="config path nopreset is a directory, not a YAML file"):
        load_config("nopreset")


def test_stdin_stays_stdin_and_the_shell_completes_preset_names(monkeypatch):
    monkeypatch.setattr(sys, "stdin", type("In", (), {"buffer": __import__("io").BytesIO(b"model: {units: 8}\n")}))
    assert load_config("-").model.units == 8
    completed = [item.value for item in ConfigSource().shell_complete(None, None, "shakespeare-f")]
    assert "shakespeare-fast" in completed and "quick" not in completed


# --------------------------------------------------------------------------- textgen init

def test_init_writes_a_config_for_the_users_text_and_never_replaces_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "texts").mkdir()
    corpus = tmp_path / "texts" / "plays.txt"
    corpus.write_text("To be or not to be.\n" * 50)
    result = run("init", "project", "--corpus", "texts/plays.txt")
    assert result.exit_code == 0, result.output
    written = tmp_path / "project" / STARTER_NAME
    assert f"wrote project/{STARTER_NAME}" in result.output
    assert f"textgen train --config project/{STARTER_NAME}" in result.output
    assert yaml.safe_load(written.read_text())["corpus"]["paths"] == ["../texts/plays.txt"]  # relative to it
    config = load_config(f"project/{STARTER_NAME}", check_corpus=True)
    assert config.corpus.paths == (str(corpus),) and config.output.dir == "runs/plays"
    assert written.read_text().count("\n#") + written.read_text().count("  # ") > 10  # commented

    before = written.read_bytes()
    again = run("init", "project", "--corpus", "texts/plays.txt")
    assert again.exit_code == 2 and "already exists and textgen init never replaces a file" in one_error_line(again)
    assert written.read_bytes() == before
    assert sorted(p.name for p in written.parent.iterdir()) == [STARTER_NAME]  # no temporary file left


def test_init_without_a_corpus_writes_a_placeholder_that_training_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("init")
    assert result.exit_code == 0, result.output
    assert PLACEHOLDER in result.output and f"textgen train --config {STARTER_NAME}" in result.output
    config = load_config(STARTER_NAME)  # valid as written
    assert config.corpus.paths == (str(tmp_path / PLACEHOLDER),)
    with pytest.raises(ConfigError, match=rf"corpus path {PLACEHOLDER} \(relative to the config file's folder .*"
                                          r"does not exist; fix corpus.paths"):
        load_config(STARTER_NAME, check_corpus=True)


def test_init_refuses_a_corpus_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("init", "--corpus", "missing.txt")
    assert result.exit_code == 2 and "corpus missing.txt does not exist" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []
    from textgen.config.starter import write_starter_config
    with pytest.raises(UsageError, match="already exists"):
        (tmp_path / STARTER_NAME).write_text("mine\n")
        write_starter_config(tmp_path, "*.txt")  # a glob is taken as it is; the file still is not replaced
    assert (tmp_path / STARTER_NAME).read_text() == "mine\n"


# --------------------------------------------------------------------------- no TensorFlow

@pytest.mark.parametrize("args", [["presets"], ["presets", "--help"], ["init", "--corpus", "text.txt"],
                                  ["init", "--help"]])
def test_presets_and_init_answer_without_tensorflow(args, tmp_path):
    (tmp_path / "text.txt").write_text("some text\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "textgen", *args], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "textgen.cli.main" in imported
    assert not imported & {"tensorflow", "keras", "numpy"}, sorted(imported & {"tensorflow", "keras", "numpy"})
    assert result.stdout.strip()
