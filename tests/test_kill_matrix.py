"""The kill matrix: SIGKILL `textgen train`, `textgen prepare` and `textgen generate --output`
at 20 moments each; after every kill nothing the user had is changed, nothing textgen left is
half-written, and the same command run again completes and leaves no temporary file.

Each command is first run once uninterrupted, which gives its duration (only to place the
moments, never asserted) and the results an interrupted run must end with: the token ids,
the trained model, the generated text. The moments come from a fixed seed. Most are spread
evenly over that duration (one in each of equal slices, at a random point of the slice), so
they land while Python imports TensorFlow, while the corpus is read and encoded, during the
first steps and near the end. The others wait for something to happen, a temporary file
of a checkpoint, model or cache write appearing, or generated text reaching stdout, and kill
at once or a random instant later: those writes last milliseconds and evenly spread moments
would hardly ever hit them.

The kills run in a background thread, one process at a time, while the test checks the
previous one and runs its command again in-process (the matrix would not fit its time
budget otherwise: the checks and re-runs take about as long as the kills).
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from conftest import CORPORA, tiny_overrides
from textgen.cli.main import cli
from textgen.models.layers import find_token_embedding
from textgen.data.tokenizer import tokenizer_from_config

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
PLAN_SEED = 20261204
KILLS = 20
TRAINING = {"training.steps_per_epoch": 6, "training.checkpoint_every": 2}  # 2 epochs: checkpoints at 2, 4, 6, ...
SEED_TEXT = "ROMEO:"
GENERATE = ["--seed", SEED_TEXT, "--length", "2000", "--random-seed", "7"]
OLD_SAMPLES = "samples the user wrote earlier and keeps\n"
USER_NOTE = "the user's own notes, kept in the run directory\n"

TEMPORARY = "temporary file left"
OLD_MODEL_LOST = "old model lost"


# --------------------------------------------------------------------------- moments


@dataclass(frozen=True)
class Moment:
    """Kill `delay` seconds after the start, or after `event` (None: after the start).

    event: ("file", name pattern, n): the n-th distinct file matching the pattern has appeared
    anywhere in the workspace; ("printed", bytes): stdout holds that many bytes.
    variant: which starting state the workspace gets (0 or 1; see each command's setup).
    """

    delay: float
    event: tuple | None = None
    variant: int = 0

    def describe(self) -> str:
        if self.event is None:
            return f"{self.delay:.2f} s after the start"
        kind, *what = self.event
        after = f"{self.delay:.2f} s after " if self.delay else "as soon as "
        if kind == "file":
            pattern, nth = what
            return f"{after}{pattern} appeared" + (f" for the {_ordinal(nth)} time" if nth > 1 else "")
        return f"{after}stdout held {what[0]} bytes"


def _ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(n, f"{n}th")


def kill_plan(case: str, life: float, events: list[tuple[tuple, float, int]]) -> list[Moment]:
    """KILLS moments for `case`: `events` (event, longest delay, variant) and the rest spread
    over `life` seconds, one in each equal slice, variants alternating."""
    rng = random.Random(f"{PLAN_SEED}:{case}")
    spread = KILLS - len(events)
    moments = [Moment(round(life * (k + rng.random()) / spread, 3), None, k % 2) for k in range(spread)]
    moments += [Moment(round(rng.uniform(0, longest), 3), event, variant) for event, longest, variant in events]
    rng.shuffle(moments)  # long and short kills mixed, so killing and checking keep pace
    return moments


# --------------------------------------------------------------------------- killing


@dataclass
class Kill:
    index: int
    moment: Moment
    workspace: Path
    seconds: float = 0.0  # when the kill came, from the start
    finished: bool = False  # the process had ended by itself before the moment
    stdout: str = ""
    stderr: str = ""
    extra: dict = field(default_factory=dict)  # what the command's setup recorded

    def describe(self) -> str:
        if self.finished:
            return f"kill {self.index} ({self.moment.describe()}): the process had already finished"
        return f"kill {self.index} ({self.moment.describe()}): killed at {self.seconds:.2f} s"


def _matching(root: Path, pattern: str) -> set[str]:
    return {os.path.join(d, n) for d, dirs, files in os.walk(root) for n in files + dirs if fnmatch.fnmatch(n, pattern)}


def run_and_kill(argv: list[str], kill: Kill, logs: Path, stop: threading.Event) -> None:
    """Start `python -m textgen ARGV` in the workspace and SIGKILL it at the kill's moment."""
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "textgen", *argv], cwd=kill.workspace, env=ENV,
                                   stdout=stdout, stderr=stderr)
        try:
            moment, seen = kill.moment, set()
            waiting = moment.event is not None
            while waiting and process.poll() is None and not stop.is_set():
                kind, *what = moment.event
                if kind == "file":
                    seen |= _matching(kill.workspace, what[0])
                    waiting = len(seen) < what[1]
                else:
                    waiting = out.stat().st_size < what[0]
                if waiting:  # a stat is cheap: stdout is watched more closely than the directory tree
                    time.sleep(0.002 if kind == "file" else 0.0005)
            until = (time.monotonic() if moment.event else started) + moment.delay
            while time.monotonic() < until and process.poll() is None and not stop.is_set():
                time.sleep(min(0.005, max(until - time.monotonic(), 0)))
            kill.finished = process.poll() is not None
            process.send_signal(signal.SIGKILL)
            kill.seconds = time.monotonic() - started
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    kill.stdout = out.read_text(errors="replace")
    kill.stderr = err.read_text(errors="replace")


def kills_in_background(command: "Command", moments: list[Moment], root: Path):
    """Yield each Kill once its process is dead, while the next one is already running."""
    done: queue.Queue = queue.Queue()
    stop = threading.Event()
    (root / "logs").mkdir()

    def work():
        for index, moment in enumerate(moments):
            if stop.is_set():
                return
            try:
                kill = Kill(index, moment, root / f"kill{index:02d}")
                kill.workspace.mkdir()
                argv = command.setup(kill)
                run_and_kill(argv, kill, root / "logs" / f"kill{index:02d}", stop)
                done.put(kill)
            except BaseException as exc:  # handed to the test, which raises it
                done.put(exc)
                return

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        for _ in moments:
            item = done.get(timeout=600)
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=120)


def timed_run(argv: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "textgen", *argv], cwd=cwd, env=ENV, capture_output=True,
                            timeout=600)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return seconds, result


def run_again(argv: list[str]):
    """The same command, in this process (TensorFlow is imported already)."""
    return CliRunner().invoke(cli, argv)


# --------------------------------------------------------------------------- checks


class Problems(list):
    def add(self, kind: str, text: str) -> None:
        self.append((kind, text))


def snapshot(paths: list[Path]) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in paths}


def check_unchanged(before: dict[Path, bytes], problems: Problems, when: str) -> None:
    for path, data in before.items():
        if not path.is_file():
            problems.add("user file lost", f"{when}: {path.name} is gone")
        elif path.read_bytes() != data:
            problems.add("user file changed", f"{when}: {path.name} changed")


def check_no_temporary_files(workspace: Path, problems: Problems) -> None:
    left = sorted(os.path.relpath(p, workspace) for p in _matching(workspace, "*.tmp*"))
    if left:
        problems.add(TEMPORARY, f"after the command ran again, {', '.join(left)} is left")


def model_problem(path: Path) -> str | None:
    """None when the model at `path` loads with Keras and generates a few tokens, else why not."""
    try:
        model = keras.models.load_model(path, compile=False)
        tokenizer = tokenizer_from_config(find_token_embedding(model).tokenizer)
        ids = list(tokenizer.encode(SEED_TEXT))
        for _ in range(8):  # greedy: each next token from the model's own logits
            logits = np.asarray(model(np.array([ids], np.int32), training=False))[0, -1]
            if not np.isfinite(logits).all():
                return "it gives non-finite logits"
            ids.append(int(np.argmax(logits)))
        tokenizer.decode(ids)
    except Exception as exc:  # a half-written zip fails in many ways
        return f"it does not load or generate: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return None


def result_problem(result) -> str | None:
    if result.exit_code == 0:
        return None
    detail = repr(result.exception) if result.exception and not isinstance(result.exception, SystemExit) else ""
    return f"exit {result.exit_code}: {(result.output.strip().splitlines() or [''])[-1][:300]} {detail}".strip()


# --------------------------------------------------------------------------- the commands


@dataclass
class Command:
    """One row of the matrix: how to set a workspace up, and what to check after the kill
    and after the command has run again."""

    setup: Callable[[Kill], list[str]]
    check: Callable[[Kill, Problems], None]
    life: float
    events: list


def config_file(path: Path, overrides: list[str]) -> Path:
    """A YAML config holding `overrides` (dotted keys), as a user would write it."""
    tree: dict = {}
    for item in overrides:
        key, value = item.split("=", 1)
        *sections, name = key.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = yaml.safe_load(value)
    tree.pop("output", None)  # the runs go where --output says
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def read_cache(cache: Path) -> tuple[dict, np.ndarray, dict]:
    meta = json.loads((cache / "meta.json").read_text(encoding="utf-8"))
    ids = np.fromfile(cache / "ids.bin", dtype=meta["dtype"])
    return meta, ids, json.loads((cache / "tokenizer.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def world(small_corpus, tmp_path_factory):
    """Inputs, and one uninterrupted run of each command: its duration and its results."""
    root = tmp_path_factory.mktemp("kill_matrix")
    (root / "corpus").mkdir()
    big_corpus = root / "corpus" / "tinyshakespeare.txt"  # the whole of it, so encoding takes a while
    shutil.copyfile(CORPORA / "tinyshakespeare.txt", big_corpus)
    w = {"root": root, "corpus": small_corpus, "big_corpus": big_corpus, "seconds": {}}
    w["train_config"] = config_file(root / "train.yaml", tiny_overrides(small_corpus, root, **TRAINING))
    w["prepare_config"] = config_file(root / "prepare.yaml", tiny_overrides(big_corpus, root))

    w["seconds"]["prepare"], _ = timed_run(["prepare", "--config", str(w["prepare_config"]), "--output",
                                            str(root / "prepared")], root)
    _, w["ids"], w["tokenizer"] = read_cache(root / "prepared" / "cache")
    w["seconds"]["train"], _ = timed_run(["train", "--config", str(w["train_config"]), "--output",
                                          str(root / "trained")], root)
    w["trained"] = root / "trained"
    assert model_problem(w["trained"] / "model.keras") is None
    w["seconds"]["generate"], result = timed_run(["generate", "--model", str(w["trained"] / "model.keras"),
                                                  *GENERATE, "--output", str(root / "generated.txt")], root)
    w["text"] = (root / "generated.txt").read_text(encoding="utf-8")
    w["stdout_bytes"] = len(result.stdout)
    assert len(w["text"]) > 1000, w["text"]
    # A cache of another tokenizer setting, which a prepare must replace.
    stale = run_again(["prepare", "--config", str(w["prepare_config"]), "--output", str(root / "stale"),
                       "--set", "tokenizer.lowercase=true"])
    assert stale.exit_code == 0, stale.output
    w["stale"] = root / "stale"
    print("\nuninterrupted: " + ", ".join(f"{k} {v:.1f} s" for k, v in w["seconds"].items()))
    return w


def prepare_command(w: dict) -> Command:
    """Variant 0: a new run directory; variant 1: one whose cache was made with other settings."""
    def setup(kill: Kill) -> list[str]:
        run = kill.workspace / "run"
        if kill.moment.variant:
            shutil.copytree(w["stale"], run)
        kill.extra["before"] = snapshot([w["big_corpus"], w["prepare_config"]])
        kill.extra["argv"] = ["prepare", "--config", str(w["prepare_config"]), "--output", str(run)]
        return kill.extra["argv"]

    def check(kill: Kill, problems: Problems) -> None:
        cache = kill.workspace / "run" / "cache"
        check_unchanged(kill.extra["before"], problems, "after the kill")
        if (cache / "meta.json").exists():  # a cache that says it is complete must be: the old one or the new
            try:
                meta, ids, _ = read_cache(cache)
                digest = hashlib.sha1(np.ascontiguousarray(ids, dtype="<i4")).hexdigest()
                if len(ids) != meta["tokens"] or digest != meta["sha1"]:
                    problems.add("half-written cache", "after the kill, meta.json does not describe ids.bin")
            except (OSError, ValueError, KeyError) as exc:
                problems.add("half-written cache", f"after the kill, the cache cannot be read: {exc}")
        why = result_problem(run_again(kill.extra["argv"]))
        if why:
            problems.add("does not complete", f"prepare again: {why}")
            return
        meta, ids, tokenizer = read_cache(cache)
        if not np.array_equal(ids, w["ids"]) or tokenizer != w["tokenizer"]:
            problems.add("wrong cache", "after prepare again, the token ids or tokenizer differ from an "
                                        "uninterrupted prepare's")
        check_unchanged(kill.extra["before"], problems, "after prepare again")
        check_no_temporary_files(kill.workspace, problems)

    events = [(("file", ".ids.bin.*", 1), 0.0, 0), (("file", ".ids.bin.*", 1), 0.0, 1),
              (("file", ".ids.bin.*", 1), 0.15, 0), (("file", ".ids.bin.*", 1), 0.15, 1),
              (("file", ".tokenizer.json.*", 1), 0.0, 0), (("file", ".tokenizer.json.*", 1), 0.0, 1),
              (("file", ".meta.json.*", 1), 0.0, 0), (("file", ".meta.json.*", 1), 0.0, 1)]
    return Command(setup, check, w["seconds"]["prepare"], events)


def train_command(w: dict, overwrite: bool) -> Command:
    """A new run; or, with `overwrite`, a run directory holding a finished model (and a file of
    the user's) trained again with --overwrite: its model.keras must load at every moment."""
    config = str(w["train_config"])

    def setup(kill: Kill) -> list[str]:
        run = kill.workspace / "run"
        argv = ["train", "--config", config, "--output", str(run)]
        protected = [w["corpus"], w["train_config"]]
        if overwrite:
            shutil.copytree(w["trained"], run)
            (run / "notes.txt").write_text(USER_NOTE, encoding="utf-8")
            protected.append(run / "notes.txt")
            kill.extra["old_state"] = (run / "checkpoint" / "state.json").read_bytes()
            argv.append("--overwrite")
        kill.extra["before"] = snapshot(protected)
        kill.extra["argv"] = argv
        return argv

    def check(kill: Kill, problems: Problems) -> None:
        run = kill.workspace / "run"
        model = run / "model.keras"
        check_unchanged(kill.extra["before"], problems, "after the kill")
        if model.exists():
            why = model_problem(model)
            if why:
                problems.add("half-written model", f"after the kill, model.keras is there but {why}")
        elif overwrite:
            problems.add(OLD_MODEL_LOST, "after the kill, model.keras is missing: the old model is gone and "
                                         "the new run had not produced one")
        check_run_files(run, problems)

        state_path = run / "checkpoint" / "state.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else None
        if state is not None and not state.get("finished"):
            argv = [*kill.extra["argv"][:5], "--resume"]
        elif state is not None and state_path.read_bytes() != kill.extra.get("old_state"):
            # this run finished before the kill (in its last model save): the next command that
            # writes the run directory, here a prepare that reuses the cache, sweeps what it left
            argv = ["prepare", *kill.extra["argv"][1:5]]
        else:
            argv = kill.extra["argv"]
        if argv:
            why = result_problem(run_again(argv))
            if why:
                problems.add("does not complete", f"{' '.join(argv[:1] + argv[5:]) or 'train'} again: {why}")
                return
        why = model_problem(model) if model.exists() else "it is missing"
        if why:
            problems.add("no model at the end", f"after train again, {why}")
        history = run / "history.csv"
        epochs = [r["epoch"] for r in csv.DictReader(history.open(encoding="utf-8"))] if history.exists() else []
        if epochs != ["1", "2"]:
            problems.add("wrong history", f"after train again, history.csv holds epochs {epochs}")
        check_unchanged(kill.extra["before"], problems, "after train again")
        check_no_temporary_files(kill.workspace, problems)

    events = [(("file", ".step-*.tmp.*", 1), 0.0, 0),  # writing the first checkpoint's weights
              (("file", ".step-*.tmp.*", 1), 0.4, 0),  # the steps after it
              (("file", ".model.keras.*", 1), 0.0, 0),  # writing the first model
              (("file", ".model.keras.*", 1), 0.4, 0),  # the second epoch
              (("file", ".model.keras.*", 2), 0.0, 0),  # writing the second model
              (("file", ".model.keras.*", 3), 0.0, 0)]  # the final write: the model card's last history
    return Command(setup, check, w["seconds"]["train"], events)


def check_run_files(run: Path, problems: Problems) -> None:
    """The run's text files, whichever are there, are whole."""
    for path in [run / "config.yaml", run / "history.csv", *run.glob("checkpoint/*.json"), *run.glob("cache/*.json")]:
        if not path.exists():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                json.loads(text)
            elif path.suffix == ".yaml":
                assert isinstance(yaml.safe_load(text), dict)
            else:
                assert text.startswith("epoch,") and text.endswith("\n")
        except (ValueError, AssertionError, yaml.YAMLError) as exc:
            problems.add("half-written file", f"after the kill, {path.relative_to(run)} is not whole ({exc!r})")


def generate_command(w: dict) -> Command:
    """Variant 0: --output names a file the user already has; variant 1: a new file."""
    model = w["trained"] / "model.keras"

    def setup(kill: Kill) -> list[str]:
        output = kill.workspace / "samples.txt"
        if kill.moment.variant == 0:
            output.write_text(OLD_SAMPLES, encoding="utf-8")
        kill.extra["before"] = snapshot([model])
        kill.extra["argv"] = ["generate", "--model", str(model), *GENERATE, "--output", str(output)]
        return kill.extra["argv"]

    def check(kill: Kill, problems: Problems) -> None:
        output = kill.workspace / "samples.txt"
        check_unchanged(kill.extra["before"], problems, "after the kill")
        allowed = {w["text"], OLD_SAMPLES if kill.moment.variant == 0 else None}
        found = output.read_text(encoding="utf-8") if output.exists() else None
        if found not in allowed:
            problems.add("half-written output", f"after the kill, --output holds {len(found or '')} characters: "
                                                f"neither the old content nor the whole text ({found!r:.80})")
        why = result_problem(run_again(kill.extra["argv"]))
        if why:
            problems.add("does not complete", f"generate again: {why}")
            return
        if output.read_text(encoding="utf-8") != w["text"]:
            problems.add("wrong output", "after generate again, --output differs from an uninterrupted run's")
        check_unchanged(kill.extra["before"], problems, "after generate again")
        check_no_temporary_files(kill.workspace, problems)

    whole = w["stdout_bytes"]
    # The final write lasts about a millisecond, so six moments aim at it: the instant stdout
    # holds the whole text, and the instant the temporary file appears.
    events = [(("printed", 40), 0.0, 0), (("printed", whole // 2), 0.0, 1),
              *[(("printed", whole), 0.0, variant) for variant in (0, 1, 0, 1)],
              (("file", ".samples.txt.*", 1), 0.0, 0), (("file", ".samples.txt.*", 1), 0.0, 1)]
    return Command(setup, check, w["seconds"]["generate"], events)


CASES = ["prepare", "train", "train --overwrite", "generate --output"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_sigkill_at_20_moments_keeps_user_files_and_leaves_whole_artifacts(case, world, tmp_path):
    command = {"prepare": lambda: prepare_command(world), "train": lambda: train_command(world, False),
               "train --overwrite": lambda: train_command(world, True),
               "generate --output": lambda: generate_command(world)}[case]()
    moments = kill_plan(case, command.life, command.events)
    problems, lines = [], []
    for kill in kills_in_background(command, moments, tmp_path):
        found = Problems()
        command.check(kill, found)
        last = (kill.stdout.strip().splitlines() or ["(nothing)"])[-1][:70]
        lines.append(f"{kill.describe()}; last printed: {last}")
        problems += [(kind, f"{kill.describe()}: {text}") for kind, text in found]
    print(f"\n{case}: {len(lines)} kills\n  " + "\n  ".join(lines))
    print("  problems:\n  " + "\n  ".join(f"[{kind}] {text}" for kind, text in problems) if problems
          else "  no problems")
    assert not problems, "\n".join(f"[{kind}] {text}" for kind, text in problems)
