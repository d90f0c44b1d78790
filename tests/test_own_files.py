"""textgen's own files read back: a damaged checkpoint state, a corrupted token cache,
temporary files a killed process left, and writes that fail on a full disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import tiny_overrides
from test_bad_input import check_answer, leftovers
from textgen.training.rundir import LOCK_FILE, RunDirectory
from textgen.cli.main import cli


def resume_args(corpus: Path, run_dir: Path, **extra) -> list[str]:
    return ["train", *[a for o in tiny_overrides(corpus, run_dir, **extra) for a in ("--set", o)], "--resume"]


def damage_state(change):
    def apply(state):
        change(state)
        return state
    return apply


STATE_DAMAGE = {
    "global_step a string": (damage_state(lambda s: s.update(global_step="52")),
                             'global_step is "52", not a whole number'),
    "recorder a list": (damage_state(lambda s: s.update(recorder=[1])), "recorder is [1], not a mapping"),
    "config missing": (damage_state(lambda s: s.pop("config")), "config is missing"),
    "corpus tokens a float": (damage_state(lambda s: s["corpus"].update(tokens=1.5)),
                              "corpus.tokens is 1.5, not a whole number"),
    "history rows not mappings": (damage_state(lambda s: s["recorder"].update(rows=[3])),
                                  "recorder.rows holds an entry that is not a mapping"),
    "weights outside the folder": (damage_state(lambda s: s.update(weights="../../model.keras")),
                                   "a file outside the checkpoint folder"),
    "a list, not a state": (lambda s: [s], "it holds list, not a mapping"),
}


@pytest.mark.parametrize("damage", list(STATE_DAMAGE), ids=list(STATE_DAMAGE))
def test_a_damaged_state_json_is_one_line_naming_it(damage, trained_model, small_corpus, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_model.parent, run_dir)
    path = run_dir / "checkpoint" / "state.json"
    change, words = STATE_DAMAGE[damage]
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    before = {p: p.read_bytes() for p in run_dir.rglob("*")  # the lock notes who took it last: left out
              if p.is_file() and "cache" not in p.parts and p.name != LOCK_FILE}
    result = CliRunner().invoke(cli, resume_args(small_corpus, run_dir, **{"training.epochs": 3}))
    check_answer(result, 1, words)
    assert f"{path} is damaged" in result.stderr and "start again with --overwrite" in result.stderr
    assert {p: p.read_bytes() for p in before} == before and leftovers(run_dir) == []


def test_a_state_without_the_newer_optional_keys_still_resumes(trained_model, small_corpus, tmp_path):
    """Keys a resume reads with a default (precision, averaging, rng) may be absent from an older state."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_model.parent, run_dir)
    path = run_dir / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    for key in ("precision", "averaging", "rng", "finished", "average"):
        state.pop(key, None)
    path.write_text(json.dumps(state))
    result = CliRunner().invoke(cli, resume_args(small_corpus, run_dir, **{"training.epochs": 3}))
    assert result.exit_code == 0, result.output
    assert json.loads(path.read_text())["global_step"] > state["global_step"]


# --------------------------------------------------------------------------- the token cache


def prepare(corpus: Path, run_dir: Path, shown=None, **extra):
    from textgen.config import load_config
    from textgen.data.prepare import cache_dir, prepare_corpus

    config = load_config(None, tiny_overrides(corpus, run_dir, **extra))
    return prepare_corpus(config, cache_dir(run_dir), progress=shown)


def corrupt(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


@pytest.mark.parametrize("damage", ["ids out of range", "ids in range"])
def test_a_corrupted_ids_bin_is_rebuilt_and_said_so(damage, small_corpus, tmp_path):
    import io

    import numpy as np

    run_dir = tmp_path / "run"
    first = prepare(small_corpus, run_dir)
    good = np.array(first.ids)
    ids_bin = run_dir / "cache" / "ids.bin"
    size = ids_bin.stat().st_size
    # same size, other bytes: ids past the vocabulary (TensorFlow's error) or valid ids in the
    # wrong order (training on garbage, without a word)
    wrong = b"\xff\xff" * 50 if damage == "ids out of range" else good[:50][::-1].astype("<u2").tobytes()
    corrupt(ids_bin, 1000, wrong)
    assert ids_bin.stat().st_size == size and not np.array_equal(np.fromfile(ids_bin, "<u2"), good)
    shown = io.StringIO()
    again = prepare(small_corpus, run_dir, shown)
    assert not again.reused
    np.testing.assert_array_equal(again.ids, good)
    said = [line for line in shown.getvalue().splitlines() if "checksum" in line]
    assert said == [f"the token cache {ids_bin} does not match its checksum (damaged); rebuilding it"]
    assert prepare(small_corpus, run_dir, io.StringIO()).reused  # whole again: reused


def test_a_cache_without_a_checksum_is_rebuilt_once(small_corpus, tmp_path):
    import io

    run_dir = tmp_path / "run"
    prepare(small_corpus, run_dir)
    meta_path = run_dir / "cache" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["ids_sha256"]  # a cache made before caches kept one
    meta_path.write_text(json.dumps(meta))
    shown = io.StringIO()
    assert not prepare(small_corpus, run_dir, shown).reused
    assert "checksum" not in shown.getvalue()  # nothing wrong with it: rebuilt quietly
    assert "ids_sha256" in json.loads(meta_path.read_text())
    assert prepare(small_corpus, run_dir).reused


def test_a_resume_after_ids_bin_was_corrupted_trains_on_the_corpus(trained_model, small_corpus, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_model.parent, run_dir)
    corrupt(run_dir / "cache" / "ids.bin", 2000, b"\xff\xff" * 64)
    result = CliRunner().invoke(cli, resume_args(small_corpus, run_dir, **{"training.epochs": 3}))
    assert result.exit_code == 0, result.output
    assert "does not match its checksum (damaged); rebuilding it" in result.stderr + result.output
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["recorder"]["rows"][-1]["epoch"] == 3


def test_a_killed_build_leaves_temporaries_the_next_prepare_removes(small_corpus, tmp_path):
    run_dir = tmp_path / "run"
    cache = run_dir / "cache"
    cache.mkdir(parents=True)
    left = [cache / ".ids.bin.k2_x9abc.tmp", cache / ".meta.json.abcd1234.tmp", cache / ".tokenizer.json.zz_00011.tmp"]
    # the user's files, and names close to textgen's that it did not make
    kept = [cache / name for name in ("notes.txt", ".ids.bin.backup", ".ids.bin.1234567.tmp", "ids.bin.abcdefgh.tmp",
                                      ".ids.bin.ABCDEFGH.tmp", ".other.abcdefgh.tmp")]
    for path in [*left, *kept]:
        path.write_text("x")
    prepare(small_corpus, run_dir)
    assert not any(p.exists() for p in left)
    assert all(p.read_text() == "x" for p in kept)
    for path in left:  # a reused cache cleans up too
        path.write_text("x")
    assert prepare(small_corpus, run_dir).reused and not any(p.exists() for p in left)


def test_prepare_from_the_command_line_removes_a_killed_builds_temporary(small_corpus, tmp_path):
    run_dir = tmp_path / "run"
    with RunDirectory(run_dir, "textgen prepare"):  # the run directory a killed prepare had made its own
        pass
    stale = run_dir / "cache" / ".ids.bin.q1w2e3r4.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * 4096)
    sets = [a for o in tiny_overrides(small_corpus, run_dir) for a in ("--set", o)]
    result = CliRunner().invoke(cli, ["prepare", *sets])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and leftovers(run_dir) == []


def test_a_checkpoint_removes_only_its_own_older_files(trained_model, small_corpus, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_model.parent, run_dir)
    folder = run_dir / "checkpoint"
    stale = [folder / "step-000000003.weights.h5", folder / ".state.json.abcdefgh.tmp",
             folder / ".step-000000003.weights.h5.abcdefgh.tmp.weights.h5"]
    mine = [folder / "step-notes.txt", folder / ".state.json.bak", folder / "step-000000003.weights.h5.old"]
    for path in [*stale, *mine]:
        path.write_text("x")
    result = CliRunner().invoke(cli, resume_args(small_corpus, run_dir, **{"training.epochs": 3}))
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale) and all(p.read_text() == "x" for p in mine)


# --------------------------------------------------------------------------- a full disk

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
RESUME_FIX = "free some space, then continue with `textgen train --resume`"


def files_of(run_dir: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run_dir.rglob("*")
            if p.is_file() and "logs" not in p.parts and p.name != LOCK_FILE}


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_files(trained_model, small_corpus, tmp_path,
                                                                            monkeypatch):
    """Every write of a run fails part-way with ENOSPC (faked): one line naming the destination, the
    temporary file removed, the previous model and checkpoint as they were and still loadable."""
    import textgen.files as files
    from textgen.training.checkpoint import read_state
    from textgen.saving import load_keras_model

    run_dir = tmp_path / "run"
    shutil.copytree(trained_model.parent, run_dir)
    before = files_of(run_dir)
    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            self.handle.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def full_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullDisk(handle) if "w" in mode else handle

    monkeypatch.setattr(files, "open", full_open, raising=False)
    result = CliRunner().invoke(cli, resume_args(small_corpus, run_dir, **{"training.epochs": 3}))
    check_answer(result, 1, f"cannot be written (No space left on device); {RESUME_FIX}")
    error = next(line for line in result.stderr.splitlines() if line.startswith("Error: "))
    assert error.startswith(f"Error: {run_dir}/") and ".tmp" not in error
    assert leftovers(run_dir) == []
    assert files_of(run_dir) == before
    monkeypatch.undo()
    load_keras_model(run_dir / "model.keras")
    step = read_state(run_dir)["global_step"]
    result = CliRunner().invoke(cli, resume_args(small_corpus, run_dir, **{"training.epochs": 3}))
    assert result.exit_code == 0, result.output  # the checkpoint it kept resumes
    assert read_state(run_dir)["global_step"] > step


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (root only): too small for a checkpoint of a 256-unit GRU beside the previous one."""
    if not AS_ROOT or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)]).returncode:
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)])


@pytest.mark.slow  # a real file system filled up; 24 s
def test_a_real_full_disk_during_training_is_one_line_then_resumes(small_disk, small_corpus):
    from textgen.training.checkpoint import read_state

    run_dir = small_disk / "run"
    sets = tiny_overrides(small_corpus, run_dir, **{"model.units": 256, "training.epochs": 3,
                                                    "training.checkpoint_every": 5})
    argv = [sys.executable, "-m", "textgen", "train", *[a for o in sets for a in ("--set", o)]]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1, done.stderr[-3000:]  # not 139: h5py no longer writes to the disk itself
    assert "Traceback" not in done.stderr and "h5py" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: {run_dir}/checkpoint/step-000000010.weights.h5 cannot be written "
                      f"(No space left on device); {RESUME_FIX}"]
    assert leftovers(run_dir) == []
    assert read_state(run_dir)["global_step"] == 5  # the previous checkpoint, whole
    # a folder that turned read-only names the file it could not write
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and str(run_dir) in errors[0] and ".tmp" not in errors[0], errors
    subprocess.run(["mount", "-o", "remount,rw,size=30m", str(small_disk)], check=True)
    done = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_state(run_dir)["global_step"] == 3 * 26 and leftovers(run_dir) == []
