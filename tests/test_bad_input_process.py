"""The bad-input matrix, part two: cases only a real process shows.

Some inputs cannot be tried in-process: a FIFO or /dev/zero that would hang or fill memory,
bytes in argv that are not UTF-8, a closed stdout, text on stdin, signals. Each row here
runs `python -m textgen` with a time limit and is checked like the in-process rows
(tests/test_bad_input.py): the documented exit code, one `Error:` line naming the problem,
no traceback, every input file byte for byte as it was, and no temporary file left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from test_bad_input import build_files, gen, leftovers, snapshot, train_args

TEXTGEN = f"{sys.executable} -m textgen"
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
    ProcessCase("seed with a non-UTF-8 byte in argv", lambda f, o: gen(f, "--seed", b"ROMEO:\xff"), 2,
                "the seed holds bytes that are not UTF-8"),
]

INPUT_FILES = [
    ProcessCase("missing --seed, in a real process", lambda f, o: gen(f), 2, "--seed TEXT or --seed-file PATH"),
    ProcessCase("--config is a FIFO", lambda f, o: ["train", "--config", f.fifo, "--output", o], 2,
                "is not a regular file (a FIFO)"),
    ProcessCase("--config /dev/zero", lambda f, o: ["train", "--config", "/dev/zero", "--output", o], 2,
                "config path /dev/zero is not a regular file (a character device)"),
    ProcessCase("prepare --config is a FIFO", lambda f, o: ["prepare", "--config", f.fifo, "--output", o], 2,
                "is not a regular file (a FIFO)"),
    ProcessCase("--config - with a bad value on stdin", lambda f, o: ["train", "--config", "-", "--output", o], 2,
                "model.units must be at most 1,048,576", stdin=lambda f: b"model:\n  units: 100000000000000000000000\n"),
    ProcessCase("--config - with /dev/zero-like stdin", lambda f, o: ["train", "--config", "-", "--output", o], 2,
                "the config on stdin is larger than 1,048,576 bytes", stdin=lambda f: b"\0" * (3 << 20)),
    ProcessCase("--config - with a YAML list on stdin", lambda f, o: ["train", "--config", "-", "--output", o], 2,
                "the config on stdin must be a mapping of sections", stdin=lambda f: b"- corpus\n- model\n"),
    ProcessCase("--config < /dev/zero", lambda f, o: None, 2, "the config on stdin is larger than 1,048,576 bytes",
                shell=lambda f, o: f"{sys.executable} -m textgen train --config - --output {o} < /dev/zero"),
    ProcessCase("corpus is a FIFO", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.fifo}']"}), 2,
                "pipe.fifo is not a regular file (a FIFO); give a text file"),
    ProcessCase("corpus is /dev/zero", lambda f, o: train_args(f, o, **{"corpus.paths": "['/dev/zero']"}), 2,
                "corpus path /dev/zero is not a regular file (a character device)"),
    ProcessCase("corpus /dev/zero read as utf-16-le",
                lambda f, o: train_args(f, o, **{"corpus.paths": "['/dev/zero']", "corpus.encoding": "utf-16-le"}), 2,
                "corpus path /dev/zero is not a regular file (a character device)"),
    ProcessCase("prepare a FIFO corpus", lambda f, o: ["prepare", "--set", f"corpus.paths=['{f.fifo}']",
                                                         "--output", o], 2, "is not a regular file (a FIFO)"),
    ProcessCase("corpus directory holding only a FIFO",
                lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.fifo_dir}']"}), 1, "holds no text files"),
    ProcessCase("corpus glob matching only a FIFO",
                lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.fifo_dir}/*.txt']"}), 1,
                "matches no regular files"),
    ProcessCase("evaluate --text is a FIFO", lambda f, o: ["evaluate", "--model", f.model, "--text", f.fifo], 2,
                "pipe.fifo is not a regular file (a FIFO)"),
    ProcessCase("evaluate --text /dev/zero as utf-16-le",
                lambda f, o: ["evaluate", "--model", f.model, "--text", "/dev/zero", "--encoding", "utf-16-le"], 2,
                "text file /dev/zero is not a regular file (a character device)"),
    ProcessCase("evaluate --text - with binary stdin", lambda f, o: ["evaluate", "--model", f.model, "--text", "-"], 1,
                "the text on stdin looks binary", stdin=lambda f: b"text\x00with NUL bytes\n" * 10),
    ProcessCase("evaluate --text - with unknown characters",
                lambda f, o: ["evaluate", "--model", f.model, "--text", "-"], 2,
                "characters the model's vocabulary lacks", stdin=lambda f: "\u00a7\u00b6 text\n".encode()),
]

OUTPUTS_AND_SIGNALS = [
    ProcessCase("reader closes the pipe early", None, 141, "", ok_codes=(0,),
                shell=lambda f, o: f"{TEXTGEN} generate --model {f.model} --seed A --length 20000 | head -c 10"
                                   " >/dev/null; exit ${PIPESTATUS[0]}"),
    ProcessCase("info into a pipe closed at once", None, 141, "", ok_codes=(0,),
                shell=lambda f, o: f"{TEXTGEN} info {f.model} | true; exit ${{PIPESTATUS[0]}}"),
    ProcessCase("--output /dev/stdout appended to a log", None, 0, "",
                shell=lambda f, o: f"mkdir -p {o} && printf 'old line\\n' > {o}/log.txt && "
                                   f"{TEXTGEN} generate --model {f.model} --seed A --length 50 --random-seed 1 "
                                   f"--output /dev/stdout >> {o}/log.txt && head -1 {o}/log.txt | grep -qx 'old line' "
                                   f"&& test $(wc -l < {o}/log.txt) -ge 2"),
    ProcessCase("--output - is standard output", None, 0, "",
                shell=lambda f, o: f"test \"$({TEXTGEN} generate --model {f.model} --seed A --length 9 --random-seed 1 "
                                   f"--output -)\" = \"$({TEXTGEN} generate --model {f.model} --seed A --length 9 "
                                   f"--random-seed 1)\""),
    ProcessCase("info with standard output closed", None, 0, "", shell=lambda f, o: f"{TEXTGEN} info {f.model} >&-"),
    ProcessCase("generate with standard output and error closed", None, 0, "",
                shell=lambda f, o: f"{TEXTGEN} generate --model {f.model} --seed A --length 20 >&- 2>&-"),
    ProcessCase("train with standard output closed", None, 1, "looks binary",
                shell=lambda f, o: f"{TEXTGEN} train --set \"corpus.paths=['{f.nul_corpus}']\" --output {o} >&-"),
    ProcessCase("--seed-file - reads standard input", lambda f, o: gen(f, "--seed-file", "-", "--length", "5"), 0, "",
                stdin=lambda f: b"ROMEO:"),
    ProcessCase("--seed-file - with bytes that are not UTF-8", lambda f, o: gen(f, "--seed-file", "-"), 2,
                "the seed is not UTF-8 (byte offset 5)", stdin=lambda f: b"ROMEO\xff"),
    ProcessCase("--seed-file - on empty standard input", lambda f, o: gen(f, "--seed-file", "-"), 2,
                "the seed is empty", stdin=lambda f: b""),
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


# --------------------------------------------------------------------------- signals


def spawn(args, **popen):
    """`python -m textgen ARGS` with Ctrl-C's default action (pytest-xdist workers ignore SIGINT)."""
    return subprocess.Popen([sys.executable, "-m", "textgen", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **popen)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["Ctrl-C", "SIGTERM", "SIGHUP"])
def test_a_signal_ends_generate_with_128_plus_its_number_and_no_output_file(sig, code, files, tmp_path):
    out = tmp_path / "samples.txt"
    process = spawn(gen(files, "--seed", "A", "--length", "50000000", "--output", out))
    assert process.stdout.read(1) == b"A"  # generating (the seed is printed, then each piece)
    process.send_signal(sig)
    _, err = process.communicate(timeout=LIMIT)
    assert process.returncode == code, err.decode()
    assert "Traceback" not in err.decode() and "Error" not in err.decode()
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_training_as_ctrl_c_does(sig, code, small_corpus, tmp_path):
    from conftest import tiny_overrides
    from textgen.generate import load_keras_model

    out = tmp_path / "run"
    sets = [a for o in tiny_overrides(small_corpus, out, **{"training.epochs": 500}) for a in ("--set", o)]
    process = spawn(["train", *sets], cwd=tmp_path)
    deadline = time.monotonic() + LIMIT * 2
    while not (out / "history.csv").exists():  # an epoch is done: there is a model and a checkpoint
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(sig)
    stdout, stderr = (stream.decode() for stream in process.communicate(timeout=LIMIT * 2))
    assert process.returncode == code, stderr
    assert "stopping after this step" in stdout and "Traceback" not in stderr
    assert "training interrupted at" in stderr and stderr.rstrip().endswith("--resume")
    load_keras_model(out / "model.keras")
    assert json.loads((out / "checkpoint" / "state.json").read_text())["global_step"] > 0
