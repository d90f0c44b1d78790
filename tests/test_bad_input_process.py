"""The bad-input matrix, part two: cases only a real process shows.

Some inputs cannot be tried in-process: a FIFO or /dev/zero that would hang or fill memory,
bytes in argv that are not UTF-8, a closed stdout, text on stdin, signals. Each row here
runs `python -m textgen` with a time limit and is checked like the in-process rows
(tests/test_bad_input.py): the documented exit code, one `Error:` line naming the problem,
no traceback, every input file byte for byte as it was, and no temporary file left.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from test_bad_input import build_files, gen, leftovers, snapshot, train_args

LIMIT = 60  # seconds: far more than any answer needs (TensorFlow's import takes a few), far less than a hang


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_model, small_corpus):
    root = tmp_path_factory.mktemp("bad-process")
    yield build_files(root, trained_model, small_corpus)
    (root / "readonly").chmod(0o700)


@dataclass
class ProcessCase:
    name: str
    args: object  # f, out -> argv after `python -m textgen`
    code: int  # the exit code; 0 and 141 are both accepted where `code` is 0 and `ok_codes` says so
    message: str  # words the one Error: line holds ("" when the command succeeds)
    stdin: object = None  # f -> bytes fed on stdin, or None for no stdin (/dev/null)
    ok_codes: tuple = ()  # other exit codes that mean the same (a closed pipe: 0 or 141)
    shell: object = None  # f, out -> a shell line to run instead, for redirections argv cannot express
    marks: tuple = field(default_factory=tuple)


def run_case(case: ProcessCase, f, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stdin = case.stdin(f) if case.stdin else b""
    if case.shell:
        line = case.shell(f, out)
        return subprocess.run(["bash", "-c", line], input=stdin, capture_output=True, timeout=LIMIT, env=env,
                              cwd=f.root)
    argv = [sys.executable, "-m", "textgen", *(os.fsencode(a) if isinstance(a, (str, Path)) else a
                                               for a in case.args(f, out))]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=LIMIT, env=env, cwd=f.root)


def check_process_answer(done: subprocess.CompletedProcess, case: ProcessCase) -> None:
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode in (case.code, *case.ok_codes), (done.returncode, stderr[-2000:])
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    if case.message:
        assert len(errors) == 1, stderr[-2000:]
        assert case.message in errors[0], errors[0]
    else:
        assert errors == [], stderr[-2000:]


# --------------------------------------------------------------------------- the matrix, by area

COMMAND_LINE = [
    ProcessCase("unknown command, in a real process", lambda f, o: ["frobnicate"], 2, "No such command"),
]

INPUT_FILES = [
    ProcessCase("missing --seed, in a real process", lambda f, o: gen(f), 2, "Missing option '--seed'"),
]

OUTPUTS_AND_SIGNALS = [
]

# ---- textgen's own files read back: damaged checkpoints and model files
DISK_AND_CACHE = [
    ProcessCase("--resume with global_step a string", lambda f, o: [*train_args(f, f.state_step_text), "--resume"],
                1, 'checkpoint/state.json is damaged (global_step is "52", not a whole number)'),
    ProcessCase("--resume with state.json a list", lambda f, o: [*train_args(f, f.state_list), "--resume"], 1,
                "state.json is damaged (it holds list, not a mapping); the checkpoint cannot be resumed, "
                "start again with --overwrite"),
    ProcessCase("--resume with the recorder missing", lambda f, o: [*train_args(f, f.state_no_recorder), "--resume"],
                1, "is damaged (recorder is missing)"),
    ProcessCase("generate from a vocabulary shorter than the network",
                lambda f, o: ["generate", "--model", str(f.vocabulary_short), "--seed", "a", "--length", "50"],
                1, "its vocabulary has 53 tokens but the network reads 58"),
]

PROCESS_CASES = [*COMMAND_LINE, *INPUT_FILES, *OUTPUTS_AND_SIGNALS, *DISK_AND_CACHE]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in PROCESS_CASES])
def test_bad_input_is_answered_in_a_real_process(case, files, tmp_path):
    out = tmp_path / "out"
    before = snapshot(files.root, files.model.parent)
    done = run_case(case, files, out)
    check_process_answer(done, case)
    assert not (out / "model.keras").exists() or case.code == 0
    assert leftovers(tmp_path) == [] and leftovers(files.root) == []
    assert snapshot(files.root, files.model.parent) == before
