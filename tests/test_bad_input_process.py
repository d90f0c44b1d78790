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
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import terminal_signals, tiny_overrides
from test_bad_input import build_files, gen, leftovers, snapshot, train_args

# Further spellings of a case make test already covers (another path to stdout, /dev/stdin for -, another
# damage to the same state file, prepare for train): each costs a process and TensorFlow's import, so they
# run with the slow tests.
VARIANT = (pytest.mark.slow,)

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
    ProcessCase("missing --seed, in a real process", lambda f, o: gen(f), 2,
                "Missing option '--seed' (or '--seed-file')"),
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
                "corpus path /dev/zero is not a regular file (a character device)", marks=VARIANT),
    ProcessCase("prepare a FIFO corpus", lambda f, o: ["prepare", "--set", f"corpus.paths=['{f.fifo}']",
                                                         "--output", o], 2, "is not a regular file (a FIFO)",
                marks=VARIANT),
    ProcessCase("corpus directory holding only a FIFO",
                lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.fifo_dir}']"}), 1, "holds no text files"),
    ProcessCase("corpus glob matching only a FIFO",
                lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.fifo_dir}/*.txt']"}), 1,
                "matches no regular files", marks=VARIANT),
    ProcessCase("evaluate --text is a FIFO", lambda f, o: ["evaluate", "--model", f.model, "--text", f.fifo], 2,
                "pipe.fifo is not a regular file (a FIFO)"),
    ProcessCase("evaluate --text /dev/zero as utf-16-le",
                lambda f, o: ["evaluate", "--model", f.model, "--text", "/dev/zero", "--encoding", "utf-16-le"], 2,
                "text file /dev/zero is not a regular file (a character device)", marks=VARIANT),
    ProcessCase("evaluate --text - with binary stdin", lambda f, o: ["evaluate", "--model", f.model, "--text", "-"], 1,
                "the text on stdin looks binary", stdin=lambda f: b"text\x00with NUL bytes\n" * 10),
    ProcessCase("evaluate --text - with unknown characters",
                lambda f, o: ["evaluate", "--model", f.model, "--text", "-"], 2,
                "characters the model's vocabulary lacks", stdin=lambda f: "\u00a7\u00b6 text\n".encode()),
]

def tg(*args) -> str:
    """`python -m textgen ARGS` as a shell word list."""
    return shlex.join([sys.executable, "-m", "textgen", *map(str, args)])


def pipefail(line: str) -> str:
    """A pipeline whose status is textgen's when textgen fails (bash's own is the last command's)."""
    return f"set -o pipefail; {line}"


def kept_log(f, o, *args, redirect=">> {log}", check="") -> str:
    """`generate ... --output X` with stdout (or another descriptor) appended to a log that already holds a
    line: the status is 0 only when that line is still there and the sample is in the log exactly once."""
    log = shlex.quote(str(o / "log.txt"))
    return (f"mkdir -p {shlex.quote(str(o))} && echo earlier > {log} && "
            f"{tg(*gen(f, '--seed', 'ROMEO:', '--length', '5', '--random-seed', '1', *args))} "
            f"{redirect.format(log=log)} && head -n 1 {log} | grep -qx earlier && "
            f"test \"$(grep -c '^ROMEO:' {log})\" = 1 {check}")


def tiny_train(f, o, *redirect) -> str:
    return " ".join([tg("train", *[a for s in tiny_overrides(f.corpus, o, **{"training.epochs": 1})
                                   for a in ("--set", s)]), *redirect])


OUTPUTS_AND_SIGNALS = [
    ProcessCase("generate into a pipe closed early", lambda f, o: [], 0, "", ok_codes=(141,),
                shell=lambda f, o: pipefail(f"{tg(*gen(f, '--seed', 'ROMEO:', '--length', '3000'))} | head -c 10")),
    ProcessCase("info into a pipe nobody reads", lambda f, o: [], 0, "", ok_codes=(141,),
                shell=lambda f, o: pipefail(f"{tg('info', f.model)} | true")),
    ProcessCase("evaluate into a pipe nobody reads", lambda f, o: [], 0, "", ok_codes=(141,),
                shell=lambda f, o: pipefail(f"{tg('evaluate', '--model', f.model, '--text', f.text)} | true")),
    ProcessCase("train's output into a pipe closed early", lambda f, o: [], 0, "", ok_codes=(141,),
                shell=lambda f, o: pipefail(f"{tiny_train(f, o)} | head -c 100")),
    ProcessCase("train with stdout closed", lambda f, o: [], 0, "",
                shell=lambda f, o: f"{tiny_train(f, o, '>&-')} && test -s {o / 'model.keras'}"),
    ProcessCase("train with stdout and stderr closed", lambda f, o: [], 0, "",
                shell=lambda f, o: f"{tiny_train(f, o, '>&-', '2>&-')} && test -s {o / 'model.keras'}",
                marks=(pytest.mark.slow,)),  # a training process; stdout closed alone stays in make test
    ProcessCase("info with stdout and stderr closed", lambda f, o: [], 0, "",
                shell=lambda f, o: f"{tg('info', f.model)} >&- 2>&-"),
    ProcessCase("evaluate with stderr closed", lambda f, o: [], 0, "",
                shell=lambda f, o: f"{tg('evaluate', '--model', f.model, '--text', f.text)} 2>&- "
                                   "| grep perplexity >/dev/null", marks=VARIANT),
    ProcessCase("a usage error with stderr closed", lambda f, o: [], 2, "",
                shell=lambda f, o: f"{tg(*gen(f, '--seed', ''))} 2>&-"),
    ProcessCase("--output /dev/stdout appended to a log", lambda f, o: [], 0, "",
                shell=lambda f, o: kept_log(f, o, "--output", "/dev/stdout")),
    ProcessCase("--output - appended to a log", lambda f, o: [], 0, "",
                shell=lambda f, o: kept_log(f, o, "--output", "-"), marks=VARIANT),
    ProcessCase("--output /proc/self/fd/1 appended to a log", lambda f, o: [], 0, "",
                shell=lambda f, o: kept_log(f, o, "--output", "/proc/self/fd/1"), marks=VARIANT),
    ProcessCase("--output /dev/fd/3 appended to a log", lambda f, o: [], 0, "",
                shell=lambda f, o: kept_log(f, o, "--output", "/dev/fd/3", redirect="3>> {log} >/dev/null"),
                marks=VARIANT),
    ProcessCase("--output /dev/stderr appended to a log", lambda f, o: [], 0, "",
                shell=lambda f, o: kept_log(f, o, "--output", "/dev/stderr", redirect="2>> {log} >/dev/null"),
                marks=VARIANT),
    ProcessCase("--output the log that stdout appends to", lambda f, o: [], 0, "",
                shell=lambda f, o: kept_log(f, o, "--output", o / "log.txt")),
    ProcessCase("--output a link to /dev/stdout", lambda f, o: [], 0, "",
                shell=lambda f, o: f"mkdir -p {o} && ln -s /dev/stdout {o / 'link'} && "
                                   + kept_log(f, o, "--output", o / "link"), marks=VARIANT),
    ProcessCase("seed with byte 0xff in argv", lambda f, o: gen(f, "--seed", b"ROMEO\xff"), 2,
                "the seed is not UTF-8 (byte 0xff at character 5)"),
    ProcessCase("--stop with byte 0xfe in argv", lambda f, o: gen(f, "--seed", "a", "--stop", b"\xfe"), 2,
                "a stop string is not UTF-8 (byte 0xfe"),
    ProcessCase("--seed-file - from a pipe", lambda f, o: gen(f, "--seed-file", "-", "--length", "5"), 0, "",
                stdin=lambda f: b"ROMEO:"),
    ProcessCase("--seed-file /dev/stdin from a pipe", lambda f, o: gen(f, "--seed-file", "/dev/stdin", "--length", "5"),
                0, "", stdin=lambda f: b"ROMEO:", marks=VARIANT),
    ProcessCase("--seed-file - from /dev/zero", lambda f, o: [], 2, "stdin holds more than 1 MiB",
                shell=lambda f, o: f"{tg(*gen(f, '--seed-file', '-'))} < /dev/zero"),
    ProcessCase("--seed-file /dev/stdin from /dev/zero", lambda f, o: [], 2, "holds more than 1 MiB",
                shell=lambda f, o: f"{tg(*gen(f, '--seed-file', '/dev/stdin'))} < /dev/zero", marks=VARIANT),
    ProcessCase("--seed-file - not UTF-8", lambda f, o: gen(f, "--seed-file", "-"), 2,
                "stdin is not UTF-8 (byte 0xff at offset 5)", stdin=lambda f: b"ROMEO\xff"),
    ProcessCase("--seed-file a FIFO nobody writes", lambda f, o: gen(f, "--seed-file", f.fifo), 2,
                "is not a regular file (a pipe or a device)"),
    ProcessCase("info on a FIFO", lambda f, o: ["info", f.fifo], 2, "is not a regular file (a pipe or a device)"),
    ProcessCase("interactive line not UTF-8", lambda f, o: [], 0, "",
                shell=lambda f, o: pipefail(f"printf '+\\377\\nq\\n' | "
                                            f"{tg(*gen(f, '--seed', 'ROMEO:', '--interactive'))} "
                                            "| grep 'that line is not UTF-8; type it again' >/dev/null")),
]

# ---- textgen's own files read back: damaged checkpoints and model files
DISK_AND_CACHE = [
    ProcessCase("--resume with global_step a string", lambda f, o: [*train_args(f, f.state_step_text), "--resume"],
                1, 'checkpoint/state.json is damaged (global_step is "52", not a whole number)'),
    ProcessCase("--resume with state.json a list", lambda f, o: [*train_args(f, f.state_list), "--resume"], 1,
                "state.json is damaged (it holds list, not a mapping); the checkpoint cannot be resumed, "
                "start again with --overwrite", marks=VARIANT),
    ProcessCase("--resume with the recorder missing", lambda f, o: [*train_args(f, f.state_no_recorder), "--resume"],
                1, "is damaged (recorder is missing)", marks=VARIANT),
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
# A signal must arrive while the command works, which a table row cannot time: each case waits
# for a sign of work (TensorFlow loaded, text streamed, an epoch written) and then sends it.
# A process that ends by a signal shows as -N to Python and as 128+N to a shell: 130 for Ctrl-C
# (SIGINT), 143 for SIGTERM, 129 for SIGHUP.

def started(*args, cwd=None) -> subprocess.Popen:
    """`python -m textgen ARGS` with Ctrl-C's default action, as a terminal starts it (a suite run from a
    background shell ignores SIGINT, and textgen leaves an ignored signal ignored)."""
    return subprocess.Popen([sys.executable, "-m", "textgen", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=terminal_signals)


def wait_until(condition, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the command did not start working in time"
        time.sleep(0.02)


def tensorflow_loaded(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "libtensorflow" in maps.read()


def test_ctrl_c_while_generating_ends_quietly_by_it_and_writes_no_output(files, tmp_path):
    target = tmp_path / "samples.txt"
    process = started(*gen(files, "--seed", "ROMEO:", "--length", "100000", "--output", target))
    assert process.stdout.read(8).startswith(b"ROMEO:")  # streaming: the model is working
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=LIMIT)
    assert process.returncode == -signal.SIGINT, err  # a shell shows 130
    assert err == b""  # no "Aborted!", no traceback
    assert list(tmp_path.iterdir()) == []  # neither the --output file nor a temporary one

    # a hangup textgen was told to ignore (nohup) does not stop it: generation runs to its end
    process = subprocess.Popen(["nohup", sys.executable, "-m", "textgen",
                                *map(str, gen(files, "--seed", "ROMEO:", "--length", "300"))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert process.stdout.read(6) == b"ROMEO:"
    process.send_signal(signal.SIGHUP)
    out, err = process.communicate(timeout=LIMIT)
    assert process.returncode == 0 and len(out) == 300 + 1, err


@pytest.mark.parametrize("command", ["evaluate", "prepare", "info"])
def test_ctrl_c_ends_every_command_with_130_and_no_message(files, tmp_path, command):
    args = {"evaluate": ["evaluate", "--model", files.model, "--text", files.corpus],
            "prepare": ["prepare", *[a for s in tiny_overrides(files.corpus, tmp_path / "run") for a in ("--set", s)]],
            "info": ["info", files.unknown_class]}[command]  # a file only Keras can judge: info imports it
    process = started(*args)
    wait_until(lambda: tensorflow_loaded(process.pid), process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=LIMIT)
    assert process.returncode == -signal.SIGINT, err
    assert b"Traceback" not in err and b"Aborted" not in err and b"Error" not in err
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("signum", [pytest.param(signal.SIGTERM, id="SIGTERM"),
                                    pytest.param(signal.SIGHUP, id="SIGHUP", marks=pytest.mark.slow)])
def test_sigterm_and_sighup_stop_training_with_a_checkpoint_and_say_how_to_continue(files, tmp_path, signum):
    out = tmp_path / "run"
    sets = [a for s in tiny_overrides(files.corpus, out, **{"training.epochs": 500}) for a in ("--set", s)]
    process = started("train", *sets, cwd=tmp_path)
    wait_until(lambda: (out / "history.csv").exists(), process)  # an epoch is done: training is under way
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=LIMIT)
    assert process.returncode == -signum, stderr
    assert b"stopping after this step and saving the training state" in stdout
    errors = [line for line in stderr.decode().splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0].startswith("Error: training interrupted at ")
    assert "the training state is saved" in errors[0] and errors[0].endswith("--resume")
    assert b"Traceback" not in stderr
    assert (out / "checkpoint" / "state.json").exists() and leftovers(out) == []

