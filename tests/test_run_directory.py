"""The run directory is textgen's own: it writes only into new, empty or its own folders,
removes only the files it wrote, lets one process write at a time, and keeps a replaced
run's model until the new run has a good one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import tiny_overrides
from textgen.cli.main import cli
from textgen.config import load_config
from textgen.errors import UsageError
from textgen.training.rundir import LOCK_FILE, MANIFEST_FILE, RunDirectory, RunDirectoryBusy, check_new_run, unfinished
from textgen.training.train import TrainingInterrupted, train


def train_argv(corpus, out, *flags, **extra):
    return ["train", *[a for o in tiny_overrides(corpus, out, **extra) for a in ("--set", o)], *flags]


def contents(folder: Path) -> dict[str, bytes | None]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def finished_run(trained_model, tmp_path) -> Path:
    """A copy of the session's finished tiny run."""
    run = tmp_path / "run"
    shutil.copytree(trained_model.parent, run)
    return run


# --------------------------------------------------------------------------- may a new run start here


def test_a_new_run_never_replaces_a_model_or_an_unfinished_run_without_overwrite(small_corpus, finished_run):
    config = load_config(None, tiny_overrides(small_corpus, finished_run))
    assert not unfinished(finished_run)
    with pytest.raises(UsageError) as caught:
        check_new_run(config)
    assert str(caught.value) == (f"{finished_run} already holds a trained model; pass --overwrite to replace it or "
                                 "--output to train into another directory")
    assert check_new_run(config, overwrite=True) == finished_run
    state = finished_run / "checkpoint" / "state.json"
    state.write_text(state.read_text().replace('"finished": "completed"', '"finished": null'))
    assert unfinished(finished_run)
    with pytest.raises(UsageError, match="holds an unfinished run; pass --resume to continue it, --overwrite to start "
                                         "again, or --output to train into another directory"):
        check_new_run(config)
    state.write_text("{")  # a state that cannot be read is no finished run either
    assert unfinished(finished_run)
    assert check_new_run(config, overwrite=True) == finished_run
    assert not unfinished(finished_run / "elsewhere")


# --------------------------------------------------------------------------- whose folder


def test_a_users_folder_is_refused_with_or_without_overwrite(small_corpus, tmp_path):
    project = tmp_path / "project"
    (project / "logs").mkdir(parents=True)
    (project / "checkpoint").mkdir()
    (project / "config.yaml").write_text("# my own config\n")
    (project / "logs" / "notes.txt").write_text("my notes\n")
    (project / "checkpoint" / "weights.bin").write_bytes(b"\x01\x02")
    before = contents(project)
    for flags in ((), ("--overwrite",)):
        result = CliRunner().invoke(cli, train_argv(small_corpus, project, *flags))
        assert result.exit_code == 2, result.output
        assert "is not empty and is not a textgen run directory" in result.stderr
        assert "choose another with --output" in result.stderr
        assert contents(project) == before


def test_overwrite_removes_only_the_files_textgen_wrote(small_corpus, finished_run):
    mine = {"logs/notes.txt": b"mine\n", "checkpoint/README": b"keep\n", "notes.md": b"# notes\n",
            "cache/corpus-origin.txt": b"where it came from\n"}
    for name, data in mine.items():
        (finished_run / name).write_bytes(data)
    old_events = sorted(p.name for p in (finished_run / "logs").rglob("events.out.tfevents.*"))
    result = CliRunner().invoke(cli, train_argv(small_corpus, finished_run, "--overwrite",
                                                **{"training.epochs": 1}))
    assert result.exit_code == 0, result.output
    for name, data in mine.items():
        assert (finished_run / name).read_bytes() == data
    new_events = sorted(p.name for p in (finished_run / "logs").rglob("events.out.tfevents.*"))
    assert new_events and not set(new_events) & set(old_events)  # the old run's logs went, the new run's came
    state = json.loads((finished_run / "checkpoint" / "state.json").read_text())
    assert len(state["recorder"]["rows"]) == 1


def test_a_foreign_checkpoint_folder_does_not_make_a_run(small_corpus, tmp_path):
    folder = tmp_path / "looks-like-a-run"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "mine.h5").write_bytes(b"not textgen's")
    (folder / "config.yaml").write_text("# mine\n")
    before = contents(folder)
    result = CliRunner().invoke(cli, train_argv(small_corpus, folder))
    assert result.exit_code == 2 and "is not a textgen run directory" in result.stderr
    assert contents(folder) == before


def test_a_run_directory_without_a_manifest_is_still_textgens(small_corpus, finished_run):
    """Run directories written before the manifest existed are recognised by their checkpoint state."""
    (finished_run / MANIFEST_FILE).unlink()
    (finished_run / LOCK_FILE).unlink()
    result = CliRunner().invoke(cli, train_argv(small_corpus, finished_run, "--overwrite",
                                                **{"training.epochs": 1}))
    assert result.exit_code == 0, result.output
    assert json.loads((finished_run / MANIFEST_FILE).read_text())["entries"]
    # with a file of someone else's beside it, it is not only textgen's: refused
    (finished_run / MANIFEST_FILE).unlink()
    (finished_run / "thesis.tex").write_text("\\begin{document}\n")
    result = CliRunner().invoke(cli, train_argv(small_corpus, finished_run, "--overwrite"))
    assert result.exit_code == 2 and "thesis.tex" in result.stderr


def test_a_run_directory_inside_the_corpus_folder_is_refused(small_corpus, tmp_path):
    corpus_dir = tmp_path / "texts"
    corpus_dir.mkdir()
    shutil.copy(small_corpus, corpus_dir / "a.txt")
    for paths in (f"['{corpus_dir}']", f"['{corpus_dir}/**/*.txt']"):
        for command in ("train", "prepare"):
            argv = [command, "--set", f"corpus.paths={paths}", "--output", str(corpus_dir / "run")]
            result = CliRunner().invoke(cli, argv)
            assert result.exit_code == 2, result.output
            assert "is inside the corpus folder" in result.stderr
            assert sorted(p.name for p in corpus_dir.iterdir()) == ["a.txt"]


def test_a_failed_start_leaves_no_folder_behind(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"text\x00with a NUL\n" * 10)
    out = tmp_path / "new" / "nested" / "run"
    result = CliRunner().invoke(cli, train_argv(bad, out))
    assert result.exit_code == 1 and "looks binary" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]
    # an empty folder the user made stays, and is left empty
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, train_argv(bad, tmp_path / "empty"))
    assert result.exit_code == 1 and list((tmp_path / "empty").iterdir()) == []


def test_a_folder_killed_while_being_claimed_opens_as_a_new_run_directory(tmp_path):
    """SIGKILL between creating the manifest's temporary file and renaming it leaves only that
    file and the lock: the folder is textgen's, and opening it removes the temporary."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_text("")
    (folder / f".{MANIFEST_FILE}.abcd1234.tmp").write_text("{")
    with RunDirectory(folder, "textgen train"):
        pass
    assert sorted(p.name for p in folder.iterdir()) == sorted([LOCK_FILE, MANIFEST_FILE])
    # beside a file of the user's, the folder is still refused, and nothing in it is touched
    other = tmp_path / "other"
    other.mkdir()
    (other / f".{MANIFEST_FILE}.abcd1234.tmp").write_text("{")
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a textgen run directory"):
        RunDirectory(other, "textgen train").__enter__()
    assert sorted(p.name for p in other.iterdir()) == sorted([f".{MANIFEST_FILE}.abcd1234.tmp", "notes.txt"])


# --------------------------------------------------------------------------- one writer


def test_a_second_writer_fails_at_once_naming_the_first(small_corpus, finished_run, tmp_path):
    with RunDirectory(finished_run, "textgen train (the live one)"):
        before = contents(finished_run)
        for argv in (train_argv(small_corpus, finished_run, "--overwrite"),
                     train_argv(small_corpus, finished_run, "--resume", **{"training.epochs": 3}),
                     ["prepare", *train_argv(small_corpus, finished_run)[1:]]):
            started = time.monotonic()
            result = CliRunner().invoke(cli, argv)
            assert result.exit_code == 2, result.output
            assert f"is in use by another textgen process (pid {os.getpid()}: textgen train (the live one))" \
                in result.stderr
            assert "--overwrite" not in result.stderr.split("Error:")[1]  # no advice that would delete the live run
            assert time.monotonic() - started < 30
        assert contents(finished_run) == before
    # released with the context: the directory takes a writer again
    with RunDirectory(finished_run, "next"):
        pass


def test_the_lock_goes_with_a_killed_process(tmp_path):
    run = tmp_path / "run"
    code = ("import sys, time; from textgen.training.rundir import RunDirectory\n"
            f"d = RunDirectory({str(run)!r}, 'holder').__enter__(); print('locked', flush=True); time.sleep(60)")
    # stderr away from the test run's terminal: the holder imports TensorFlow, which logs as it loads
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirectoryBusy, match=f"pid {holder.pid}: holder"):
            RunDirectory(run).__enter__()
    finally:
        holder.kill()
        holder.wait()
    with RunDirectory(run):  # SIGKILL left the lock file, not the lock
        pass


# --------------------------------------------------------------------------- replacing a run


class _AtStep(keras.callbacks.Callback):
    def __init__(self, step, action):
        super().__init__()
        self.step, self.action, self.seen = step, action, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            self.action(self.model)


def _poison(model):
    weights = model.get_weights()
    weights[0] = np.full_like(weights[0], np.nan)
    model.set_weights(weights)


@pytest.mark.parametrize("stop", ["interrupt", "nan"])
def test_overwrite_keeps_the_old_model_until_the_new_run_has_one(stop, small_corpus, finished_run):
    old_model = (finished_run / "model.keras").read_bytes()
    config = load_config(None, tiny_overrides(small_corpus, finished_run, **{"training.checkpoint_every": 1}))
    action = (lambda model: os.kill(os.getpid(), signal.SIGINT)) if stop == "interrupt" else _poison
    messages = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, whatever ran pytest
    try:
        with pytest.raises(Exception) as raised:
            train(config, overwrite=True, echo=messages.append, verbose=0, callbacks=(_AtStep(2, action),))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert isinstance(raised.value, TrainingInterrupted if stop == "interrupt" else Exception)
    assert "still holds the model of the run this one replaces" in str(raised.value)
    assert (finished_run / "model.keras").read_bytes() == old_model
    keras.models.load_model(finished_run / "model.keras")
    if stop == "interrupt":  # the new run resumes, and its first good epoch replaces the old model
        result = train(config, resume=True, echo=messages.append, verbose=0)
        assert result.best_epoch and (finished_run / "model.keras").read_bytes() != old_model
        card = keras.models.load_model(finished_run / "model.keras").get_layer("token_embedding").model_card
        assert card["history"]["best_epoch"] == result.best_epoch


def test_a_run_directory_path_that_is_a_file_is_refused(small_corpus, tmp_path):
    target = tmp_path / "run"
    target.write_text("a file\n")
    with pytest.raises(Exception, match="cannot be written"):
        RunDirectory(target).__enter__()
    assert target.read_text() == "a file\n"
    with pytest.raises(UsageError, match="not empty and is not a textgen run directory"):
        RunDirectory(tmp_path).__enter__()


# --------------------------------------------------------------------------- the corpus on standard input


def test_a_corpus_path_of_dash_reads_standard_input(small_corpus, tmp_path):
    text = small_corpus.read_text(encoding="utf-8")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, train_argv(small_corpus, out, **{"corpus.paths": "['-']", "training.epochs": 1}),
                                input=text)
    assert result.exit_code == 0, result.output
    assert (out / "cache" / "stdin.txt").read_text(encoding="utf-8") == text
    card = keras.models.load_model(out / "model.keras").get_layer("token_embedding").model_card
    assert card["config"]["corpus"]["paths"] == ["-"]
    assert card["corpus_tokens"] == len(text) + (not text.endswith("\n"))  # the reader ends a file with a newline
    # resumed with the same text on standard input, the run goes on; with other text it is refused
    argv = train_argv(small_corpus, out, "--resume", **{"corpus.paths": "['-']", "training.epochs": 2})
    assert CliRunner().invoke(cli, argv, input=text[:-100]).exit_code == 2
    result = CliRunner().invoke(cli, argv, input=text)
    assert result.exit_code == 0, result.output
    assert len(json.loads((out / "checkpoint" / "state.json").read_text())["recorder"]["rows"]) == 2


def test_standard_input_on_a_terminal_is_refused_at_once(small_corpus, tmp_path, monkeypatch):
    class Terminal:
        closed = False

        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    config = load_config(None, tiny_overrides(small_corpus, tmp_path / "run", **{"corpus.paths": "['-']"}))
    with pytest.raises(UsageError, match="reads standard input, which is a terminal; pipe the text in"):
        train(config, echo=lambda _: None, verbose=0)
    assert not (tmp_path / "run").exists()


def test_a_run_saved_with_relative_corpus_paths_still_resumes(small_corpus, tmp_path, monkeypatch):
    """Runs from before configs held absolute paths saved them relative to the working directory."""
    monkeypatch.chdir(small_corpus.parent)
    out = tmp_path / "run"
    argv = train_argv(small_corpus, out, **{"corpus.paths": f"['{small_corpus.name}']", "training.epochs": 1})
    assert CliRunner().invoke(cli, argv).exit_code == 0
    state_path = out / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["config"]["corpus"]["paths"] == [str(small_corpus)]
    state["config"]["corpus"]["paths"] = [small_corpus.name]  # as an older textgen saved it
    state_path.write_text(json.dumps(state))
    resumed = train_argv(small_corpus, out, "--resume", **{"corpus.paths": f"['{small_corpus.name}']",
                                                            "training.epochs": 2})
    result = CliRunner().invoke(cli, resumed)
    assert result.exit_code == 0, result.output
    assert len(json.loads(state_path.read_text())["recorder"]["rows"]) == 2
