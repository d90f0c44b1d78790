"""Exporting a conditioned model: the SavedModel's `label_weights` input and the LiteRT zip's label
state give the text `textgen generate --label ...` gives, for one label, a blend and two groups,
in processes where textgen cannot be imported; a model without labels exports as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from textgen.cli.main import cli
from textgen.config import ModelConfig
from textgen.data.tokenizer import CharTokenizer
from textgen.export import litert_loop
from textgen.export.saved_model import export_saved_model
from textgen.export.tflite import export_tflite
from textgen.generation.generate import Generator, Request, load
from textgen.generation.samplers import make_sampler
from textgen.labels import LabelGroup, LabelSpace
from textgen.models.builder import build_model
from textgen.models.layers import find_label_embedding
from textgen.saving import save_model_atomic

from conftest import CORPORA

TEXT = (CORPORA / "pride_and_prejudice.txt").read_text(encoding="utf-8")[:3000]
TOKENIZER = CharTokenizer(sorted(set(TEXT)))
SPACE = LabelSpace((LabelGroup("author", ("any", "austen", "melville", "verne")),
                    LabelGroup("genre", ("any", "novel", "play"))))
CONTEXT = 8  # the transformer's: LENGTH runs past it, so its re-feeding step is exported too
LENGTH = 30
MODELS = {"lstm": ModelConfig(cell="lstm", embedding_dim=8, units=12, layers=2),
          "transformer": ModelConfig(type="transformer", embedding_dim=16, heads=2, layers=2, context_length=CONTEXT)}
SEED, OTHER = "It is a truth", "Mr. Darcy"
# (seeds, --label specs, temperature, random_seed): one label, a blend, two groups, no label
# (`any`), one label per sample, several samples of one label, and different seeds.
CASES = [([SEED], ["austen"], 0.0, 0), ([SEED], ["austen:0.7,melville:0.3"], 0.0, 0),
         ([SEED], ["melville", "genre=play"], 0.0, 0), ([SEED], [], 0.0, 0),
         ([SEED] * 2, ["austen", "melville"], 0.9, 4), ([SEED] * 3, ["verne:0.5,austen:0.5"], 1.1, 7),
         ([SEED, OTHER], ["verne", "austen"], 0.0, 0)]
# Runs where textgen and Keras cannot be imported: each case's texts as JSON.
CHILD = r"""
import json, sys
sys.modules["textgen"] = None
sys.modules["keras"] = None
import tensorflow as tf

folder, cases = json.loads(sys.argv[1])
signature = tf.saved_model.load(folder).signatures["serving_default"]
results = []
for seeds, weights, temperature, random_seed in cases:
    out = signature(seed=tf.constant(seeds), label_weights=tf.constant(weights, tf.float32),
                    length=tf.constant(%d, tf.int32), temperature=tf.constant(temperature, tf.float32),
                    top_k=tf.constant(0, tf.int32), top_p=tf.constant(1.0, tf.float32),
                    random_seed=tf.constant(random_seed, tf.int64))
    results.append([t.decode("utf-8") for t in out["text"].numpy()])
print(json.dumps(results))
""" % LENGTH


def conditioned(name: str) -> keras.Model:
    """A tiny untrained model with its kernels scaled and label vectors large enough that each
    label changes the greedy text (equality does not need a trained model)."""
    keras.utils.set_random_seed(3)
    model = build_model(MODELS[name], TOKENIZER.get_config(), labels=SPACE)
    for weight in model.weights:
        if "embedding" in weight.path or "kernel" in weight.path:
            weight.assign(weight * 3.0)
    table = find_label_embedding(model).embeddings
    table.assign(table * 5.0)
    return model


def weights_of(specs, rows: int = 1) -> list[list[float]]:
    """The label_weights rows a client builds from textgen.json (textgen.labels here, to compare)."""
    return SPACE.mix(specs, rows)[0]


def case_weights(seeds, specs) -> list[list[float]]:
    """A case's label_weights: as `generate` reads its specs for one seed; one spec per seed else."""
    if len(set(seeds)) == 1:
        return weights_of(specs, len(seeds))
    return [weights_of([spec])[0] for spec in specs]


def expected(generator: Generator, seeds, specs, temperature, random_seed) -> list[str]:
    """What `textgen generate --label ...` gives: different seeds each on their own, with their own label."""
    sampler = make_sampler(temperature)
    if len(set(seeds)) > 1:
        return [generator.run(Request(seed, LENGTH, sampler, labels=(spec,)))[0].text
                for seed, spec in zip(seeds, specs)]
    request = Request(seeds[0], LENGTH, sampler, num_samples=len(seeds), random_seed=random_seed, labels=tuple(specs))
    return [sample.text for sample in generator.run(request)]


def check_saved_model(name: str, tmp_path: Path) -> None:
    model = conditioned(name)
    folder = tmp_path / "export"
    facts = export_saved_model(model, folder)
    assert facts["labels"]["groups"] == SPACE.to_card()
    generator = Generator(model)
    want = [expected(generator, *case) for case in CASES]
    jobs = [(seeds, case_weights(seeds, specs), temperature, random_seed)
            for seeds, specs, temperature, random_seed in CASES]
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps([str(folder), jobs])], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    for case, have, wanted in zip(CASES, got, want):
        assert have == wanted, case
    assert len({texts[0] for texts in want[:4]}) == 4  # each label, blend and group changes the greedy text
    assert want[4][0] != want[4][1] and all(len(set(text)) > 5 for text in want[4] + want[5])  # varied samples


@pytest.mark.slow  # the lstm_export fixture's tests export a conditioned LSTM in make test
def test_a_conditioned_lstm_exports_what_generate_writes_under_each_label(tmp_path):
    check_saved_model("lstm", tmp_path)


@pytest.mark.slow
def test_a_conditioned_transformer_exports_what_generate_writes_under_each_label(tmp_path):
    check_saved_model("transformer", tmp_path)


@pytest.fixture(scope="module")
def lstm_export(tmp_path_factory) -> tuple[keras.Model, Path]:
    model = conditioned("lstm")
    folder = tmp_path_factory.mktemp("lstm") / "export"
    export_saved_model(model, folder, xla=False)
    return model, folder


def test_textgen_json_lets_a_client_build_the_weights(lstm_export):
    _, folder = lstm_export
    facts = json.loads((folder / "assets.extra" / "textgen.json").read_text(encoding="utf-8"))
    labels = facts["labels"]
    assert labels["groups"] == SPACE.to_card() and labels["size"] == 7
    assert labels["columns"] == ["author=any", "author=austen", "author=melville", "author=verne",
                                 "genre=any", "genre=novel", "genre=play"]
    assert labels["any"] == [1, 0, 0, 0, 1, 0, 0]
    signatures = tf.saved_model.load(str(folder)).signatures
    for name in ("serving_default", "generate_ids"):
        spec = signatures[name].structured_input_signature[1]["label_weights"]
        assert spec.shape.as_list() == [None, 7] and spec.dtype == tf.float32


def test_generate_ids_takes_label_weights_too(lstm_export):
    model, folder = lstm_export
    generator = Generator(model)
    ids = generator.tokenizer.encode(SEED)
    out = tf.saved_model.load(str(folder)).signatures["generate_ids"](
        seed_ids=tf.constant([ids], tf.int32), label_weights=tf.constant(weights_of(["genre=novel"])),
        length=tf.constant(20), temperature=tf.constant(0.0), top_k=tf.constant(0), top_p=tf.constant(1.0),
        random_seed=tf.constant(0, tf.int64))["ids"]
    assert generator.tokenizer.decode(out.numpy()[0]) == generator.generate(SEED, 20, temperature=0,
                                                                            labels="genre=novel")[0]


@pytest.mark.parametrize("weights, message", [
    ([[0, 1, 0, 0, 1, 0, 0]] * 3, "one row per seed, or one row for all"),
    ([[0, 0, 0, 0, 1, 0, 0]], "the weights of each label group must sum to 1"),
    ([[0, 1.5, -0.5, 0, 1, 0, 0]], "a label weight is negative"),
])
def test_weights_that_are_not_weights_are_refused_in_the_graph(lstm_export, weights, message):
    _, folder = lstm_export
    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        signature(seed=tf.constant([SEED, SEED]), label_weights=tf.constant(weights, tf.float32),
                  length=tf.constant(5), temperature=tf.constant(0.0), top_k=tf.constant(0),
                  top_p=tf.constant(1.0), random_seed=tf.constant(0, tf.int64))


def test_a_model_without_labels_keeps_its_signatures(tmp_path):
    keras.utils.set_random_seed(3)
    model = build_model(ModelConfig(cell="gru", embedding_dim=4, units=8), TOKENIZER.get_config())
    facts = export_saved_model(model, tmp_path / "plain", xla=False)
    assert facts["labels"] is None
    signatures = tf.saved_model.load(str(tmp_path / "plain")).signatures
    assert sorted(signatures["serving_default"].structured_input_signature[1]) == \
        ["length", "random_seed", "seed", "temperature", "top_k", "top_p"]
    assert "label_weights" not in signatures["generate_ids"].structured_input_signature[1]
    zipped = export_tflite(model, tmp_path / "plain.zip")
    assert zipped["labels"] is None and "label_states.npy" not in zipfile.ZipFile(tmp_path / "plain.zip").namelist()


# ---------------------------------------------------------------------- LiteRT

NO_TENSORFLOW = ("import runpy, sys\n"
                 "for name in ('tensorflow', 'keras', 'textgen'): sys.modules[name] = None\n"
                 "sys.argv = sys.argv[1:]\n"
                 "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def run_loop(archive: Path, *args: str) -> subprocess.CompletedProcess:
    """The zip's generate.py, unpacked and run where TensorFlow cannot be imported."""
    folder = archive.parent / "unpacked"
    with zipfile.ZipFile(archive) as files:
        files.extractall(folder)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": ""}
    return subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(folder / "generate.py"), str(archive), *args],
                          capture_output=True, text=True, encoding="utf-8", env=env, cwd=folder, timeout=300)


@pytest.fixture(scope="module")
def lstm_zip(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("ai_edge_litert.interpreter")
    folder = tmp_path_factory.mktemp("litert")
    model = conditioned("lstm")
    save_model_atomic(model, folder / "model.keras")
    export_tflite(model, folder / "model.zip")
    return folder / "model.keras", folder / "model.zip"


@pytest.mark.parametrize("specs, args", [
    (["austen"], ["--label", "austen"]),
    (["melville", "genre=play"], ["--label", "melville", "--label", "genre=play"]),
    (["austen:0.7,melville:0.3"], ["--label-weights", json.dumps(weights_of(["austen:0.7,melville:0.3"])[0])]),
    ([], []),
])
def test_the_litert_loop_writes_what_generate_writes_under_a_label(lstm_zip, specs, args):
    path, archive = lstm_zip
    want = load(path).generate(SEED, LENGTH, temperature=0, labels=specs)[0]
    done = run_loop(archive, "--seed", SEED, "--length", str(LENGTH), "--temperature", "0", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout[:-1] == want


def test_the_zip_says_how_to_make_the_label_state(lstm_zip):
    """weights @ label_states.npy is the label state generate's own stepper starts from, for a blend too."""
    path, archive = lstm_zip
    files = zipfile.ZipFile(archive)
    step = json.loads(files.read("step.json"))
    labels = step["labels"]
    assert labels["state"] == step["inputs"][-1]["name"] and labels["groups"] == SPACE.to_card()
    table = np.load(files.open("label_states.npy"))
    generator = load(path)
    specs = ["austen:0.7,melville:0.3", "genre=play"]
    start = generator.stepper.initial_states(1, generator.label_vectors(specs)[0])
    np.testing.assert_allclose(np.asarray(weights_of(specs), np.float32) @ table, tf.nest.flatten(start)[-1],
                               atol=1e-5)
    readme = files.read("README.txt").decode()
    assert "label_states.npy" in readme and labels["state"] in readme
    assert litert_loop.label_weights(labels, ["verne", "genre=novel"]) == [0, 0, 0, 1, 0, 1, 0]


@pytest.mark.parametrize("args, message", [
    (["--label", "dickens"], "names no single label of this model; valid labels are author: any, austen"),
    (["--label", "any"], "write GROUP=NAME"),
    (["--label-weights", "[1, 0]"], "needs a JSON list of 7 numbers"),
    (["--label", "austen", "--label-weights", "[]"], "not both"),
])
def test_the_loop_refuses_labels_the_model_lacks_in_one_line(lstm_zip, args, message):
    _, archive = lstm_zip
    done = run_loop(archive, "--seed", SEED, "--length", "3", *args)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr


def test_export_command_says_a_conditioned_model_takes_label_weights(lstm_zip, tmp_path):
    path, _ = lstm_zip
    out = tmp_path / "phone.zip"
    result = CliRunner().invoke(cli, ["export", "--model", str(path), "--format", "tflite", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "a conditioned model" in result.stdout and "conditioned-models" in result.stdout
