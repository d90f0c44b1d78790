"""`--format tflite`: the LiteRT step model and the loop shipped beside it, against textgen's own generation.

Every network kind is exported with random weights (equality does not need a trained
model), converted with built-in ops only, and its zip's generate.py is run in a process
where TensorFlow, Keras and textgen cannot be imported: its greedy text must equal
`textgen.load(path).generate(seed, n, temperature=0)` character for character.
"""

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
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

import textgen
from textgen.config import CELLS, ModelConfig
from textgen.data.tokenizer import CharTokenizer, WordTokenizer
from textgen.errors import ModelFileError, UsageError
from textgen.export import litert_loop
from textgen.export.tflite import export_tflite
from textgen.generation.steppers import make_stepper
from textgen.models.builder import build_model
from textgen.models.layers import TokenEmbedding
from textgen.saving import load_keras_model, save_model_atomic

from conftest import CORPORA

Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

SHAKESPEARE = (CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000]
PRETRAINED = Path(textgen.__file__).parent / "pretrained" / "shakespeare-char.keras"
CONTEXT = 8  # the transformer's: generating past it runs the re-feeding branch of its step
KINDS = {
    **{cell: dict(cell=cell, embedding_dim=8, units=16, layers=2) for cell in CELLS},
    "window": dict(mode="window", window=6, cell="lstm", embedding_dim=8, units=12, layers=2),
    "window-attention": dict(mode="window", window=5, cell="gru", embedding_dim=8, units=24, layers=1,
                             bidirectional=True, attention=True),
    "transformer": dict(type="transformer", embedding_dim=16, layers=2, heads=2, context_length=CONTEXT),
    "transformer-rotary": dict(type="transformer", embedding_dim=16, layers=2, heads=2, context_length=CONTEXT,
                               positions="rotary"),  # past its context, its step writes a ring
}
# Run in the subprocess before generate.py: TensorFlow, Keras and textgen cannot be imported there.
NO_TENSORFLOW = ("import runpy, sys\n"
                 "for name in ('tensorflow', 'keras', 'textgen'): sys.modules[name] = None\n"
                 "sys.argv = sys.argv[1:]\n"
                 "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def random_model(tokenizer: dict, **settings) -> keras.Model:
    """A textgen network with random weights, scaled so its greedy text is not one repeated token."""
    keras.utils.set_random_seed(5)
    model = build_model(ModelConfig(**settings), tokenizer)
    for weight in model.weights:
        if "embedding" in weight.path or "kernel" in weight.path:
            weight.assign(weight * 3.0)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """kind -> (the saved .keras file, its exported zip), built once per kind."""
    made = {}

    def export(kind):
        if kind not in made:
            folder = tmp_path_factory.mktemp(kind)
            model = random_model(CharTokenizer.fit(SHAKESPEARE).get_config(), **KINDS[kind])
            save_model_atomic(model, folder / "model.keras")
            facts = export_tflite(model, folder / "model.zip")
            made[kind] = folder / "model.keras", folder / "model.zip", facts
        return made[kind]
    return export


def run_loop(archive: Path, *args: str) -> str:
    """The zip's generate.py, unpacked and run where TensorFlow cannot be imported; its stdout."""
    folder = archive.parent / "unpacked"
    with zipfile.ZipFile(archive) as files:
        files.extractall(folder)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(folder / "generate.py"), str(archive), *args],
                          capture_output=True, text=True, encoding="utf-8", env=env, cwd=folder, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.endswith("\n")
    return done.stdout[:-1]


def builtin_ops(tflite: bytes) -> set[str]:
    """The name of every operator in the flatbuffer; custom and Select TF ops are named CUSTOM."""
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    found = set()
    for code in model.operatorCodes:
        found.add(names[max(code.builtinCode, code.deprecatedBuiltinCode)])
        assert code.customCode is None, code.customCode
    return found


def litert_logits(tflite: bytes, ids) -> np.ndarray:
    """The logits after each of `ids`, from the step model in the LiteRT interpreter."""
    model = litert_loop.StepModel({"model.tflite": tflite, "tokenizer.json": b'{"vocabulary": []}',
                                   "step.json": json.dumps(step_facts(tflite)).encode()})
    return np.stack([model.step(int(i)) for i in ids])


def step_facts(tflite: bytes) -> dict:
    """step.json's facts, read from the interpreter's own signature (so the test does not trust step.json)."""
    runner = Interpreter(model_content=tflite).get_signature_runner("serving_default")
    inputs = runner.get_input_details()
    states = sorted((name for name in inputs if name != "token"), key=lambda name: int(name.split("_")[1]))
    return {"signature": "serving_default", "never_sample": [],
            "inputs": [{"name": "token"}] + [{"name": name, "shape": [int(d) for d in inputs[name]["shape"]],
                                              "dtype": np.dtype(inputs[name]["dtype"]).name} for name in states]}


@pytest.mark.parametrize("kind", KINDS)
def test_the_step_model_has_builtin_ops_only_and_the_keras_models_logits(kind, exported):
    path, archive, facts = exported(kind)
    tflite = zipfile.ZipFile(archive).read("model.tflite")
    ops = builtin_ops(tflite)
    assert "CUSTOM" not in ops and not any(op.startswith("FLEX") for op in ops), ops
    model = load_keras_model(path)
    ids = CharTokenizer.fit(SHAKESPEARE).encode(SHAKESPEARE[:2 * CONTEXT + 3])
    got = litert_logits(tflite, ids)
    stepper, states, expected = make_stepper(model), None, []
    states = stepper.initial_states(1)
    for token in ids:  # textgen's own step, past the transformer's context too
        logits, states = stepper.step(tf.constant([token], tf.int32), states)
        expected.append(logits.numpy()[0])
    np.testing.assert_allclose(got, np.stack(expected), atol=2e-4)
    within = CONTEXT if kind == "transformer" else len(ids)  # learned positions: the network sees its context
    np.testing.assert_allclose(got[:within], model(ids[None, :within]).numpy()[0], atol=2e-4)
    assert facts["kind"] == {"window": "window", "window-attention": "window",
                             "transformer": "transformer", "transformer-rotary": "transformer"}.get(kind, "sequence")
    assert facts["states"] == [spec["shape"] for spec in step_facts(tflite)["inputs"][1:]]


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_text_of_the_loop_without_tensorflow_equals_textgen_generate(kind, exported):
    path, archive, _ = exported(kind)
    seed = SHAKESPEARE[:12]
    expected = textgen.load(path).generate(seed, 3 * CONTEXT, temperature=0)[0]
    assert len(set(expected)) > 2  # a text worth comparing, not one repeated character
    assert run_loop(archive, "--seed", seed, "--length", str(3 * CONTEXT), "--temperature", "0") == expected


def test_the_pretrained_model_writes_the_same_200_characters_through_litert(tmp_path):
    facts = export_tflite(load_keras_model(PRETRAINED), tmp_path / "shakespeare.zip")
    expected = textgen.load(PRETRAINED).generate("ROMEO:", 200, temperature=0)[0]
    assert run_loop(tmp_path / "shakespeare.zip", "--seed", "ROMEO:", "--length", "200", "--temperature", "0") \
        == expected
    assert facts["bytes"] == (tmp_path / "shakespeare.zip").stat().st_size
    assert facts["tflite_bytes"] > facts["bytes"] * 0.9  # float32 weights hardly compress


def test_a_word_model_takes_and_gives_ids_equal_to_textgen_greedy(tmp_path):
    text = (CORPORA / "pride_and_prejudice.txt").read_text(encoding="utf-8")[:20_000]
    model = random_model(WordTokenizer.fit(text).get_config(), cell="lstm", embedding_dim=8, units=16, layers=1)
    save_model_atomic(model, tmp_path / "words.keras")
    export_tflite(model, tmp_path / "words.zip")
    generator = textgen.load(tmp_path / "words.keras")
    seed = "It is a truth universally acknowledged"
    seed_ids = generator.encode_seed(seed)[0]
    session = generator.session(seed)
    for _ in range(15):
        session.choose(session.candidates(k=1)[0][0])  # the most likely token, <unk> never among them
    got = run_loop(tmp_path / "words.zip", "--ids", ",".join(map(str, seed_ids)), "--length", "15",
                   "--temperature", "0")
    ids = [int(i) for i in got.split(",")]
    assert ids == session.ids
    decoded = generator.tokenizer.decoder(seed_ids, seed).push(np.array(ids, np.int32))
    assert decoded == generator.generate(seed, 15, temperature=0)[0]
    assert json.loads(zipfile.ZipFile(tmp_path / "words.zip").read("step.json"))["never_sample"] == \
        [generator.tokenizer.unk_id]


def test_the_zip_holds_the_step_its_tokenizer_card_and_loop(exported):
    path, archive, facts = exported("gru")
    files = zipfile.ZipFile(archive)
    assert sorted(files.namelist()) == ["README.txt", "generate.py", "model.tflite", "model_card.json",
                                        "step.json", "tokenizer.json"]
    embedding = next(layer for layer in load_keras_model(path).layers if isinstance(layer, TokenEmbedding))
    assert json.loads(files.read("tokenizer.json")) == embedding.tokenizer
    assert json.loads(files.read("model_card.json")) == embedding.model_card
    assert files.read("generate.py") == Path(litert_loop.__file__).read_bytes()
    step = json.loads(files.read("step.json"))
    assert [s["name"] for s in step["inputs"]] == ["token", "state_0", "state_1", "state_2"][:1 + len(facts["states"])]
    assert [s["name"] for s in step["outputs"]] == ["logits"] + [s["name"] for s in step["inputs"][1:]]
    assert step["inputs"][1:] == step_facts(files.read("model.tflite"))["inputs"][1:]
    readme = files.read("README.txt").decode()
    assert all(s["name"] in readme for s in step["inputs"] + step["outputs"])
    again = export_tflite(load_keras_model(path), archive.parent / "again.zip")
    assert (archive.parent / "again.zip").read_bytes() == archive.read_bytes()  # the same model, the same zip
    assert again["bytes"] == facts["bytes"]


def test_the_loop_samples_reproducibly_and_top_k_1_is_greedy(exported):
    _, archive, _ = exported("lstm")
    model = litert_loop.StepModel(litert_loop.read_export(archive))
    seed = litert_loop.encode_chars(model.vocabulary, "First")
    greedy = litert_loop.generate_ids(model, seed, 30, temperature=0)
    assert litert_loop.generate_ids(model, seed, 30, temperature=1.5, top_k=1, random_seed=1) == greedy
    first = litert_loop.generate_ids(model, seed, 30, temperature=1.5, random_seed=7)
    assert litert_loop.generate_ids(model, seed, 30, temperature=1.5, random_seed=7) == first
    assert first != greedy
    with pytest.raises(SystemExit, match="lacks"):
        litert_loop.encode_chars(model.vocabulary, "\u2603")


def test_an_existing_output_is_refused_and_left_as_it_was(exported, tmp_path):
    path, _, _ = exported("gru")
    target = tmp_path / "model.zip"
    target.write_bytes(b"mine")
    with pytest.raises(UsageError, match="already exists and textgen never replaces it; give a new --output"):
        export_tflite(load_keras_model(path), target)
    assert target.read_bytes() == b"mine" and sorted(os.listdir(tmp_path)) == ["model.zip"]


def test_models_textgen_cannot_step_are_refused_in_one_line(tmp_path):
    plain = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(5, 4),
                              keras.layers.GRU(4), keras.layers.Dense(5)])
    with pytest.raises(ModelFileError, match="not a textgen model"):
        export_tflite(plain, tmp_path / "plain.zip")
    ids = keras.Input((None,), dtype="int32")
    x = TokenEmbedding(5, 4, tokenizer={"level": "char", "vocabulary": list("abcde")})(ids)
    x = keras.layers.LSTM(4, return_sequences=True, go_backwards=True)(x)
    backwards = keras.Model(ids, keras.layers.Dense(5)(x))
    with pytest.raises(ModelFileError, match="cannot be stepped") as failure:
        export_tflite(backwards, tmp_path / "backwards.zip")
    assert "\n" not in str(failure.value)
    assert os.listdir(tmp_path) == []


def test_the_deployment_page_shows_the_loop_as_shipped():
    page = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "```python\n" + Path(litert_loop.__file__).read_text(encoding="utf-8") + "```" in page
