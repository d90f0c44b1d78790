"""Precision, XLA and kernels: fused CPU kernels equal Keras's, mixed precision trains and saves float32."""

import json
import platform
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from conftest import tiny_overrides
from textgen.training import distribute
from textgen.cli.main import cli
from textgen.config import ModelConfig, load_config
from textgen.training.distribute import check_resumable_precision, kernel_report, plan_devices
from textgen.errors import UsageError
from textgen.models.cells.gru import FusedGRU
from textgen.models.cells.lstm import FusedLSTM
from textgen.generation.generate import load_keras_model
from textgen.models.layers import find_token_embedding
from textgen.models.builder import build_model
from textgen.saving import inference_config
from textgen.training.train import train


def gradients(layer, x, initial_state=None):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, initial_state=initial_state, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.sin(tf.cast(y, tf.float32)))
    return y, tape.gradient(loss, [x, *layer.trainable_weights])


@pytest.mark.parametrize("keras_class, fused_class", [(keras.layers.LSTM, FusedLSTM), (keras.layers.GRU, FusedGRU)])
@pytest.mark.parametrize("return_sequences, groups", [(True, 1), (False, 1), (True, 2), (False, 3)])
def test_fused_kernels_compute_what_keras_computes(keras_class, fused_class, return_sequences, groups, monkeypatch):
    """In one loop, or in groups of rows (of 1 and 2 rows, or 1 each) run as separate loops."""
    from textgen.models import fused_rnn

    monkeypatch.setattr(fused_rnn, "row_groups", lambda batch: groups)
    runs, run_sequence = [], fused_rnn.run_sequence
    monkeypatch.setattr(fused_rnn, "run_sequence", lambda *args: runs.append(1) or run_sequence(*args))
    keras.utils.set_random_seed(3)
    plain, fused = keras_class(16, return_sequences=return_sequences), fused_class(16, return_sequences=return_sequences)
    x = tf.random.normal((3, 9, 5))
    plain(x), fused(x)
    fused.set_weights([w * 2 for w in plain.get_weights()])  # larger weights: saturated gates count too
    plain.set_weights(fused.get_weights())
    states = 2 if keras_class is keras.layers.LSTM else 1
    initial = [tf.random.normal((3, 16)) for _ in range(states)]
    y_plain, g_plain = gradients(plain, x, initial)
    runs.clear()  # the calls that built the layers
    y_fused, g_fused = gradients(fused, x, initial)
    assert len(runs) == groups
    np.testing.assert_allclose(y_fused, y_plain, atol=1e-5)
    for a, b in zip(g_fused, g_plain):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def test_fused_kernels_fall_back_to_keras_where_they_would_differ(monkeypatch):
    keras.utils.set_random_seed(4)
    x = tf.random.normal((2, 6, 4))
    for options in ({"unroll": True}, {"activation": "relu"}):
        plain, fused = keras.layers.LSTM(8, **options), FusedLSTM(8, **options)
        plain(x), fused(x)
        fused.set_weights(plain.get_weights())
        np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-6)
    # Dropout inside the cell draws masks of its own, so the outputs cannot be compared with
    # Keras's: in training, the fused kernel must not run at all.
    def refuse(*args):
        raise AssertionError("the fused kernel ran")

    monkeypatch.setattr("textgen.models.fused_rnn.run_sequence", refuse)
    for layer_class in (FusedLSTM, FusedGRU):
        with pytest.raises(AssertionError, match="the fused kernel ran"):  # the stand-in is the one called
            layer_class(8)(x, training=True)
        for options in ({"dropout": 0.5}, {"recurrent_dropout": 0.5}):
            assert layer_class(8, **options)(x, training=True).shape == (2, 8)
    monkeypatch.undo()
    masked = np.ones((2, 6), dtype=bool)
    masked[0, 4:] = False  # a mask where masked steps repeat the last output (Keras's default): Keras's loop
    plain, fused = keras.layers.GRU(8), FusedGRU(8)
    plain(x), fused(x)
    fused.set_weights(plain.get_weights())
    np.testing.assert_allclose(fused(x, mask=masked), plain(x, mask=masked), atol=1e-6)


@pytest.mark.parametrize("keras_class, fused_class", [(keras.layers.LSTM, FusedLSTM), (keras.layers.GRU, FusedGRU)])
@pytest.mark.parametrize("go_backwards, groups", [(False, 1), (True, 1), (True, 2)])
def test_fused_kernels_follow_a_mask_as_bidirectional_layers_do(keras_class, fused_class, go_backwards, groups,
                                                               monkeypatch):
    """With zero_output_for_mask (Bidirectional sets it) masked steps keep the states and output
    zeros; masks that start, end and break off mid-row, run either way in time, in one loop or
    in two groups of rows."""
    from textgen.models import fused_rnn

    monkeypatch.setattr(fused_rnn, "row_groups", lambda batch: groups)
    keras.utils.set_random_seed(6)
    options = {"return_sequences": True, "return_state": True, "go_backwards": go_backwards}
    plain, fused = keras_class(6, **options), fused_class(6, **options)
    plain.zero_output_for_mask = fused.zero_output_for_mask = True
    x = tf.random.normal((3, 7, 4))
    initial = [tf.random.normal((3, 6)) for _ in range(2 if keras_class is keras.layers.LSTM else 1)]
    plain(x, initial_state=initial), fused(x, initial_state=initial)
    fused.set_weights([w * 2 for w in plain.get_weights()])
    plain.set_weights(fused.get_weights())
    mask = np.ones((3, 7), dtype=bool)
    mask[0, 4:] = mask[1, :2] = mask[1, 5] = mask[2, 6] = False
    runs = []
    run_sequence = fused_rnn.run_sequence
    monkeypatch.setattr(fused_rnn, "run_sequence", lambda *args: runs.append(1) or run_sequence(*args))

    def outputs_and_gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            tape.watch(initial)
            outputs = layer(x, mask=tf.constant(mask), initial_state=initial, training=True)
            loss = sum(tf.reduce_sum(y * tf.sin(y * (k + 1))) for k, y in enumerate(outputs))
        return outputs, tape.gradient(loss, [x, *initial, *layer.trainable_weights])

    y_fused, g_fused = outputs_and_gradients(fused)
    assert len(runs) == groups
    y_plain, g_plain = outputs_and_gradients(plain)
    in_order = mask[:, ::-1] if go_backwards else mask  # backwards, the outputs come last step first
    assert len(runs) == groups and not np.any(y_fused[0].numpy()[~in_order])  # zeros where masked
    for a, b in zip(y_fused, y_plain):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(g_fused, g_plain):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def test_a_batch_runs_in_a_group_of_rows_per_core(monkeypatch):
    from textgen.models import fused_rnn

    monkeypatch.setattr(fused_rnn.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [fused_rnn.row_groups(b) for b in (None, 1, 31, 32, 64, 512)] == [1, 1, 1, 2, 2, 2]
    monkeypatch.setattr(fused_rnn.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert [fused_rnn.row_groups(b) for b in (16, 64, 100, 128, 512)] == [1, 4, 6, 8, 8]
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 1)
    assert fused_rnn.row_groups(512) == 1  # a process held to one thread runs one loop


def test_fused_kernels_under_mixed_bfloat16_stay_close_to_float32():
    keras.utils.set_random_seed(5)
    x = tf.random.normal((4, 12, 8))
    reference = keras.layers.LSTM(32)
    reference(x)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        fused = FusedLSTM(32)
        fused(x)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    fused.set_weights(reference.get_weights())
    y, g = gradients(fused, x)
    y_ref, g_ref = gradients(reference, x)
    assert y.dtype == tf.bfloat16 and fused.cell.kernel.dtype == "float32"  # float32 weights, bf16 products
    np.testing.assert_allclose(tf.cast(y, tf.float32), y_ref, atol=0.03)
    for a, b in zip(g, g_ref):
        assert float(tf.norm(tf.cast(a, tf.float32) - b) / tf.norm(b)) < 0.03


def test_inference_config_is_float32_with_keras_layers():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(ModelConfig(cell="gru", units=8, embedding_dim=4, dropout=0.1),
                            {"level": "char", "vocabulary": list("abc")}, fused_kernels=True)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert any(isinstance(layer, FusedGRU) for layer in model.layers)
    text = json.dumps(inference_config(model.get_config()))
    assert "Fused" not in text and "bfloat16" not in text and '"class_name": "GRU"' in text
    copy = keras.Model.from_config(inference_config(model.get_config()))
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    assert type(copy.get_layer("gru_1")) is keras.layers.GRU


def test_mixed_bfloat16_training_saves_a_float32_model_and_restores_the_policy(tiny_config):
    before = keras.mixed_precision.global_policy().name
    lines = []
    result = train(tiny_config(**{"training.precision": "mixed_bfloat16", "model.cell": "lstm", "training.epochs": 2,
                                  "training.sample_every": 1, "training.sample_length": 10,
                                  "training.sample_temperatures": "[0]"}),
                   echo=lines.append, verbose=0, progress=None)
    assert keras.mixed_precision.global_policy().name == before
    assert any("precision mixed_bfloat16" in line for line in lines)
    assert sum(line.startswith("--- sample") for line in lines) == 2  # generation works on the training model
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    with zipfile.ZipFile(result.model_path) as archive:
        config = archive.read("config.json").decode()
    policies = {layer["config"]["dtype"]["config"]["name"] for layer in json.loads(config)["config"]["layers"]
                if isinstance(layer["config"].get("dtype"), dict)}
    assert policies == {"float32"} and '"dtype": "bfloat16"' not in config and "Fused" not in config
    model = load_keras_model(result.model_path)
    assert find_token_embedding(model).model_card["precision"] == "mixed_bfloat16"
    logits = model(np.zeros((1, 5), dtype=np.int32))
    assert logits.dtype == tf.float32 and np.isfinite(logits.numpy()).all()


def test_training_fails_cleanly_and_still_restores_the_policy(tiny_config):
    before = keras.mixed_precision.global_policy().name
    with pytest.raises(UsageError, match="nowhere.txt does not exist"):
        train(tiny_config(**{"training.precision": "mixed_bfloat16", "corpus.paths": "[nowhere.txt]"}),
              echo=lambda _: None, verbose=0, progress=None)
    assert keras.mixed_precision.global_policy().name == before


def test_auto_settings_for_a_cpu(monkeypatch):
    training = load_config().training
    monkeypatch.setattr(distribute, "cpu_flags", lambda: {"avx2", "avx512_bf16", "amx_bf16"})
    plan = plan_devices(training)
    assert (plan.distribute, plan.device, plan.precision, plan.jit_compile, plan.fused_kernels) == (
        "none", "cpu", "mixed_bfloat16", False, True)
    assert "bfloat16 units (AMX)" in plan.describe()
    monkeypatch.setattr(distribute, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    plan = plan_devices(training)
    assert plan.precision == "mixed_bfloat16" and "bfloat16 units (AVX-512 BF16)" in plan.describe()
    monkeypatch.setattr(distribute, "cpu_flags", lambda: {"avx2", "avx512f"})
    plan = plan_devices(training)
    assert plan.precision == "float32" and "no bfloat16 units" in plan.describe()
    chosen = load_config(None, ["training.precision=float32", "training.jit_compile=true",
                                "training.fused_kernels=false"]).training
    plan = plan_devices(chosen)
    assert (plan.precision, plan.jit_compile, plan.fused_kernels) == ("float32", True, False)


def test_asking_for_bfloat16_on_a_cpu_without_it_warns_and_keeps_the_choice(monkeypatch):
    training = load_config(None, ["training.precision=mixed_bfloat16"]).training
    monkeypatch.setattr(distribute, "cpu_flags", lambda: {"avx2", "fma"})
    plan = plan_devices(training)
    assert plan.precision == "mixed_bfloat16"
    assert "no bfloat16 units" in plan.describe() and "training.precision=auto" in plan.describe()
    for flag in ("avx512_bf16", "amx_bf16"):
        monkeypatch.setattr(distribute, "cpu_flags", lambda flag=flag: {"avx2", flag})
        assert "no bfloat16 units" not in plan_devices(training).describe()


def test_cpu_flags_come_from_cpuinfo():
    flags = distribute.cpu_flags()
    assert isinstance(flags, set)
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert {"fpu", "sse2"} <= flags  # every x86-64 CPU reports both
    assert distribute.cpu_has_native_bf16() == bool({"amx_bf16", "avx512_bf16"} & flags)


def test_precision_and_jit_keys_are_checked():
    from textgen.errors import ConfigError

    with pytest.raises(ConfigError, match="training.precision must be one of auto, float32, mixed_float16, "
                                          "mixed_bfloat16, got 'bf16'"):
        load_config(None, ["training.precision=bf16"])
    with pytest.raises(ConfigError, match="training.jit_compile must be auto, true or false, got 'fast'"):
        load_config(None, ["training.jit_compile=fast"])
    with pytest.raises(ConfigError, match="training.distribute must be one of auto, none, mirrored"):
        load_config(None, ["training.distribute=horovod"])
    assert load_config(None, ["training.jit_compile=false"]).training.jit_compile is False


def test_resume_refuses_to_switch_loss_scaling():
    check_resumable_precision("mixed_bfloat16", "float32")
    check_resumable_precision(None, "mixed_float16")
    with pytest.raises(UsageError, match="set training.precision=mixed_float16"):
        check_resumable_precision("mixed_float16", "mixed_bfloat16")


def test_kernel_report_names_what_forces_the_generic_kernel():
    plan = plan_devices(load_config(None, ["training.precision=float32"]).training)
    tokenizer = {"level": "char", "vocabulary": list("abc")}
    lstm = build_model(ModelConfig(cell="lstm", units=8, embedding_dim=4), tokenizer, fused_kernels=True)
    assert kernel_report(lstm, plan) == ["recurrent kernels: cuDNN on a GPU; here: textgen's fused kernel"]
    rnn = build_model(ModelConfig(cell="simple_rnn", units=8, embedding_dim=4), tokenizer)
    lines = kernel_report(rnn, plan)
    assert lines[0] == "recurrent kernels: generic on a GPU; here: Keras's step-by-step kernel"
    assert "simple_rnn_1 cannot use cuDNN (SimpleRNNCell has no cuDNN kernel" in lines[1]
    odd = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4, recurrent_dropout=0.1, reset_after=False)])
    assert "recurrent dropout, GRU reset_after=False" in kernel_report(odd, plan)[1]
    wrapped = keras.Sequential([keras.Input((None, 3)), keras.layers.Bidirectional(keras.layers.LSTM(4))])
    assert kernel_report(wrapped, plan) == ["recurrent kernels: cuDNN on a GPU; here: Keras's step-by-step kernel"]


def test_train_command_prints_devices_and_kernels(small_corpus, tmp_path):
    sets = [a for o in tiny_overrides(small_corpus, tmp_path / "run", **{"training.epochs": 1,
                                                                         "training.steps_per_epoch": 2})
            for a in ("--set", o)]
    result = CliRunner().invoke(cli, ["train", *sets])
    assert result.exit_code == 0, result.output
    assert "devices: one CPU; precision " in result.output
    assert "recurrent kernels: cuDNN on a GPU; here: textgen's fused kernel" in result.output
