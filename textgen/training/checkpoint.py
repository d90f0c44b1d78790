"""The training state that `textgen train --resume` continues from.

RUN_DIR/checkpoint/ holds:
    tokenizer.json           the run's tokenizer, written once when the run starts
    step-NNNNNNNNN.weights.h5 model weights and optimizer slots at global step N
    step-NNNNNNNNN.average.npz the averaged weights at step N (training.ema_momentum only)
    state.json               the step, the history so far, early-stopping counters, the
                             random-generator states and the name of the weights file

Writes are ordered so that a crash at any moment leaves a consistent checkpoint: the new
weights file (and averages file) is written under a temporary name and renamed into place, then state.json is
replaced atomically to point at it (that rename is the commit), and only then are older
weights files removed. A reader follows state.json and always finds the file it names.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import keras
import numpy as np

from textgen.errors import TextgenError, UsageError
from textgen.saving import in_memory
from textgen.files import remove_file, write_bytes_atomic, write_text_atomic
from textgen.training.advice import START_AGAIN

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
TOKENIZER_FILE = "tokenizer.json"
STATE_VERSION = 1


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def has_checkpoint(run_dir: str | Path) -> bool:
    return (checkpoint_dir(run_dir) / STATE_FILE).exists()


def write_tokenizer(run_dir: str | Path, tokenizer_config: dict) -> None:
    directory = checkpoint_dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / TOKENIZER_FILE, json.dumps(tokenizer_config))


def read_tokenizer(run_dir: str | Path) -> dict:
    return _read_json(checkpoint_dir(run_dir) / TOKENIZER_FILE)


def save_checkpoint(run_dir: str | Path, model: keras.Model, state: dict,
                    averages: list[np.ndarray] | None = None) -> None:
    """Save weights, optimizer slots, `averages` (the averaged weights, if any) and `state`
    (JSON-able) at the optimizer's current step."""
    directory = checkpoint_dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    step = int(model.optimizer.iterations.numpy())
    name = f"step-{step:09d}.weights.h5"
    # The same optimizer step means the same weights: a second save at one step (the end of
    # the last epoch, then the run's final state) only rewrites state.json, which also keeps
    # a kill during that second save from leaving a temporary weights file no later save removes.
    # Only files state.json names are reused: one a killed process wrote but never committed
    # may hold other weights (a resumed run may have changed its learning rate since).
    committed = _committed(directory)
    if name not in committed:
        weights = in_memory(model.save_weights, name)  # serialised in memory: see textgen.saving
        write_bytes_atomic(directory / name, weights, suffix=".tmp.weights.h5")
    average_name = None
    if averages is not None:
        average_name = f"step-{step:09d}.average.npz"
        if average_name not in committed:
            buffer = io.BytesIO()
            np.savez(buffer, *averages)
            write_bytes_atomic(directory / average_name, buffer.getbuffer(), suffix=".tmp.npz")
    full = {"version": STATE_VERSION, **state, "global_step": step, "weights": name, "average": average_name,
            "rng": [v.numpy().tolist() for v in _seed_states(model)]}
    write_text_atomic(directory / STATE_FILE, json.dumps(full, indent=1))
    for old in directory.iterdir():  # older states, and temporary files a killed process left
        if _OWN_FILE.fullmatch(old.name) and old.name not in (name, average_name):
            remove_file(str(old))


# The temporaries save_checkpoint writes (mkstemp's eight characters): of the weights and
# averages files, and of state.json and tokenizer.json.
_TEMPORARY_NAME = (r"\.step-\d{9,}\.(weights\.h5|average\.npz)\.[a-z0-9_]{8}\.tmp\.(weights\.h5|npz)"
                   r"|\.(state|tokenizer)\.json\.[a-z0-9_]{8}\.tmp")
_TEMPORARY = re.compile(_TEMPORARY_NAME)
# Those and the weights and averages files themselves: the only files in checkpoint/ it ever removes.
_OWN_FILE = re.compile(r"step-\d{9,}\.(weights\.h5|average\.npz)|" + _TEMPORARY_NAME)


def remove_checkpoint_temporaries(run_dir: str | Path) -> None:
    """Remove the temporary files a process killed while saving left in checkpoint/ (only
    those: committed files stay). The next save removes them too, but a run killed during its
    very last save has no next save."""
    directory = checkpoint_dir(run_dir)
    if directory.is_dir():
        for entry in directory.iterdir():
            if _TEMPORARY.fullmatch(entry.name) and entry.is_file():
                remove_file(str(entry))


def _committed(directory: Path) -> set[str]:
    """The files the current state.json names (and that exist)."""
    try:
        state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {n for n in (state.get("weights"), state.get("average")) if n and (directory / n).is_file()}


def read_state(run_dir: str | Path) -> dict:
    """The saved state; a UsageError when there is none to resume."""
    path = checkpoint_dir(run_dir) / STATE_FILE
    if not path.exists():
        raise UsageError(f"{run_dir} holds no training state to resume ({path} is missing); "
                         "start the run without --resume")
    state = _read_json(path)
    problem = _state_problem(state)
    if problem:
        raise TextgenError(f"{path} is damaged ({problem}); the checkpoint cannot be resumed, {START_AGAIN}")
    if state.get("version", 0) > STATE_VERSION:
        raise TextgenError(f"{path} was written by a newer textgen; upgrade textgen to resume this run")
    for key in ("weights", "average"):
        if (key == "weights" or state.get(key)) and not (checkpoint_dir(run_dir) / state.get(key, "")).is_file():
            raise TextgenError(f"{path} names {key} file {state.get(key)} that is missing; "
                               f"the checkpoint cannot be resumed, {START_AGAIN}")
    return state


_WHOLE, _NUMBER, _TEXT, _MAPPING, _LIST = "a whole number", "a number", "a string", "a mapping", "a list"
# What a resume reads from state.json: key -> (kind, required). Keys a resume reads with .get
# are optional, so a state written before they existed still resumes.
_STATE = {"version": (_WHOLE, False), "global_step": (_WHOLE, True), "weights": (_TEXT, True),
          "average": (_TEXT, False), "config": (_MAPPING, True), "card": (_MAPPING, True),
          "corpus": (_MAPPING, True), "steps_per_epoch": (_WHOLE, True), "recorder": (_MAPPING, True),
          "metrics": (_LIST, True), "precision": (_TEXT, False), "averaging": (_MAPPING, False),
          "finished": (_TEXT, False), "rng": (_LIST, False)}
_RECORDER = {"rows": (_LIST, True), "waited": (_WHOLE, False), "best_loss": (_NUMBER, False),
             "best_epoch": (_WHOLE, False), "best_step": (_WHOLE, False)}
_CORPUS = {"tokens": (_WHOLE, True), "sha1": (_TEXT, True)}


def _is(value, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, {_WHOLE: int, _NUMBER: (int, float), _TEXT: str, _MAPPING: dict, _LIST: list}[kind])


def _state_problem(state) -> str | None:
    """What is wrong with the shape of a loaded state.json, or None."""
    if not isinstance(state, dict):
        return f"it holds {type(state).__name__}, not a mapping"
    for prefix, values, schema in (("", state, _STATE), ("recorder.", state.get("recorder"), _RECORDER),
                                   ("corpus.", state.get("corpus"), _CORPUS)):
        if not isinstance(values, dict):
            continue  # reported as the key of the level above
        for key, (kind, required) in schema.items():
            value = values.get(key)
            if value is None:
                if required:
                    return f"{prefix}{key} is missing"
            elif not _is(value, kind):
                return f"{prefix}{key} is {json.dumps(value)[:40]}, not {kind}"
    if state["global_step"] < 0 or state["steps_per_epoch"] < 1:
        return "global_step or steps_per_epoch is out of range"
    if not all(isinstance(row, dict) for row in state["recorder"]["rows"]):
        return "recorder.rows holds an entry that is not a mapping"
    for name in (state["weights"], state.get("average") or ""):
        if Path(name).name != name or "\\" in name:
            return f"it names {name!r}, a file outside the checkpoint folder"
    return None


def read_averages(run_dir: str | Path, state: dict) -> list[np.ndarray] | None:
    """The averaged weights the checkpoint holds, in weight order; None if it holds none."""
    if not state.get("average"):
        return None
    path = checkpoint_dir(run_dir) / state["average"]
    try:
        with np.load(path) as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]
    except Exception as exc:  # numpy and zipfile raise many types for a damaged file
        raise _unloadable(path, exc) from None


def restore_checkpoint(run_dir: str | Path, model: keras.Model, state: dict) -> None:
    """Load weights, optimizer slots and random-generator states into a compiled `model`."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # slots must exist before they are loaded
    path = checkpoint_dir(run_dir) / state["weights"]
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py and Keras raise many types for a damaged or mismatched file
        raise _unloadable(path, exc) from None
    states = _seed_states(model)
    if len(states) == len(state.get("rng", [])):
        for variable, value in zip(states, state["rng"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))


def _seed_states(model: keras.Model) -> list:
    """Dropout's random-generator states: not in the weights file, but needed for an exact resume."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _unloadable(path: Path, exc: Exception) -> TextgenError:
    return TextgenError(f"checkpoint {path} cannot be loaded ({str(exc).splitlines()[0][:200]}); {START_AGAIN}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path} is missing; the run cannot be resumed, {START_AGAIN}") from None
    except (OSError, ValueError) as exc:
        raise TextgenError(f"{path} cannot be read ({exc}); {START_AGAIN}") from None
