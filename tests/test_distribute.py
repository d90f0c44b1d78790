"""tf.distribute: two logical CPUs under MirroredStrategy, two local workers under
MultiWorkerMirroredStrategy, and the checks that come before any strategy is made."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_overrides
from textgen.training import distribute
from textgen.config import load_config
from textgen.data.dataset import replica_batch_size
from textgen.errors import UsageError
from textgen.saving import load_keras_model
from textgen.training.train import train

ROOT = Path(__file__).resolve().parents[1]

# Two logical CPU devices must be configured before TensorFlow starts, so this runs in a
# subprocess of its own. It trains the same run on one device and on both.
MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from textgen.config import load_config
    from textgen.training.train import train
    out = {}
    for strategy in ("none", "mirrored"):
        lines = []
        config = load_config(None, json.loads(sys.argv[1]) + [f"training.distribute={strategy}",
                                                              f"output.dir={sys.argv[2]}/{strategy}"])
        result = train(config, echo=lines.append, verbose=0, progress=None)
        out[strategy] = {"history": result.history, "model": str(result.model_path), "lines": lines}
    print("RESULT " + json.dumps(out))
""")

# With weight averaging, so that the averages are kept and swapped in under the strategies too.
SETTINGS = {"training.epochs": 2, "training.steps_per_epoch": 6, "training.precision": "float32",
            "training.ema_momentum": 0.9}


def run_python(code, *args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, cwd=cwd)


def result_of(process):
    assert process.returncode == 0, process.stderr[-3000:]
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def losses(history):
    return [(row["loss"], row["val_loss"]) for row in history]


@pytest.mark.slow  # a fresh process that trains twice, on one device and on two
def test_mirrored_over_two_cpus_trains_like_one_device(small_corpus, tmp_path):
    overrides = tiny_overrides(small_corpus, tmp_path / "unused", **SETTINGS)
    out = result_of(run_python(MIRRORED, json.dumps(overrides), str(tmp_path)))
    one, two = out["none"], out["mirrored"]
    assert any(line.startswith("devices: 2 CPU replicas") and "16 windows per replica" in line for line in two["lines"])
    # The global batch is split over the replicas and the gradients summed: the same training.
    np.testing.assert_allclose(losses(two["history"]), losses(one["history"]), rtol=0, atol=1e-4)
    model = load_keras_model(two["model"])
    assert np.isfinite(model(np.zeros((1, 4), dtype=np.int32)).numpy()).all()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # two TensorFlow processes joining a cluster: about 20-30 s on 2 cores
def test_two_workers_train_one_model(small_corpus, tmp_path):
    out = tmp_path / "run"
    overrides = tiny_overrides(small_corpus, out, **SETTINGS, **{"training.distribute": "multi_worker"})
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    workers = []
    for index in range(2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen([sys.executable, "-m", "textgen", "train",
                                         *[a for o in overrides for a in ("--set", o)]],
                                        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True))
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=300))
    finally:
        for worker in workers:
            worker.kill()
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    chief, other = outputs[0][0], outputs[1][0]
    assert "devices: 2 workers, 2 replicas in all (this is worker 0, the chief)" in chief
    assert "saved " in chief and "epoch 2:" in chief
    assert "epoch 2:" not in other and "the chief writes" in other
    assert not list(scratch.iterdir())  # the other worker's private directory is gone
    # One model, written by the chief, trained as one device would train it.
    model = load_keras_model(out / "model.keras")
    assert np.isfinite(model(np.zeros((1, 4), dtype=np.int32)).numpy()).all()
    single = train(load_config(None, tiny_overrides(small_corpus, tmp_path / "single", **SETTINGS)),
                   echo=lambda _: None, verbose=0, progress=None)
    rows = (out / "history.csv").read_text().splitlines()[1:]
    recorded = [(float(r.split(",")[1]), float(r.split(",")[3])) for r in rows]
    np.testing.assert_allclose(recorded, losses(single.history), rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- checks before a strategy


def test_the_global_batch_must_split_evenly():
    assert replica_batch_size(64, 4) == 16
    with pytest.raises(UsageError, match=r"training.batch_size \(30\) must be a multiple of the 4 replicas"):
        replica_batch_size(30, 4)


def test_tf_config_is_read_and_checked(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.cluster_from_env() is None
    assert distribute._resolve_strategy_name("auto", []) == "none"
    with pytest.raises(UsageError, match="training.distribute=multi_worker needs TF_CONFIG"):
        distribute.plan_devices(load_config(None, ["training.distribute=multi_worker"]).training)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert distribute.cluster_from_env() == {"cluster": {"worker": ["a:1", "b:2"]}, "type": "worker", "index": 1}
    notes = []
    assert distribute._resolve_strategy_name("auto", notes) == "multi_worker" and "TF_CONFIG" in notes[0]
    with pytest.raises(UsageError, match="training.max_minutes cannot stop several workers"):
        distribute.plan_devices(load_config(None, ["training.distribute=multi_worker",
                                                   "training.max_minutes=5"]).training)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UsageError, match="TF_CONFIG is not a JSON object with a cluster and a task"):
        distribute.cluster_from_env()
