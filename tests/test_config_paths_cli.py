"""Where `textgen train` finds its inputs: paths in a config file, a run's own config on
--resume (or its checkpoint's, once config.yaml is gone), and a missing corpus reported
before any work is shown."""

import shutil
from pathlib import Path

import yaml
from click.testing import CliRunner

from textgen.cli.main import cli

TINY = {"model": {"cell": "gru", "embedding_dim": 16, "units": 32},
        "training": {"seq_length": 32, "batch_size": 32, "epochs": 1, "learning_rate": 0.01, "sample_every": 0}}


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def project(tmp_path, small_corpus) -> Path:
    """A project folder with the corpus beside a configs/ folder whose config names it as ../texts/."""
    (tmp_path / "project" / "texts").mkdir(parents=True)
    shutil.copy(small_corpus, tmp_path / "project" / "texts" / "book.txt")
    config = tmp_path / "project" / "configs" / "tiny.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"corpus": {"paths": ["../texts/book.txt"]}, **TINY}))
    return config


def test_a_config_file_path_is_read_from_its_folder_and_resume_reads_the_runs_config(
        tmp_path, small_corpus, monkeypatch):
    config = project(tmp_path, small_corpus)
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    first = invoke("train", "--config", config, "--output", "run")
    assert first.exit_code == 0, first.output
    assert (work / "run" / "model.keras").exists()  # output.dir is the working directory's
    assert not (config.parent / "run").exists()
    saved = yaml.safe_load((work / "run" / "config.yaml").read_text())
    assert saved["corpus"]["paths"] == [str(tmp_path / "project" / "texts" / "book.txt")]
    # --resume without --config reads the run's config.yaml, from another working directory too
    monkeypatch.chdir(tmp_path)
    resumed = invoke("train", "--resume", "--output", work / "run", "--set", "training.epochs=2")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.output
    # and with the same config file again: the paths mean the same, so the corpus is unchanged
    again = invoke("train", "--resume", "--config", config, "--output", work / "run", "--set", "training.epochs=3")
    assert again.exit_code == 0, again.output


def test_resume_after_the_runs_config_yaml_was_deleted_uses_the_checkpoints(tmp_path, small_corpus, monkeypatch):
    config = project(tmp_path, small_corpus)
    monkeypatch.chdir(tmp_path)
    first = invoke("train", "--config", config, "--output", "run", "--set", f"corpus.paths=['{small_corpus}']")
    assert first.exit_code == 0, first.output
    (tmp_path / "run" / "config.yaml").unlink()
    resumed = invoke("train", "--resume", "--output", "run", "--set", "training.epochs=2")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.output and "units: 32" in resumed.output
    assert (tmp_path / "run" / "config.yaml").exists()


def test_a_missing_corpus_is_reported_before_the_resolved_config(tmp_path, monkeypatch):
    config = tmp_path / "configs" / "c.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"corpus": {"paths": ["corpora/missing.txt"]}, **TINY}))
    monkeypatch.chdir(tmp_path)
    for command in ("train", "prepare"):
        result = invoke(command, "--config", config, "--output", "run")
        assert result.exit_code == 2, result.output
        assert "resolved config" not in result.output
        assert (f"corpus path corpora/missing.txt (relative to the config file's folder {config.parent}) "
                "does not exist") in result.output
    assert not (tmp_path / "run").exists()


def test_a_config_on_stdin(tmp_path, small_corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(small_corpus, tmp_path / "book.txt")
    text = yaml.safe_dump({"corpus": {"paths": ["book.txt"]}, **TINY})
    result = invoke("prepare", "--config", "-", "--output", "run", input=text.encode())
    assert result.exit_code == 0, result.output
    assert "vocabulary:" in result.output and (tmp_path / "run" / "cache").is_dir()
