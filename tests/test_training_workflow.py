"""Resume, interruption, early stopping, NaN, time budget and fine-tuning, with real training runs."""

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CORPORA, terminal_signals, tiny_overrides, validation_loss_of
from textgen.training.callbacks import RunRecorder, StopGuard, TrainingStopped, global_step
from textgen.training.checkpoint import checkpoint_dir, read_state
from textgen.cli.main import cli
from textgen.config import load_config
from textgen.data.corpus import stream_corpus
from textgen.data.dataset import make_dataset, split_ids
from textgen.errors import TextgenError, UsageError
from textgen.saving import load_keras_model
from textgen.models.info import model_facts
from textgen.models.layers import find_token_embedding
from textgen.data.tokenizer import tokenizer_from_config
from textgen.training.train import TrainingInterrupted, train

ROOT = Path(__file__).resolve().parents[1]


def quiet(_):
    pass


def config_for(corpus, out, **extra):
    return load_config(None, tiny_overrides(corpus, out, **extra))


def interrupt_at(monkeypatch, step):
    """Ask for a stop (as Ctrl-C does) once the optimizer has made `step` updates."""
    original = StopGuard.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        if global_step(self.model) == step:
            self.request.reason = "SIGINT"
        original(self, batch, logs)

    monkeypatch.setattr(StopGuard, "on_train_batch_end", on_train_batch_end)


def losses(result):
    return [(row["loss"], row["val_loss"]) for row in result.history]


@pytest.fixture(scope="module")
def uninterrupted(small_corpus, tmp_path_factory):
    """Three epochs of the tiny character model, never interrupted."""
    out = tmp_path_factory.mktemp("straight") / "run"
    return train(config_for(small_corpus, out, **{"training.epochs": 3}), echo=quiet, verbose=0)


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("level", ["char", pytest.param("word", marks=pytest.mark.slow)])  # word: more of the same
def test_resume_mid_epoch_ends_where_an_uninterrupted_run_does(level, small_corpus, uninterrupted, tmp_path,
                                                               monkeypatch, capsys):
    settings = {"training.epochs": 3, "tokenizer.level": level}
    straight = uninterrupted if level == "char" else \
        train(config_for(small_corpus, tmp_path / "straight", **settings), echo=quiet, verbose=0)
    steps = straight.global_step // 3
    stop_at = steps + steps // 2  # the middle of the second epoch
    config = config_for(small_corpus, tmp_path / "run", **settings)
    interrupt_at(monkeypatch, stop_at)
    with pytest.raises(TrainingInterrupted, match=f"epoch 2, step {steps // 2} of {steps}") as stop:
        train(config, echo=quiet, verbose=0)
    assert "--resume" in str(stop.value)
    monkeypatch.undo()
    saved = load_keras_model(tmp_path / "run" / "model.keras")  # loadable, holds epoch 1
    card = find_token_embedding(saved).model_card["history"]
    assert card["best_epoch"] == 1 and card["stopped"] == "interrupt"  # what `textgen info` shows
    assert read_state(tmp_path / "run")["global_step"] == stop_at

    capsys.readouterr()
    resumed = train(config, resume=True, echo=quiet, verbose=1)
    bars = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch ")]
    assert bars == ["Epoch 2/3", "Epoch 3/3"]  # out of the run's epochs, though two fit calls finish them
    assert resumed.global_step == straight.global_step
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    np.testing.assert_allclose(losses(resumed), losses(straight), rtol=0, atol=1e-3)
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and sum(int(r["best"]) for r in rows) == 1
    tokenizer = json.loads((checkpoint_dir(tmp_path / "run") / "tokenizer.json").read_text())
    finished = find_token_embedding(load_keras_model(resumed.model_path))
    assert finished.tokenizer == tokenizer and finished.model_card["history"]["stopped"] == "completed"


def test_resume_refuses_what_cannot_continue(small_corpus, tmp_path):
    config = config_for(small_corpus, tmp_path / "run", **{"training.max_minutes": 1e-6})
    with pytest.raises(UsageError, match="no training state to resume"):
        train(config, resume=True, echo=quiet, verbose=0)
    assert train(config, echo=quiet, verbose=0).stopped == "time_limit"
    with pytest.raises(UsageError, match="unfinished run; pass --resume"):
        train(config, echo=quiet, verbose=0)
    changed = config_for(small_corpus, tmp_path / "run", **{"training.batch_size": 16})
    with pytest.raises(UsageError, match="training.batch_size is 32 in the run being resumed .* but 16 now"):
        train(changed, resume=True, echo=quiet, verbose=0)
    with pytest.raises(UsageError, match="pass only one"):
        train(config, resume=True, overwrite=True, echo=quiet, verbose=0)
    finished = config_for(small_corpus, tmp_path / "run", **{"training.epochs": 1})
    assert train(finished, resume=True, echo=quiet, verbose=0).stopped == "completed"
    with pytest.raises(UsageError, match="already finished its 1 epoch; raise training.epochs"):
        train(finished, resume=True, echo=quiet, verbose=0)
    # Killed after its last epoch was saved, before the run was marked finished: resuming ends it.
    state_path = checkpoint_dir(tmp_path / "run") / "state.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**state, "finished": None}))
    assert train(finished, resume=True, echo=quiet, verbose=0).stopped == "completed"
    assert json.loads(state_path.read_text())["finished"] == "completed"


def test_steps_per_epoch_time_budget_and_resume(small_corpus, tmp_path):
    settings = {"training.steps_per_epoch": 5, "training.epochs": 2}
    budget = config_for(small_corpus, tmp_path / "run", **settings, **{"training.max_minutes": 1e-6})
    messages = []
    stopped = train(budget, echo=messages.append, verbose=0)
    assert stopped.stopped == "time_limit" and stopped.global_step == 1
    assert any("training.max_minutes" in m and "--resume" in m for m in messages)
    load_keras_model(stopped.model_path)  # no epoch finished, yet a model was saved
    resumed = train(config_for(small_corpus, tmp_path / "run", **settings), resume=True, echo=quiet, verbose=0)
    assert resumed.stopped == "completed" and resumed.global_step == 10 and len(resumed.history) == 2


def budget_ends_at(monkeypatch, step):
    """Let the wall-clock budget run out once the optimizer has made `step` updates."""
    original = StopGuard._check

    def check(self):
        if global_step(self.model) == step:
            raise TrainingStopped("time")
        original(self)

    monkeypatch.setattr(StopGuard, "_check", check)


def test_a_budget_stop_mid_epoch_keeps_the_steps_since_the_last_epoch_if_they_score_better(small_corpus, tmp_path,
                                                                                          monkeypatch):
    settings = {"training.steps_per_epoch": 5, "training.epochs": 3, "training.learning_rate": 0.02}
    straight = train(config_for(small_corpus, tmp_path / "straight", **settings), echo=quiet, verbose=0)
    budget_ends_at(monkeypatch, 8)  # epoch 2, step 3 of 5
    messages = []
    stopped = train(config_for(small_corpus, tmp_path / "run", **settings, **{"training.max_minutes": 60}),
                    echo=messages.append, verbose=0)
    monkeypatch.undo()
    assert stopped.stopped == "time_limit" and stopped.global_step == 8 and stopped.best_epoch == 1
    # Epoch 1 scored straight.history[0]; the weights at step 8 score better and are the model now.
    assert stopped.best_step == 8
    card = find_token_embedding(load_keras_model(stopped.model_path)).model_card["history"]
    assert card["best_step"] == 8 and card["best_loss"] < straight.history[0]["val_loss"]
    assert model_facts(load_keras_model(stopped.model_path))["best_step"] == 8
    assert validation_loss_of(stopped.model_path, small_corpus) == pytest.approx(card["best_loss"], abs=1e-4)
    assert any("step 8 (epoch 2, step 3 of 5)" in m and "saved as the model" in m for m in messages)
    assert any("keeps the weights at step 8, part-way through epoch 2" in m for m in messages)
    # Scoring the partial epoch must not disturb a resume: it ends exactly where the straight run did.
    resumed = train(config_for(small_corpus, tmp_path / "run", **settings), resume=True, echo=quiet, verbose=0)
    assert resumed.global_step == 15 and resumed.best_step is None and resumed.best_epoch == straight.best_epoch
    np.testing.assert_allclose(losses(resumed), losses(straight), rtol=0, atol=1e-3)


def test_partial_weights_that_score_worse_leave_the_best_epoch_in_place(tmp_path):
    recorder = RunRecorder(tmp_path / "model.keras", tmp_path / "history.csv", {}, "char", quiet,
                           resumed={"rows": [{"epoch": 1, "loss": 2.0, "val_loss": 1.5}], "best_loss": 1.5,
                                    "best_epoch": 1})
    assert not recorder.consider_partial(8, 1.6) and not recorder.consider_partial(8, float("nan"))
    assert recorder.best_step is None and recorder.best_loss == 1.5 and not (tmp_path / "model.keras").exists()
    assert recorder.state()["best_step"] is None


# --------------------------------------------------------------------------- signals


def spawn_training(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "textgen", "train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=terminal_signals)  # as a terminal would


def wait_for(condition, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("training did not get there in time")
        time.sleep(0.02)


def current_step(run_dir):
    try:
        return json.loads((checkpoint_dir(run_dir) / "state.json").read_text())["global_step"]
    except (FileNotFoundError, ValueError):
        return 0


def test_a_second_ctrl_c_before_any_checkpoint_says_to_start_again(small_corpus, tmp_path, monkeypatch):
    """No checkpoint yet: suggesting --resume would only fail with 'no training state to resume'."""
    def stop_at_once(self, batch, logs=None):
        if global_step(self.model) == 2:
            raise KeyboardInterrupt  # what a second Ctrl-C raises

    monkeypatch.setattr(StopGuard, "on_train_batch_end", stop_at_once)
    out = tmp_path / "run"
    sets = [a for o in tiny_overrides(small_corpus, out) for a in ("--set", o)]
    result = CliRunner().invoke(cli, ["train", *sets])
    assert result.exit_code == 1 and "before its first checkpoint" in result.output
    assert "start again with: textgen train --set" in result.output and "--resume" not in result.output
    again = shlex.split(result.output.split("start again with: ")[1].strip())[2:]
    monkeypatch.undo()
    assert CliRunner().invoke(cli, ["train", *again]).exit_code == 0


def test_ctrl_c_saves_a_loadable_model_and_prints_how_to_continue(small_corpus, tmp_path):
    out = tmp_path / "run"
    sets = [a for o in tiny_overrides(small_corpus, out, **{"training.epochs": 500}) for a in ("--set", o)]
    process = spawn_training(sets, tmp_path)
    wait_for(lambda: (out / "history.csv").exists(), process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGINT, stderr  # ended by Ctrl-C: a shell shows 130
    assert "stopping after this step" in stdout
    assert "continue with: textgen train" in stderr and stderr.rstrip().endswith("--resume")
    assert "Traceback" not in stderr
    load_keras_model(out / "model.keras")
    done = len(list(csv.DictReader((out / "history.csv").open())))
    again = shlex.split(stderr.split("continue with: ")[1].strip())[1:]
    result = CliRunner().invoke(cli, [*again, "--set", f"training.epochs={done + 1}"])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    assert len(list(csv.DictReader((out / "history.csv").open()))) == done + 1


def test_a_killed_run_resumes_from_its_last_checkpoint(small_corpus, uninterrupted, tmp_path):
    out = tmp_path / "run"
    settings = {"training.epochs": 500, "training.checkpoint_every": 5}
    process = spawn_training([a for o in tiny_overrides(small_corpus, out, **settings) for a in ("--set", o)],
                             tmp_path)
    wait_for(lambda: current_step(out) >= 35, process)  # into the second epoch (26 steps each)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    step = current_step(out)
    assert step >= 35 and (step % 5 == 0 or step % 26 == 0)  # a checkpoint, not the step it died at
    resumed = train(config_for(small_corpus, out, **{"training.epochs": 3, "training.checkpoint_every": 5}),
                    resume=True, echo=quiet, verbose=0)
    assert resumed.global_step == uninterrupted.global_step and len(resumed.history) == 3
    np.testing.assert_allclose(losses(resumed), losses(uninterrupted), rtol=0, atol=1e-3)
    assert not list(checkpoint_dir(out).glob(".*"))
    assert len(list(checkpoint_dir(out).glob("step-*.weights.h5"))) == 1


# --------------------------------------------------------------------------- stopping


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text((CORPORA / "tinyshakespeare.txt").read_text()[:4000])
    # float32: the check below re-scores model.keras in float32 and expects the recorded loss to 1e-5.
    config = config_for(corpus, tmp_path / "run", **{
        "training.epochs": 40, "training.patience": 2, "model.units": 128, "training.learning_rate": 0.02,
        "corpus.validation_fraction": 0.3, "training.batch_size": 8, "training.precision": "float32"})
    result = train(config, echo=quiet, verbose=0)
    assert result.stopped == "early_stopping"
    val = [row["val_loss"] for row in result.history]
    assert len(val) == result.best_epoch + 2 < 40
    assert result.best_epoch == 1 + int(np.argmin(val))
    rows = list(csv.DictReader((result.run_dir / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows if r["best"] == "1"] == [result.best_epoch]
    # model.keras holds the best epoch's weights: its validation loss is that epoch's.
    model = load_keras_model(result.model_path)
    tokenizer = tokenizer_from_config(find_token_embedding(model).tokenizer)
    ids = tokenizer.encode("".join(stream_corpus([str(corpus)])))
    _, val_ids = split_ids(ids, 0.3, 32)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.evaluate(make_dataset(val_ids, 32, 8, shuffle=False), verbose=0)
    assert loss == pytest.approx(min(val), abs=1e-5)
    assert find_token_embedding(model).model_card["history"]["stopped"] == "early_stopping"


def test_nan_loss_stops_with_advice_and_keeps_the_last_good_model(small_corpus, tmp_path):
    good = train(config_for(small_corpus, tmp_path / "run", **{"training.epochs": 1}), echo=quiet, verbose=0)
    before = good.model_path.read_bytes()
    # A checkpoint due at every step: the step that diverges must not replace the last good one.
    exploding = config_for(small_corpus, tmp_path / "run", **{"training.epochs": 2, "training.l2": 1e38,
                                                               "training.checkpoint_every": 1})
    with pytest.raises(TextgenError) as err:
        train(exploding, resume=True, echo=quiet, verbose=0)
    message = str(err.value)
    assert "NaN" in message and "training.learning_rate" in message and "training.clipnorm" in message
    assert "keeps epoch 1" in message and "--resume" in message
    assert good.model_path.read_bytes() == before
    state = read_state(tmp_path / "run")
    assert state["global_step"] == good.global_step
    arrays = []
    with h5py.File(checkpoint_dir(tmp_path / "run") / state["weights"], "r") as saved:
        saved.visititems(lambda _, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    assert arrays and all(np.isfinite(a).all() for a in arrays)


# --------------------------------------------------------------------------- fine-tuning


def test_fine_tuning_starts_from_the_saved_weights(trained_model, small_corpus, tmp_path):
    parent = find_token_embedding(load_keras_model(trained_model))
    # Different architecture keys in the config are replaced by the saved model's.
    config = config_for(small_corpus, tmp_path / "tuned", **{"training.epochs": 1, "model.units": 64,
                                                              "training.init_from": str(trained_model)})
    said = []
    result = train(config, echo=said.append, verbose=0)
    assert any(line.endswith("are reused; the config's model.units=64 does not apply") for line in said), said
    assert result.initial_val_loss == pytest.approx(parent.model_card["history"]["best_loss"], abs=1e-5)
    child = find_token_embedding(load_keras_model(result.model_path))
    assert child.tokenizer == parent.tokenizer
    assert child.model_card["init_from"]["path"] == str(trained_model)
    assert child.model_card["config"]["model"]["units"] == 32
    assert result.history[0]["val_loss"] < result.initial_val_loss + 0.05


def test_fine_tuning_on_unknown_characters(trained_model, tmp_path):
    corpus = tmp_path / "new.txt"
    corpus.write_text((CORPORA / "tinyshakespeare.txt").read_text()[:6000] + "Café au lait, señor.\n" * 20)

    lines = []

    def fine_tune(policy):
        return train(config_for(corpus, tmp_path / policy, **{"training.epochs": 1, "training.unknown_tokens": policy,
                                                              "training.init_from": str(trained_model)}),
                     echo=lines.append, verbose=0)

    with pytest.raises(UsageError, match=r"'é', 'ñ'\); set training.unknown_tokens=drop"):
        fine_tune("error")
    with pytest.raises(UsageError, match="character models have no unknown token"):
        fine_tune("unk")
    assert fine_tune("drop").history[0]["loss"] > 0
    # 'é' and 'ñ' twenty times each are left out, and only they: the corpus is 40 characters shorter
    assert "40 tokens of the corpus are not in the model's vocabulary and were left out: 'é', 'ñ'" in lines
    size = len(corpus.read_text())
    assert any(line.startswith(f"corpus: {size - 40:,} tokens ") for line in lines), lines


# --------------------------------------------------------------------------- command line


def test_train_flags_that_conflict(tmp_path, trained_model):
    result = CliRunner().invoke(cli, ["train", "--resume", "--init-from", str(trained_model),
                                      "--output", str(tmp_path / "x")])
    assert result.exit_code == 2 and "pass only one" in result.output
    result = CliRunner().invoke(cli, ["train", "--resume", "--overwrite", "--output", str(tmp_path / "x")])
    assert result.exit_code == 2 and "pass only one" in result.output
    assert "resolved config" not in result.output  # refused before the config is printed
    result = CliRunner().invoke(cli, ["train", "--resume", "--output", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no training state to resume" in result.output


class RateRecorder(keras.callbacks.Callback):
    """The learning rate each training step is taken at."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate))


@pytest.mark.slow  # a real timed run; test_schedules checks the curve in make test
def test_a_cosine_over_the_time_budget_reaches_its_floor_when_the_budget_ends(small_corpus, tmp_path):
    settings = {"training.lr_schedule": "cosine", "training.decay_over": "time", "training.max_minutes": 0.1,
                "training.learning_rate": 0.01, "training.min_learning_rate": 0.001, "training.epochs": 1000,
                "training.steps_per_epoch": 1000}
    rates = RateRecorder()
    stopped = train(config_for(small_corpus, tmp_path / "run", **settings), echo=quiet, verbose=0,
                    callbacks=(rates,))
    assert stopped.stopped == "time_limit" and len(rates.rates) > 2
    assert all(later <= earlier + 1e-9 for earlier, later in zip(rates.rates, rates.rates[1:]))
    assert rates.rates[-1] < 0.001 + 0.1 * 0.009  # the last step ran within the budget's last few percent
    state = json.loads((checkpoint_dir(tmp_path / "run") / "state.json").read_text())
    assert state["budget_progress"] == pytest.approx(1.0, abs=0.05)
    # Resumed after spending its budget: a new budget, all of it at the floor.
    again = RateRecorder()
    resumed = train(config_for(small_corpus, tmp_path / "run", **settings), resume=True, echo=quiet, verbose=0,
                    callbacks=(again,))
    assert resumed.global_step > stopped.global_step
    assert again.rates and again.rates == pytest.approx([0.001] * len(again.rates))
