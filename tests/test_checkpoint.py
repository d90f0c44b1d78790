"""textgen.training.checkpoint: the training state a resume continues from, written so that a
reader always finds a whole checkpoint, and read back exactly."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from textgen.config import ModelConfig
from textgen.errors import TextgenError, UsageError
from textgen.models.builder import build_model
from textgen.training.checkpoint import (checkpoint_dir, has_checkpoint, read_averages, read_state, read_tokenizer,
                                         restore_checkpoint, save_checkpoint, write_tokenizer)

TOKENIZER = {"level": "char", "vocabulary": list("abcdefgh")}
STATE = {"config": {"model": {}}, "card": {}, "corpus": {"tokens": 100, "sha1": "ab"}, "steps_per_epoch": 4,
         "recorder": {"rows": [{"epoch": 1, "loss": 2.0}], "waited": 0, "best_loss": 2.0, "best_epoch": 1},
         "metrics": [[1.5, 3.0]]}


def compiled_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_model(ModelConfig(cell="gru", embedding_dim=4, units=8, dropout=0.2), TOKENIZER)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def train_steps(model: keras.Model, steps: int) -> None:
    x = np.random.default_rng(1).integers(0, 8, size=(steps, 4, 6)).astype("int32")
    for batch in x:
        model.train_on_batch(batch, batch)


def optimizer_values(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.optimizer.variables]  # copies, taken without numpy's __array__ warning


def test_a_restored_checkpoint_continues_exactly(tmp_path):
    """Weights, optimizer slots, the step and dropout's random state come back: the next steps
    of the restored model are those of the original."""
    model = compiled_model()
    train_steps(model, 3)
    averages = [w * 0.5 for w in model.get_weights()]
    save_checkpoint(tmp_path, model, STATE, averages)
    state = read_state(tmp_path)
    assert state["global_step"] == 3 and state["weights"] == "step-000000003.weights.h5"
    assert {k: state[k] for k in STATE} == STATE

    restored = compiled_model(seed=7)  # other initial weights and random state
    restore_checkpoint(tmp_path, restored, state)
    assert int(restored.optimizer.iterations.numpy()) == 3
    for a, b in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(optimizer_values(restored), optimizer_values(model)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(read_averages(tmp_path, state), averages):
        np.testing.assert_array_equal(a, b)
    train_steps(model, 2)
    train_steps(restored, 2)
    for a, b in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_new_checkpoint_replaces_the_older_files_and_a_second_save_at_one_step_keeps_the_weights(tmp_path):
    model = compiled_model()
    train_steps(model, 2)
    save_checkpoint(tmp_path, model, STATE, [w for w in model.get_weights()])
    train_steps(model, 1)
    save_checkpoint(tmp_path, model, STATE)  # no averages this time
    folder = checkpoint_dir(tmp_path)
    assert {p.name for p in folder.iterdir()} == {"state.json", "step-000000003.weights.h5"}
    weights = folder / "step-000000003.weights.h5"
    written = weights.stat().st_mtime_ns, weights.stat().st_ino
    save_checkpoint(tmp_path, model, {**STATE, "finished": "completed"})
    assert (weights.stat().st_mtime_ns, weights.stat().st_ino) == written  # only state.json was rewritten
    assert read_state(tmp_path)["finished"] == "completed" and read_averages(tmp_path, read_state(tmp_path)) is None


def test_an_uncommitted_weights_file_at_the_same_step_is_rewritten(tmp_path):
    """A file a killed save left under the name of this step, never named by state.json, may hold
    other weights: it is written again, not trusted."""
    model = compiled_model()
    train_steps(model, 2)
    folder = checkpoint_dir(tmp_path)
    folder.mkdir()
    (folder / "step-000000002.weights.h5").write_bytes(b"half a weights file")
    save_checkpoint(tmp_path, model, STATE)
    restored = compiled_model(seed=3)
    restore_checkpoint(tmp_path, restored, read_state(tmp_path))
    for a, b in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_tokenizer_is_kept_beside_the_state(tmp_path):
    assert not has_checkpoint(tmp_path)
    write_tokenizer(tmp_path, TOKENIZER)
    assert read_tokenizer(tmp_path) == TOKENIZER
    assert not has_checkpoint(tmp_path)  # the tokenizer alone is no state to resume


def written_state(tmp_path, change) -> None:
    model = compiled_model()
    train_steps(model, 1)
    save_checkpoint(tmp_path, model, STATE)
    path = checkpoint_dir(tmp_path) / "state.json"
    state = json.loads(path.read_text())
    change(state, checkpoint_dir(tmp_path))
    path.write_text(json.dumps(state))


@pytest.mark.parametrize("change, error, words", [
    (lambda s, d: s.update(version=99), TextgenError, "was written by a newer textgen; upgrade textgen"),
    (lambda s, d: (d / s["weights"]).unlink(), TextgenError, "names weights file step-000000001.weights.h5 that is "
                                                             "missing; the checkpoint cannot be resumed, start again "
                                                             "with --overwrite"),
    (lambda s, d: s.update(average="step-000000001.average.npz"), TextgenError, "names average file"),
    (lambda s, d: s.update(steps_per_epoch=0), TextgenError, "steps_per_epoch is out of range"),
], ids=["newer", "weights missing", "average missing", "steps out of range"])
def test_a_state_that_cannot_be_resumed_is_one_line(change, error, words, tmp_path):
    written_state(tmp_path, change)
    with pytest.raises(error) as caught:
        read_state(tmp_path)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_no_state_is_a_usage_error_saying_to_start_without_resume(tmp_path):
    with pytest.raises(UsageError, match="holds no training state to resume .* start the run without --resume"):
        read_state(tmp_path)


def test_a_damaged_weights_file_is_one_line(tmp_path):
    written_state(tmp_path, lambda s, d: (d / s["weights"]).write_bytes(b"not hdf5"))
    with pytest.raises(TextgenError, match=r"checkpoint .*step-000000001\.weights\.h5 cannot be loaded .*; start "
                                           "again with --overwrite"):
        restore_checkpoint(tmp_path, compiled_model(), read_state(tmp_path))


def test_a_killed_saves_temporaries_are_removed_and_nothing_else(tmp_path):
    from textgen.training.checkpoint import checkpoint_dir, remove_checkpoint_temporaries

    directory = checkpoint_dir(tmp_path)
    directory.mkdir(parents=True)
    left = [".state.json.ab12cd34.tmp", ".tokenizer.json.zz99yy88.tmp",
            ".step-000000024.weights.h5.k3j4h5g6.tmp.weights.h5"]
    kept = ["state.json", "step-000000024.weights.h5", ".state.json.notours", "notes.tmp"]
    for name in left + kept:
        (directory / name).write_text("x")
    remove_checkpoint_temporaries(tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == sorted(kept)
