"""Errors of a command given `--json`: one JSON object `{"error", "exit_code"}` on stdout, the usual
`Error:` line on stderr, and the exit code the error has without --json."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import terminal_signals
from textgen.cli.main import cli


def textgen(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textgen", *map(str, args)], capture_output=True, text=True,
                          timeout=300, preexec_fn=terminal_signals)


def answered_in_json(stdout: str, stderr: str, code: int, message: str) -> dict:
    """The one JSON object on stdout, checked against the exit code and the stderr line."""
    answer = json.loads(stdout)  # the whole of stdout: nothing printed before or after it
    assert set(answer) == {"error", "exit_code"} and answer["exit_code"] == code
    assert message in answer["error"] and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: {answer['error']}"]  # the same words people see
    return answer


# (arguments, exit code, words of the message); `M` stands for the trained model's path
CASES = [
    pytest.param(["generate", "--json", "--length", "abc"], 2, "Invalid value for '--length'", id="bad value"),
    pytest.param(["generate", "--length", "abc", "--json"], 2, "Invalid value for '--length'", id="bad value first"),
    pytest.param(["evaluate", "--json", "--batch-size", "0", "--text", "x.txt"], 2, "Invalid value for '--batch-size'",
                 id="evaluate bad value"),
    pytest.param(["info", "M", "--json", "--colour"], 2, "No such option", id="unknown option"),
    pytest.param(["generate", "--json", "--seed"], 2, "'--seed' requires an argument", id="missing value"),
    pytest.param(["info", "--json", "missing.keras"], 2, "does not exist", id="missing model"),
    pytest.param(["generate", "--model", "M", "--json", "--seed", "a", "--seed-file", "s.txt"], 2,
                 "--seed and --seed-file both give the seed", id="library usage error"),
    pytest.param(["-q", "generate", "--model", "M", "--json", "--seed", "a", "--verbose"], 2,
                 "--quiet shows only the result and errors", id="quiet with verbose"),
    pytest.param(["generate", "--model", "M", "--json", "--seed", "a", "--output", "no/such/dir/x.txt"], 1,
                 "the directory of --output", id="runtime error",
                 marks=pytest.mark.slow),  # "damaged model" is another exit 1 in make test
    pytest.param(["info", "--json", "G"], 1, "is not a valid .keras archive", id="damaged model"),
    pytest.param(["export", "--json", "--output", "M"], 2, "already exists and textgen never replaces it",
                 id="existing export output"),
]


@pytest.mark.parametrize("args, code, message", CASES)
def test_errors_under_json_are_json_objects_with_the_plain_exit_code(args, code, message, trained_model, tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip file")
    args = [trained_model if a == "M" else garbage if a == "G" else a for a in args]
    with_json = subprocess.run([sys.executable, "-m", "textgen", *map(str, args)], capture_output=True, text=True,
                               timeout=300, cwd=tmp_path, preexec_fn=terminal_signals)
    answered_in_json(with_json.stdout, with_json.stderr, code, message)
    plain = subprocess.run([sys.executable, "-m", "textgen", *(str(a) for a in args if a != "--json")],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path, preexec_fn=terminal_signals)
    assert plain.returncode == code and plain.stdout == ""  # without --json: the stderr line alone
    assert [line for line in plain.stderr.splitlines() if line.startswith("Error: ")] == \
        [line for line in with_json.stderr.splitlines() if line.startswith("Error: ")]


def test_a_value_that_looks_like_json_is_not_the_flag():
    """`--seed --json` seeds with the text "--json": the error that follows is plain."""
    result = textgen("generate", "--seed", "--json", "--length", "x")
    assert result.returncode == 2 and result.stdout == "" and "Invalid value for '--length'" in result.stderr


def test_a_command_without_json_answers_in_plain_text():
    result = textgen("train", "--json")
    assert result.returncode == 2 and result.stdout == "" and "No such option '--json'" in result.stderr


@pytest.mark.parametrize("raised, code, message", [
    (OSError(errno.ENOSPC, "No space left on device", "run/model.keras"), 1,
     "No space left on device: run/model.keras"),
    (MemoryError(), 1, "out of memory; use a smaller network"),
])
def test_errors_the_group_maps_are_json_too(raised, code, message, trained_model, monkeypatch):
    import textgen.models.info

    def fail(path):
        raise raised

    monkeypatch.setattr(textgen.models.info, "file_facts", fail)  # what info calls to read the model
    result = CliRunner().invoke(cli, ["info", str(trained_model), "--json"])
    assert result.exit_code == code and isinstance(result.exception, SystemExit)
    answered_in_json(result.stdout, result.stderr, code, message)

