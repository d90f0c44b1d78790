"""The run directory: which folders textgen may write into, what it may remove there, and
one writer at a time.

A run directory is textgen's own. A manifest (`.textgen-run.json`) marks it and lists the
entries textgen claimed there; textgen writes, replaces and removes only those, and inside
its folders (checkpoint/, logs/, cache/) only files with the names it gives its own files.
Anything else a user puts into a run directory stays. textgen starts a run only in a folder
that does not exist, is empty, or is already its own (a run directory from a textgen that
wrote no manifest is recognised by its checkpoint state); a folder holding anything else is
refused, with or without --overwrite.

One process writes a run directory at a time: `train`, `train --resume` and `prepare` hold
an operating-system lock on `.textgen-run.lock` for as long as they work, and a second one
fails at once naming the process that holds it. The lock goes with the process, so a
crashed or killed run never leaves the directory locked.

A new run goes only where no trained model and no unfinished run would be lost (or with
--overwrite), and never inside a folder the corpus is read from. A corpus read from
standard input is copied into the run's cache first, so it can be read twice and resumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import os
import shutil
import sys
from pathlib import Path

from textgen.config import STDIN, Config
from textgen.data.prepare import cache_dir
from textgen.errors import TextgenError, UsageError
from textgen.files import remove_temporaries, temporary_name_pattern, write_file_atomic, write_text_atomic
from textgen.training import advice
from textgen.training.checkpoint import has_checkpoint, read_state, remove_checkpoint_temporaries

MANIFEST_FILE = ".textgen-run.json"
LOCK_FILE = ".textgen-run.lock"
MANIFEST_VERSION = 1
MODEL_FILE = "model.keras"  # the best model: the one file generation needs
CONFIG_FILE = "config.yaml"  # the resolved config the run used
LOGS_DIR = "logs"  # TensorBoard's
STDIN_FILE = "stdin.txt"  # a corpus read from standard input, copied into the token cache

# The entries textgen creates at the top of a run directory.
ENTRIES = (MODEL_FILE, CONFIG_FILE, "history.csv", "loss.png", "checkpoint", LOGS_DIR, "cache")
# What textgen writes inside its folders (paths relative to the folder), temporary names included.
OWN_FILES = {
    "checkpoint": ("state.json", "tokenizer.json", "step-*.weights.h5", "step-*.average.npz", ".step-*.tmp*",
                   ".state.json.*", ".tokenizer.json.*"),
    "logs": ("train/events.out.tfevents.*", "validation/events.out.tfevents.*"),
    "cache": ("ids.bin", "meta.json", "tokenizer.json", STDIN_FILE, ".ids.bin.*", ".meta.json.*", ".tokenizer.json.*",
              f".{STDIN_FILE}.*"),
}
# The temporary files textgen's writers leave at the top of a run directory when killed (name:
# the suffix after mkstemp's random part); checkpoint/ and cache/ clear their own.
TEMPORARIES = {MODEL_FILE: ".tmp.keras", CONFIG_FILE: ".tmp", "history.csv": ".tmp", "loss.png": ".tmp.png",
               MANIFEST_FILE: ".tmp"}
# The files of a finished or unfinished run that must not mix with a new one; model.keras is
# left to be replaced by the new run's first good model.
RUN_FILES = (CONFIG_FILE, "history.csv", "loss.png")


class RunDirectoryBusy(UsageError):
    """Another textgen process holds the run directory."""


class RunDirectory:
    """A run directory opened for writing: owned by textgen and locked by this process.

    Use as a context manager. On leaving it the lock is released, and a directory this
    process created that holds nothing of a run (a start that failed before writing
    anything) is removed again, with the parents it created.
    """

    def __init__(self, path: str | Path, command: str = "textgen"):
        self.path = Path(path)
        self.command = command
        self._created: list[Path] = []  # folders this process made, deepest last
        self._lock = None

    def __enter__(self) -> "RunDirectory":
        self._check_ownership()
        self._make()
        try:
            self._acquire()
            self._claim()
            remove_temporaries(self.path, TEMPORARIES)  # safe under the lock: no other writer is at work
            remove_temporaries(cache_dir(self.path), {STDIN_FILE: ".tmp"})
            remove_checkpoint_temporaries(self.path)
        except BaseException:
            self._release(remove_if_empty=True)
            raise
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self._release(remove_if_empty=kind is not None)

    # ------------------------------------------------------------------ ownership

    def _check_ownership(self) -> None:
        path = self.path
        if not path.exists():
            return
        if not path.is_dir():
            raise _cannot_write(path, "it is a file")
        if (path / MANIFEST_FILE).is_file():
            return
        # A process killed while claiming the folder leaves the lock and the manifest's temporary
        # file: the folder is still a new one, and opening it removes that file.
        claiming = temporary_name_pattern(MANIFEST_FILE, TEMPORARIES[MANIFEST_FILE])
        entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE and not claiming.fullmatch(p.name))
        if not entries:
            return
        foreign = [name for name in entries if name not in ENTRIES]
        if not foreign and is_legacy_run(path):
            return  # a run directory written before textgen kept a manifest: only textgen's entries in it
        shown = ", ".join(foreign[:3] or entries[:3]) + (" ..." if len(foreign or entries) > 3 else "")
        raise UsageError(f"{path} is not empty and is not a textgen run directory (it holds {shown}); textgen "
                         f"writes only into a new or empty folder or a run directory of its own: "
                         f"{advice.OTHER_OUTPUT}, for example {path / 'run'}")

    def _make(self) -> None:
        missing = []
        for folder in (self.path, *self.path.parents):
            if folder.exists():
                break
            missing.append(folder)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _cannot_write(self.path, exc.strerror) from None
        self._created = list(reversed(missing))

    def _claim(self) -> None:
        """Write the manifest, or check that every entry textgen will write is claimed in it."""
        if (self.path / MANIFEST_FILE).is_file():
            claimed = set(read_manifest(self.path).get("entries", ()))
            for name in ENTRIES:
                if name not in claimed and (self.path / name).exists():
                    raise UsageError(f"{self.path / name} was not written by textgen; move it away or choose "
                                     "another run directory with --output")
            if claimed >= set(ENTRIES):
                return
        self._write_manifest({"version": MANIFEST_VERSION, "entries": list(ENTRIES)})

    def _write_manifest(self, manifest: dict) -> None:
        # write_text_atomic answers a failed write with one TextgenError naming the file
        write_text_atomic(self.path / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")

    # ------------------------------------------------------------------ the lock

    def _acquire(self) -> None:
        path = self.path / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _cannot_write(self.path, exc.strerror) from None
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirectoryBusy(f"{self.path} is in use by another textgen process ({holder}); wait for it "
                                   "to finish, stop it, or choose another run directory with --output")
        self._lock = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}: {self.command}\n".encode())
        except OSError:
            pass  # the lock holds without the note of who holds it

    def _release(self, remove_if_empty: bool) -> None:
        if self._lock is not None:
            if remove_if_empty:
                for name in OWN_FILES:  # folders a failed start made and left empty
                    _rmdir_if_empty(self.path / name)
            if remove_if_empty and self._holds_nothing():
                _remove(self.path / LOCK_FILE)
                _remove(self.path / MANIFEST_FILE)
            os.close(self._lock)  # closing releases the lock
            self._lock = None
        if remove_if_empty:
            for folder in reversed(self._created):
                try:
                    folder.rmdir()  # only while empty
                except OSError:
                    break

    def _holds_nothing(self) -> bool:
        return all(p.name in (LOCK_FILE, MANIFEST_FILE) for p in self.path.iterdir())

    # ------------------------------------------------------------------ replacing a run

    def clear_previous_run(self) -> bool:
        """Remove the previous run's own files so nothing of it mixes with the new one.

        model.keras stays until the new run's first good model replaces it, so the old
        model can still be loaded if the new run fails or is stopped first. Returns
        whether a previous model is kept that way.
        """
        for name in RUN_FILES:
            _remove(self.path / name)
        for folder, patterns in OWN_FILES.items():
            if folder == "cache":
                continue  # the token cache checks itself and is reused when it still fits
            remove_own_files(self.path / folder, patterns)
        return (self.path / MODEL_FILE).is_file()


def check_new_run(config: Config, *, overwrite: bool = False) -> Path:
    """Check, before anything is written, that the run directory may take a new run.

    Only reads: the directory is taken (and an old run in it cleared) once the new run's
    corpus has been read and its model built.
    """
    run_dir = Path(config.output.dir)
    check_outside_corpus(run_dir, config.corpus.paths + config.corpus.validation_paths)
    if not overwrite:
        if unfinished(run_dir):
            raise UsageError(f"{run_dir} holds an unfinished run; pass --resume to continue it, --overwrite "
                             f"to start again, or {advice.TRAIN_ELSEWHERE}")
        if (run_dir / MODEL_FILE).exists():
            raise UsageError(f"{run_dir} already holds a trained model; pass --overwrite to replace it "
                             f"or {advice.TRAIN_ELSEWHERE}")
    return run_dir


def unfinished(run_dir: Path) -> bool:
    """Whether `run_dir` holds a checkpoint of a run that did not finish (or cannot be read)."""
    if not has_checkpoint(run_dir):
        return False
    try:
        return not read_state(run_dir).get("finished")
    except TextgenError:
        return True


def open_for_writing(config: Config, chief: bool, command: str):
    """The run directory, owned and locked for this process; on a non-chief worker nothing
    (the chief writes the run directory, the others their private ones)."""
    return RunDirectory(config.output.dir, command) if chief else contextlib.nullcontext()


def corpus_from_stdin(config: Config, run_dir: Path) -> Config:
    """`config` with its corpus path `-` (standard input) read from a copy in the run's cache.

    The corpus is read twice (the vocabulary, then the ids) and the cache is keyed on files,
    so standard input is copied once into cache/stdin.txt, a file of textgen's own, and the
    copy is read in its place. The config keeps `-`, which a resumed run gives again.
    """
    if STDIN not in config.corpus.paths:
        return config
    stream = sys.stdin
    example = "cat book.txt | textgen train --set \"corpus.paths=['-']\""
    if stream is None or stream.closed:
        raise UsageError(f"corpus path - reads standard input, which is closed; pipe the text in: {example}")
    if stream.isatty():
        raise UsageError(f"corpus path - reads standard input, which is a terminal; pipe the text in: {example}")
    target = cache_dir(run_dir) / STDIN_FILE
    target.parent.mkdir(parents=True, exist_ok=True)

    def copy(tmp: str) -> None:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(getattr(stream, "buffer", stream), out, 1 << 20)

    write_file_atomic(target, copy)
    paths = tuple(str(target) if path == STDIN else path for path in config.corpus.paths)
    return dataclasses.replace(config, corpus=dataclasses.replace(config.corpus, paths=paths))


def check_outside_corpus(run_dir: str | Path, corpus_paths) -> None:
    """Refuse a run directory inside a folder the corpus is read from: its own files
    (config.yaml, history.csv) would become corpus text, and the corpus would change under
    the run, so it could never be resumed."""
    target = Path(os.path.expanduser(str(run_dir))).resolve()
    for pattern in corpus_paths:
        if any(c in "*?[" for c in pattern):
            if "**" not in pattern:
                continue  # a glob reads one level: a run directory's files are one level further down
            folder = Path(os.path.expanduser(pattern[:pattern.index("**")] or ".")).resolve()
        else:
            folder = Path(os.path.expanduser(pattern)).resolve()
            if not folder.is_dir():
                continue
        if target == folder or folder in target.parents:
            raise UsageError(f"the run directory {run_dir} is inside the corpus folder {pattern or '.'}, whose "
                             "files are all read as corpus; choose an --output outside it")


def remove_own_files(folder: Path, patterns: tuple[str, ...]) -> None:
    """Remove the files under `folder` whose relative paths match `patterns`, then the folders
    left empty; files of any other name stay, and so do the folders holding them."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), reverse=True):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not path.is_symlink() and any(fnmatch.fnmatchcase(relative, p) for p in patterns):
            _remove(path)
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        _rmdir_if_empty(path)
    _rmdir_if_empty(folder)


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def is_legacy_run(path: Path) -> bool:
    """A run directory a textgen without manifests wrote: its checkpoint state is textgen's."""
    try:
        state = json.loads((path / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and {"version", "global_step", "weights", "config"} <= state.keys()


def _cannot_write(path: Path, why: str) -> TextgenError:
    return TextgenError(f"output directory {path} cannot be written ({why}); {advice.OTHER_OUTPUT}")


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True  # a file system without locks (some network mounts): carry on unlocked
    return True


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "its process id is unknown"


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
