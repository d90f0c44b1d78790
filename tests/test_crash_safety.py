"""Crash safety: SIGKILL a training process at random moments; every time, the run
directory's model (when there is one) must load and generate, and `--resume` must reach the
planned epoch count.

The kill moments come from a fixed seed: each trial waits for the run to reach a random
checkpointed step (0 = do not wait for one), then sleeps a random fraction of a second, so
kills land during start-up, corpus preparation, training steps, checkpoint writes and model
saves.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_overrides
from textgen.training.checkpoint import checkpoint_dir, has_checkpoint
from textgen.config import load_config
from textgen.saving import load_keras_model
from textgen.training.train import train
from textgen.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 10
EPOCHS, STEPS = 3, 8  # 24 optimizer steps in all
SETTINGS = {"training.epochs": EPOCHS, "training.steps_per_epoch": STEPS, "training.checkpoint_every": 3,
            "training.ema_momentum": 0.9}  # averaged weights: one more checkpoint file to keep consistent


def checkpointed_step(run_dir: Path) -> int:
    try:
        return json.loads((checkpoint_dir(run_dir) / "state.json").read_text())["global_step"]
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def kill_plan(seed: int = 20240607) -> list[tuple[int, float]]:
    """(checkpointed step to wait for, extra seconds) per trial."""
    rng = random.Random(seed)
    steps = [0, 0, 0, 3, 6, 9, 12, 15, 18, 21]  # a third of the kills before the first checkpoint
    rng.shuffle(steps)
    schedule = []
    for step in steps[:TRIALS]:
        # step 0: a moment in the first seconds (importing TensorFlow, reading the corpus, first steps)
        schedule.append((step, round(rng.uniform(1.0, 7.0) if step == 0 else rng.uniform(0.0, 0.6), 2)))
    return schedule


def run_and_kill(out: Path, sets: list[str], wait_step: int, extra: float, cwd: Path) -> str:
    """Start training, SIGKILL it at the planned moment; return what it was doing."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "textgen", "train", *sets], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while wait_step and checkpointed_step(out) < wait_step and process.poll() is None:
        assert time.monotonic() < deadline, "training did not reach the step in time"
        time.sleep(0.01)
    time.sleep(extra)
    finished = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    return "after it finished" if finished else f"at checkpointed step {checkpointed_step(out)}"


@pytest.mark.slow
def test_sigkill_at_random_moments_never_costs_the_model_or_the_run(small_corpus, tmp_path):
    survived = []
    for trial, (wait_step, extra) in enumerate(kill_plan()):
        out = tmp_path / f"run{trial}"
        overrides = tiny_overrides(small_corpus, out, **SETTINGS)
        where = run_and_kill(out, [a for o in overrides for a in ("--set", o)], wait_step, extra, tmp_path)
        context = f"trial {trial}: killed {where}"

        model_path = out / "model.keras"
        if model_path.exists():  # whatever was published must be whole
            load_keras_model(model_path)

        config = load_config(None, overrides)
        if has_checkpoint(out):
            state = json.loads((checkpoint_dir(out) / "state.json").read_text())
            done = len(state["recorder"]["rows"]) >= EPOCHS and state["global_step"] == EPOCHS * STEPS
            if not done:
                result = train(config, resume=True, echo=lambda _: None, verbose=0, progress=None)
                assert len(result.history) == EPOCHS and result.global_step == EPOCHS * STEPS, context
            else:  # killed during the run's last saves: the next command on the run clears what they left
                try:
                    train(config, resume=True, echo=lambda _: None, verbose=0, progress=None)
                except UsageError as exc:
                    assert "already finished" in str(exc), context
        else:  # killed before the first checkpoint: nothing to resume, a fresh start must be allowed
            assert not model_path.exists(), context
            result = train(config, echo=lambda _: None, verbose=0, progress=None)
            assert len(result.history) == EPOCHS, context

        rows = (out / "history.csv").read_text().strip().splitlines()
        assert len(rows) == EPOCHS + 1, context  # a header and one row per epoch, none twice
        model = load_keras_model(model_path)
        assert model(np.zeros((1, 4), np.int32)).shape[:2] == (1, 4), context
        assert not [p.name for p in checkpoint_dir(out).glob(".*")], context  # no stray temporary files
        assert len(list(checkpoint_dir(out).glob("step-*.weights.h5"))) == 1, context
        assert len(list(checkpoint_dir(out).glob("step-*.average.npz"))) == 1, context
        survived.append(where)
    assert len(survived) == TRIALS
    print(f"\n{TRIALS} kills survived: " + "; ".join(survived))


def test_files_a_killed_save_left_uncommitted_are_rewritten_not_reused(small_corpus, tmp_path):
    """A process killed after writing step N's files but before state.json named them leaves
    them behind; the resumed run, reaching step N again, must write its own."""
    settings = {**SETTINGS, "training.epochs": 1, "training.steps_per_epoch": 3}
    train(load_config(None, tiny_overrides(small_corpus, tmp_path / "run", **settings)), echo=lambda _: None,
          verbose=0, progress=None)
    directory = checkpoint_dir(tmp_path / "run")
    for name in ("step-000000006.weights.h5", "step-000000006.average.npz", ".state.json.k1ll3d_x.tmp"):
        (directory / name).write_bytes(b"left by a killed process")
    more = load_config(None, tiny_overrides(small_corpus, tmp_path / "run", **{**settings, "training.epochs": 2}))
    assert train(more, resume=True, echo=lambda _: None, verbose=0, progress=None).global_step == 6
    further = load_config(None, tiny_overrides(small_corpus, tmp_path / "run", **{**settings, "training.epochs": 3}))
    assert train(further, resume=True, echo=lambda _: None, verbose=0, progress=None).global_step == 9
    assert not [p.name for p in directory.glob(".*")]  # a half-written state.json's temporary file too
