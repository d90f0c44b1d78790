"""`textgen export --format saved_model`: the SavedModel generates what `textgen generate` generates,
in a process that never imports textgen or Keras, and through TensorFlow's own saved_model_cli."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from textgen.cli.main import cli
from textgen.config import ModelConfig
from textgen.data.tokenizer import CharTokenizer, WordTokenizer
from textgen.errors import TextgenError, UsageError
from textgen.export.saved_model import export_saved_model
from textgen.generation.generate import load
from textgen.generation.samplers import TensorSampler, make_sampler
from textgen.models.builder import build_model
from textgen.saving import save_model_atomic
from textgen.files import publish_directory

CORPUS = Path(__file__).resolve().parent.parent / "corpora" / "tinyshakespeare.txt"
SAVED_MODEL_CLI = Path(sys.executable).parent / "saved_model_cli"
MODELS = {
    "lstm": ("char", ModelConfig(cell="lstm", units=32, embedding_dim=16)),
    "gru": ("char", ModelConfig(cell="gru", units=24, embedding_dim=12, layers=2)),
    "peephole": ("char", ModelConfig(cell="peephole_lstm", units=16, embedding_dim=8)),
    "window": ("char", ModelConfig(cell="gru", mode="window", window=8, units=16, embedding_dim=8, attention=True)),
    "transformer": ("char", ModelConfig(type="transformer", embedding_dim=32, heads=4, layers=2, context_length=32,
                                        dropout=0.0)),
    "transformer_rotary": ("char", ModelConfig(type="transformer", embedding_dim=32, heads=4, layers=2,
                                               context_length=32, positions="rotary")),
    "word": ("word", ModelConfig(cell="lstm", units=32, embedding_dim=16)),
}
LENGTH = 70  # past the transformer's context of 32, so its re-feeding step is exported too
# Run in a process that cannot import textgen or Keras: each case's texts (or ids) as JSON.
CHILD = r"""
import json, sys
sys.modules["textgen"] = None
sys.modules["keras"] = None
import tensorflow as tf

results = {}
for name, folder, cases in json.loads(sys.argv[1]):
    signature = tf.saved_model.load(folder).signatures["serving_default"]
    results[name] = []
    for seeds, length, temperature, top_k, top_p, random_seed in cases:
        out = signature(seed=tf.constant(seeds), length=tf.constant(length, tf.int32),
                        temperature=tf.constant(temperature, tf.float32), top_k=tf.constant(top_k, tf.int32),
                        top_p=tf.constant(top_p, tf.float32), random_seed=tf.constant(random_seed, tf.int64))
        results[name].append([t.decode("utf-8") for t in out["text"].numpy()])
print(json.dumps(results))
"""


def _tokenizer(level: str) -> dict:
    text = CORPUS.read_text(encoding="utf-8")
    if level == "char":
        return CharTokenizer.fit(text).get_config()
    return WordTokenizer.fit(text[:30_000], None).get_config()


def _model(tmp_path_factory, name: str) -> Path:
    level, config = MODELS[name]
    keras.utils.set_random_seed(7)
    model = build_model(config, _tokenizer(level))
    path = tmp_path_factory.mktemp(name) / "model.keras"
    save_model_atomic(model, path)
    return path


def _cases(seed: str, other: str):
    """(seeds, length, temperature, top_k, top_p, random_seed): greedy, two different seeds, sampled batches."""
    return [([seed], LENGTH, 0.0, 0, 1.0, 0), ([seed, other], LENGTH, 0.0, 0, 1.0, 0),
            ([seed] * 3, LENGTH, 0.9, 0, 1.0, 11), ([seed], LENGTH, 1.2, 5, 1.0, 3), ([seed] * 2, LENGTH, 1.0, 0, 0.8, 5)]


def _expected(generator, case) -> list[str]:
    """What textgen generate gives for one case (different seeds: each generated on its own)."""
    seeds, length, temperature, top_k, top_p, random_seed = case
    if len(set(seeds)) > 1:
        return [generator.generate(s, length, temperature=temperature)[0] for s in seeds]
    return generator.generate(seeds[0], length, temperature=temperature, top_k=top_k or None,
                              top_p=top_p if top_p < 1 else None, num_samples=len(seeds), random_seed=random_seed)


def _run_child(jobs) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def _check_kinds(names, tmp_path_factory):
    jobs, expected = [], {}
    for name in names:
        path = _model(tmp_path_factory, name)
        folder = path.parent / "export"
        export_saved_model(load(path).model, folder)
        seed, other = ("ROMEO:\nI will", "KING") if MODELS[name][0] == "char" else ("the king is", "my lord")
        cases = _cases(seed, other)
        generator = load(path)
        expected[name] = [_expected(generator, case) for case in cases]
        jobs.append([name, str(folder), cases])
    got = _run_child(jobs)
    for name in names:
        for case, want, have in zip(jobs[[j[0] for j in jobs].index(name)][2], expected[name], got[name]):
            assert have == want, f"{name}: {case}"
        assert len(got[name][0][0]) > 0


def test_exported_lstm_generates_what_generate_does_without_textgen(tmp_path_factory):
    _check_kinds(["lstm"], tmp_path_factory)


@pytest.mark.slow
def test_every_kind_exports_greedy_and_sampled_text_equal_to_generate(tmp_path_factory):
    _check_kinds(["gru", "peephole", "window", "transformer", "transformer_rotary", "word"], tmp_path_factory)


@pytest.fixture(scope="module")
def pretrained_export(tmp_path_factory) -> Path:
    from textgen.pretrained import default_model_path

    folder = tmp_path_factory.mktemp("pretrained") / "export"
    facts = export_saved_model(load(default_model_path()).model, folder)
    assert facts["strings_in_graph"] and facts["signatures"]["serving_default"] == "text"
    return folder


@pytest.mark.slow  # TensorFlow's own command, a fresh process
def test_saved_model_cli_lists_the_signature_and_runs_it(pretrained_export):
    shown = subprocess.run([str(SAVED_MODEL_CLI), "show", "--dir", str(pretrained_export), "--all"],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    default = shown.stdout.split("signature_def['serving_default']")[1]
    for name, dtype in (("seed", "DT_STRING"), ("length", "DT_INT32"), ("temperature", "DT_FLOAT"),
                        ("top_k", "DT_INT32"), ("top_p", "DT_FLOAT"), ("random_seed", "DT_INT64")):
        assert f"inputs['{name}'] tensor_info:\n        dtype: {dtype}" in default
    assert "outputs['text'] tensor_info:\n        dtype: DT_STRING" in default
    assert "signature_def['generate_ids']" in shown.stdout
    ran = subprocess.run([str(SAVED_MODEL_CLI), "run", "--dir", str(pretrained_export), "--tag_set", "serve",
                          "--signature_def", "serving_default", "--input_exprs",
                          'seed=["ROMEO:"];length=80;temperature=0.0;top_k=0;top_p=1.0;random_seed=0'],
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    from textgen.pretrained import default_model_path

    greedy = load(default_model_path()).generate("ROMEO:", 80, temperature=0)[0]
    assert "Result for output key text:\n[" + repr(greedy.encode("utf-8")) + "]" in ran.stdout


def test_export_refuses_bad_calls_in_the_graph(pretrained_export):
    signature = tf.saved_model.load(str(pretrained_export)).signatures["serving_default"]
    good = dict(length=tf.constant(5), temperature=tf.constant(0.0), top_k=tf.constant(0), top_p=tf.constant(1.0),
                random_seed=tf.constant(0, tf.int64))
    for seeds, options, message in (([""], {}, "a seed has no tokens"), (["\u2603"], {}, "a character the model does not know"),
                                    (["A"], {"length": tf.constant(-1)}, "length must be 0 or more")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            signature(seed=tf.constant(seeds), **{**good, **options})
    empty = signature(seed=tf.constant(["A", "B"]), **{**good, "length": tf.constant(0)})["text"].numpy()
    assert empty.tolist() == [b"", b""]
    # A byte-order mark and CR line ends are read as the CLI reads a seed.
    plain = signature(seed=tf.constant(["ROMEO:\nI"]), **good)["text"].numpy()
    assert signature(seed=tf.constant(["\ufeffROMEO:\r\nI"]), **good)["text"].numpy().tolist() == plain.tolist()


def test_generate_ids_signature_takes_and_returns_ids(pretrained_export):
    from textgen.pretrained import default_model_path

    generator = load(default_model_path())
    ids = generator.tokenizer.encode("ROMEO:")
    signature = tf.saved_model.load(str(pretrained_export)).signatures["generate_ids"]
    out = signature(seed_ids=tf.constant([ids], tf.int32), length=tf.constant(40), temperature=tf.constant(0.0),
                    top_k=tf.constant(0), top_p=tf.constant(1.0), random_seed=tf.constant(0, tf.int64))["ids"]
    assert generator.tokenizer.decode(out.numpy()[0]) == generator.generate("ROMEO:", 40, temperature=0)[0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="past the vocabulary"):
        signature(seed_ids=tf.constant([[10_000]], tf.int32), length=tf.constant(4), temperature=tf.constant(0.0),
                  top_k=tf.constant(0), top_p=tf.constant(1.0), random_seed=tf.constant(0, tf.int64))


@pytest.mark.parametrize("options", [{"temperature": 0}, {"temperature": 0.7}, {"temperature": 1.3, "top_k": 4},
                                     {"temperature": 0.9, "top_p": 0.6}, {"top_k": 1}])
def test_tensor_sampler_picks_what_the_named_sampler_picks(options):
    logits = tf.constant(np.random.default_rng(0).normal(size=(64, 30)) * 3, tf.float32)
    uniform = tf.constant(np.random.default_rng(1).random(64), tf.float32)
    named = make_sampler(**options)
    values = {"temperature": tf.constant(named.temperature, tf.float32),
              "top_k": tf.constant(options.get("top_k", 0)), "top_p": tf.constant(options.get("top_p", 1.0))}
    want = named.next_token(logits, uniform, {k: tf.constant(v) for k, v in named.values().items()})
    assert TensorSampler().next_token(logits, uniform, values).numpy().tolist() == want.numpy().tolist()


def test_publish_directory_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"

    def interrupted(folder):
        (folder / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        publish_directory(target, interrupted)
    assert list(tmp_path.iterdir()) == []

    def full_disk(folder):
        raise OSError(28, "No space left on device")

    with pytest.raises(TextgenError, match="out cannot be written \\(No space left on device\\); free some space"):
        publish_directory(target, full_disk)
    assert list(tmp_path.iterdir()) == []
    publish_directory(target, lambda folder: (folder / "a").write_text("kept"))
    with pytest.raises(UsageError, match="already exists and textgen never replaces it"):
        publish_directory(target, lambda folder: (folder / "a").write_text("new"))
    assert (target / "a").read_text() == "kept" and [p.name for p in tmp_path.iterdir()] == ["out"]


def _invoke(*args):
    return CliRunner().invoke(cli, ["export", *args])


def test_export_command_refuses_bad_arguments_in_one_line(tmp_path, trained_model):
    existing = tmp_path / "there"
    existing.mkdir()
    (existing / "mine.txt").write_text("user's")
    plain = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(plain)
    cases = [
        (["--format", "onnx", "--output", str(tmp_path / "a")], "'onnx' is not one of 'saved_model', 'tflite'"),
        (["--output", str(existing)], "already exists and textgen never replaces it"),
        (["--output", str(tmp_path / "missing" / "x")], "does not exist; create it first"),
        (["--model", str(plain), "--output", str(tmp_path / "b")], "textgen"),
        (["--model", str(trained_model), "--format", "tflite", "--output", str(tmp_path / "c")], "ending in .zip"),
        (["--model", str(trained_model), "--format", "tflite", "--no-xla", "--output", str(tmp_path / "d.zip")],
         "applies to --format saved_model"),
    ]
    for args, message in cases:
        result = _invoke(*args)
        assert result.exit_code != 0, args
        lines = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(lines) == 1 and message in lines[0], (args, result.output)
        assert "Traceback" not in result.output
    assert (existing / "mine.txt").read_text() == "user's" and sorted(p.name for p in existing.iterdir()) == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.keras", "there"]


def test_export_command_writes_a_tflite_zip(tmp_path, trained_model):
    out = tmp_path / "phone.zip"
    result = CliRunner().invoke(cli, ["export", "--model", str(trained_model), "--format", "tflite", "--output",
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, tflite)"
    assert "generate.py" in result.stdout
    import zipfile

    with zipfile.ZipFile(out) as archive:
        assert {"model.tflite", "tokenizer.json", "generate.py"} <= set(archive.namelist())
    assert [p.name for p in tmp_path.iterdir()] == ["phone.zip"]


@pytest.mark.slow
def test_export_command_writes_a_folder_and_reports_it(tmp_path, trained_model):
    out = tmp_path / "served"
    done = subprocess.run([sys.executable, "-m", "textgen", "-q", "export", "--model", str(trained_model), "--output",
                           str(out), "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""  # --quiet: no note while it works, no TensorFlow start-up lines
    facts = json.loads(done.stdout)
    assert facts["path"] == str(out) and facts["xla"] is True and facts["strings_in_graph"] is True
    assert facts["bytes"] > 0 and (out / "saved_model.pb").is_file()
    card = json.loads((out / "assets.extra" / "textgen.json").read_text(encoding="utf-8"))
    assert card["tokenizer"]["level"] == "char" and card["signatures"]["serving_default"] == "text"
    assert [p.name for p in tmp_path.iterdir()] == ["served"]  # no temporary folder left beside it
    loud = subprocess.run([sys.executable, "-m", "textgen", "export", "--model", str(trained_model), "--output",
                           str(tmp_path / "loud")], capture_output=True, text=True, timeout=600)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert loud.stdout.splitlines()[0].startswith(f"wrote {tmp_path / 'loud'} (") and "saved_model_cli run" in loud.stdout
    assert "exporting" in loud.stderr and "oneDNN" not in loud.stderr and "Traceback" not in loud.stderr


def test_a_write_failure_inside_tensorflow_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, trained_model):
    def full_disk(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "/x/variables.data: No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", full_disk)
    with pytest.raises(TextgenError) as caught:
        export_saved_model(load(trained_model).model, tmp_path / "out")
    assert str(caught.value) == (f"{tmp_path / 'out'} cannot be written (/x/variables.data: No space left on device); "
                                 "free some space, then run again")
    assert list(tmp_path.iterdir()) == []


def _word_export(tmp_path, pattern=None) -> tuple[Path, dict]:
    text = CORPUS.read_text(encoding="utf-8")[:20_000]
    tokenizer = WordTokenizer.fit(text, None)
    config = {**tokenizer.get_config(), "pattern": pattern}
    model = build_model(ModelConfig(cell="gru", units=8, embedding_dim=4), config)
    folder = tmp_path / "export"
    return folder, export_saved_model(model, folder, xla=False)


def test_a_word_pattern_re2_cannot_run_exports_ids_in_and_out(tmp_path):
    folder, facts = _word_export(tmp_path, pattern=r"\w+(?=\b)|[^\w\s]")
    assert facts["strings_in_graph"] is False and "lookahead" in facts["unsupported"]
    assert facts["signatures"]["serving_default"] == "ids"
    loaded = tf.saved_model.load(str(folder))
    inputs = loaded.signatures["serving_default"].structured_input_signature[1]
    assert "seed_ids" in inputs and "seed" not in inputs
    card = json.loads((folder / "assets.extra" / "textgen.json").read_text(encoding="utf-8"))
    assert card["tokenizer"]["pattern"] == r"\w+(?=\b)|[^\w\s]" and card["unsupported"] == facts["unsupported"]


def test_a_word_seed_without_tokens_is_refused_in_the_graph(tmp_path):
    folder, facts = _word_export(tmp_path)
    assert facts["strings_in_graph"] is True
    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="a seed has no tokens"):
        signature(seed=tf.constant(["the king", "  \t "]), length=tf.constant(3), temperature=tf.constant(0.0),
                  top_k=tf.constant(0), top_p=tf.constant(1.0), random_seed=tf.constant(0, tf.int64))


def test_different_seeds_sample_the_columns_one_batch_would_draw(pretrained_export):
    """Row i of a call with different seeds draws column i of the call's uniform numbers: the same
    text as row i of a call whose seeds are all equal to row i's seed."""
    signature = tf.saved_model.load(str(pretrained_export)).signatures["serving_default"]

    def texts(seeds):
        return signature(seed=tf.constant(seeds), length=tf.constant(30), temperature=tf.constant(1.0),
                         top_k=tf.constant(0), top_p=tf.constant(1.0),
                         random_seed=tf.constant(4, tf.int64))["text"].numpy().tolist()

    mixed = texts(["ROMEO:", "JULIET:", "KING:"])
    assert mixed[1] == texts(["JULIET:"] * 3)[1] and mixed[2] == texts(["KING:"] * 3)[2]
    assert len(set(mixed)) == 3
