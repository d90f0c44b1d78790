"""`--quiet` (`-q`): only the result and errors reach the terminal, on every command, in real processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import CORPORA, terminal_signals, tiny_overrides
from textgen.cli.command import TextgenCommand
from textgen.cli.main import cli


def textgen(*args, cwd=None, stderr=subprocess.PIPE, input=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textgen", *map(str, args)], stdout=subprocess.PIPE, stderr=stderr,
                          text=True, cwd=cwd, input=input, timeout=300, preexec_fn=terminal_signals)


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def word_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("words") / "moby_head.txt"
    path.write_text((CORPORA / "moby_dick_four_chapters.txt").read_text(encoding="utf-8")[:15_000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def quiet_training(word_corpus, tmp_path_factory):
    """`textgen -q train` of a tiny word model for one epoch: (the finished process, its run directory)."""
    out = tmp_path_factory.mktemp("quiet") / "run"
    overrides = tiny_overrides(word_corpus, out, **{"training.epochs": 1, "tokenizer.level": "word",
                                                    "tokenizer.min_count": 2, "training.seq_length": 16})
    return textgen("-q", "train", *sets(overrides)), out


def test_every_command_takes_quiet_verbose_and_debug_after_its_name():
    for name, command in cli.commands.items():
        assert isinstance(command, TextgenCommand), name
        shown = CliRunner().invoke(cli, [name, "--help"]).output
        assert "-q, --quiet" in shown and "--verbose" in shown and "--debug" in shown, name


@pytest.mark.parametrize("args", [["-q", "info", "--verbose"], ["--verbose", "info", "--quiet"],
                                  ["info", "-q", "--verbose"], ["plot", "--quiet", "--verbose"]])
def test_quiet_with_verbose_is_a_usage_error(args, trained_model):
    result = CliRunner().invoke(cli, [*args, str(trained_model if "info" in args else trained_model.parent)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: --quiet shows only the result and errors and --verbose adds TensorFlow's log lines; "
                      "pass only one"]


def test_quiet_train_prints_only_the_model_path(quiet_training):
    process, out = quiet_training
    assert process.returncode == 0, process.stderr
    assert process.stdout == f"{out / 'model.keras'}\n" and process.stderr == ""
    assert (out / "model.keras").is_file() and (out / "history.csv").is_file()  # the run itself is whole


def test_quiet_generate_prints_only_the_text(quiet_training):
    """A seed word the model does not know is a warning on stderr; --quiet keeps only the sample."""
    model = quiet_training[1] / "model.keras"
    args = ["generate", "--model", model, "--seed", "the zyzzyva", "--length", "12", "--random-seed", "5"]
    loud, quiet = textgen(*args), textgen(*args, "-q")
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "warning: seed words not in the vocabulary" in loud.stderr and "zyzzyva" in loud.stderr
    assert quiet.stderr == "" and quiet.stdout == loud.stdout and quiet.stdout.startswith("the zyzzyva")


@pytest.mark.slow  # a fresh process; train and generate's quiet runs stay in make test
def test_quiet_prepare_shows_no_progress(small_corpus, tmp_path):
    loud = textgen("prepare", *sets(tiny_overrides(small_corpus, tmp_path / "loud")))
    quiet = textgen("prepare", "--quiet", *sets(tiny_overrides(small_corpus, tmp_path / "quiet")))
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "preparing corpus" in loud.stderr and quiet.stderr == ""
    # the result, described the same way: the run directory's name is the only difference
    assert quiet.stdout.replace(str(tmp_path / "quiet"), str(tmp_path / "loud")) == loud.stdout
    assert "vocabulary:" in quiet.stdout


def test_quiet_info_prints_the_result(trained_model):
    loud, quiet = textgen("info", trained_model), textgen("-q", "info", trained_model)
    assert loud.returncode == quiet.returncode == 0 and quiet.stderr == ""
    advice = loud.stdout.splitlines(keepends=True)[-1]  # how to load the model in Python: dropped under -q
    assert advice.startswith("in Python: import textgen")
    assert quiet.stdout + advice == loud.stdout and "parameters" in quiet.stdout


def run_with_stderr_on_a_terminal(*args) -> tuple[int, str, str]:
    """(exit code, stdout, what reached the terminal on stderr): progress shows only on a terminal."""
    main, terminal = os.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-m", "textgen", *map(str, args)], stdout=subprocess.PIPE,
                                   stderr=terminal, text=True, preexec_fn=terminal_signals)
        os.close(terminal)
        out, _ = process.communicate(timeout=300)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the terminal's other end is closed and read to the end
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main)
    return process.returncode, out, shown.decode("utf-8", "replace")


@pytest.mark.slow  # a fresh process; train and generate's quiet runs stay in make test
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_quiet_evaluate_shows_no_progress_even_on_a_terminal(trained_model, small_corpus):
    args = ["evaluate", "--model", trained_model, "--text", small_corpus]
    loud_code, loud_out, loud_shown = run_with_stderr_on_a_terminal(*args)
    quiet_code, quiet_out, quiet_shown = run_with_stderr_on_a_terminal(*args, "-q")
    assert loud_code == quiet_code == 0, loud_shown + quiet_shown
    assert "scoring" in loud_shown and quiet_shown == ""
    assert quiet_out == loud_out and "bits per character:" in quiet_out


def test_quiet_keeps_errors(trained_model, tmp_path):
    result = textgen("-q", "generate", "--model", trained_model, "--seed", "a", "--output", tmp_path / "no" / "x.txt")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: the directory of --output") and len(result.stderr.splitlines()) == 1


@pytest.mark.slow  # a fresh process; train and generate's quiet runs stay in make test
def test_quiet_interactive_leaves_out_the_help_line(trained_model):
    args = ["generate", "--model", trained_model, "--seed", "ab", "--interactive", "--length", "3"]
    loud, quiet = textgen(*args, input="1\nq\n"), textgen(*args, "-q", input="1\nq\n")
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "Enter a number to pick" in loud.stdout and "Enter a number to pick" not in quiet.stdout
    assert "choice" in quiet.stdout  # the prompt is the command's work, not a note
