"""Generating from a conditioned model: every stepper adds the rows' label vectors where the
Keras model adds them, and greedy, sampled, beam, streamed and step-by-step generation, the
command line and `info` all take labels (textgen.labels)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import textgen
from textgen.cli.main import cli
from textgen.config import ModelConfig
from textgen.data.tokenizer import CharTokenizer
from textgen.errors import UsageError
from textgen.generation.generate import Generator, Request
from textgen.generation.samplers import make_sampler
from textgen.generation.steppers import CellStepper, PackedColumnStepper, RecurrentStepper, make_stepper
from textgen.labels import LabelGroup, LabelSpace
from textgen.models.builder import build_model
from textgen.models.info import file_facts
from textgen.models.layers import find_label_embedding
from textgen.models.transformer import TransformerStepper

TEXT = (Path(textgen.__file__).parent / "corpora" / "pride_and_prejudice.txt").read_text(encoding="utf-8")[:3000]
TOKENIZER = CharTokenizer(sorted(set(TEXT)))
SPACE = LabelSpace((LabelGroup("author", ("any", "austen", "melville", "verne")),
                    LabelGroup("genre", ("any", "novel", "play"))))
CONTEXT = 8  # the transformer's; its tests run past it

ARCHITECTURES = {
    "lstm": ModelConfig(cell="lstm", embedding_dim=8, units=12, layers=2),  # label concatenated (auto)
    "lstm-add": ModelConfig(cell="lstm", embedding_dim=8, units=12, layers=2, label_merge="add"),
    "gru": ModelConfig(cell="gru", embedding_dim=8, units=12, layers=2),
    "gru-add": ModelConfig(cell="gru", embedding_dim=8, units=12, layers=2, label_merge="add"),
    "simple_rnn": ModelConfig(cell="simple_rnn", embedding_dim=8, units=12),
    "peephole_lstm": ModelConfig(cell="peephole_lstm", embedding_dim=8, units=12),
    "window": ModelConfig(cell="gru", mode="window", window=5, units=8, embedding_dim=6, attention=True),
    "window-add": ModelConfig(cell="gru", mode="window", window=5, units=8, embedding_dim=6, attention=True,
                              label_merge="add"),
    "transformer": ModelConfig(type="transformer", embedding_dim=16, heads=2, layers=2, context_length=CONTEXT),
}


def conditioned(name: str, labels: LabelSpace | None = SPACE) -> keras.Model:
    """A tiny untrained model with doubled weights (so the text depends on every weight) and
    label vectors large enough that each label changes the text."""
    # A seed under which each label's greedy text differs (seed 3 gives the 1-layer SimpleRNN one
    # character throughout, whatever the label).
    keras.utils.set_random_seed(4 if name == "simple_rnn" else 3)
    model = build_model(ARCHITECTURES[name], TOKENIZER.get_config(), labels=labels)
    for weight in model.weights:
        weight.assign(weight * 2.0)
    if labels is not None:
        table = find_label_embedding(model).embeddings
        table.assign(table * 20.0)
    return model


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def model(request):
    return conditioned(request.param)


def label_ids(ids: np.ndarray, row: list[int]) -> np.ndarray:
    """Every position of `ids` (batch, time) labelled `row` (one label index per group)."""
    return np.broadcast_to(np.asarray(row, np.int32), (*ids.shape, len(row))).copy()


def keras_logits(model, ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The Keras model's logits at every position (batch, time, vocab); a transformer's from at
    most its context, the last CONTEXT tokens, as generation reads them."""
    if "transformer" not in model.name or ids.shape[1] <= CONTEXT:
        return model([ids, labels]).numpy()
    return np.stack([model([ids[:, max(0, t - CONTEXT + 1):t + 1], labels[:, :min(t + 1, CONTEXT)]]).numpy()[:, -1]
                     for t in range(ids.shape[1])], axis=1)


def steppers_of(model):
    stepper = make_stepper(model)
    if isinstance(stepper, RecurrentStepper):
        return [stepper, PackedColumnStepper(model, tf.float32, one_hot=True),
                PackedColumnStepper(model, tf.float32, one_hot=False), CellStepper(model)]
    if isinstance(stepper, TransformerStepper):
        return [stepper, TransformerStepper(model, cached=False)]
    return [stepper]


def stepped_logits(stepper, ids: np.ndarray, vectors) -> np.ndarray:
    states = stepper.initial_states(ids.shape[0], vectors)
    out = []
    for t in range(ids.shape[1]):
        logits, states = stepper.step(tf.constant(ids[:, t]), states)
        out.append(logits.numpy())
    return np.stack(out, axis=1)


IDS = TOKENIZER.encode(TEXT[:24]).reshape(2, 12).astype(np.int32)


@pytest.mark.parametrize("specs, row", [(("austen",), [1, 0]), (("melville", "genre=play"), [2, 2]), ((), [0, 0])])
def test_every_stepper_equals_the_keras_model_for_a_label(model, specs, row):
    generator = Generator(model)
    vectors, _ = generator.label_vectors(specs)
    expected = keras_logits(model, IDS, label_ids(IDS, row))
    assert not np.allclose(expected, keras_logits(model, IDS, label_ids(IDS, [3, 1])), atol=1e-3)  # labels matter
    for stepper in steppers_of(model):
        np.testing.assert_allclose(stepped_logits(stepper, IDS, vectors), expected, atol=2e-5,
                                   err_msg=type(stepper).__name__)


def test_a_blend_steps_as_a_model_whose_label_is_the_blend(model):
    """A blend's vector is the weighted sum of its labels' vectors: the same as a model whose
    `any` row of the author group holds that sum."""
    generator = Generator(model)
    vectors, _ = generator.label_vectors(["austen:0.7,melville:0.3", "genre=novel"])
    table = find_label_embedding(model).embeddings
    saved = table.numpy()
    try:
        table.assign(np.concatenate([[0.7 * saved[1] + 0.3 * saved[2]], saved[1:]]))
        expected = keras_logits(model, IDS, label_ids(IDS, [0, 1]))
    finally:
        table.assign(saved)
    for stepper in steppers_of(model):
        np.testing.assert_allclose(stepped_logits(stepper, IDS, vectors), expected, atol=2e-5,
                                   err_msg=type(stepper).__name__)


def test_the_column_stepper_continues_tiled_labelled_rows():
    """Rows primed by the row stepper, tiled into the column layout (how bfloat16 batches start),
    go on as the row stepper's own rows do."""
    model = conditioned("gru")
    vectors, _ = Generator(model).label_vectors(["melville", "genre=play"])
    rows, columns = RecurrentStepper(model), PackedColumnStepper(model, tf.float32)
    states = rows.initial_states(1, vectors)
    for token in IDS[0, :5]:
        _, states = rows.step(tf.constant([token]), states)
    tiled_rows, tiled_columns = rows.tile_states(states, 3), columns.tile_states(states, 3)
    for token in IDS[1]:
        a, tiled_rows = rows.step(tf.fill([3], token), tiled_rows)
        b, tiled_columns = columns.step(tf.fill([3], token), tiled_columns)
        np.testing.assert_allclose(b, a, atol=2e-5)


def keras_greedy(model, seed: str, length: int, row: list[int]) -> str:
    """Greedy text from the Keras model itself: the argmax of its last position, token by token."""
    ids = list(TOKENIZER.encode(seed))
    for _ in range(length):
        window = np.array([ids[-CONTEXT:] if "transformer" in model.name else ids], np.int32)
        ids.append(int(np.argmax(model([window, label_ids(window, row)])[0, -1])))
    return TOKENIZER.decode(ids[len(seed):])


def test_greedy_text_follows_the_label(model):
    generator = Generator(model, precision="float32")
    [austen] = generator.generate("It is a truth", length=20, temperature=0, labels="austen")
    assert austen == keras_greedy(model, "It is a truth", 20, [1, 0])
    assert [austen] == generator.generate("It is a truth", length=20, temperature=0, labels=["author=austen"])
    [melville] = generator.generate("It is a truth", length=20, temperature=0, labels="melville")
    assert melville != austen
    both = generator.generate("It is a truth", length=20, temperature=0, labels=("austen", "melville"))
    assert both == [austen, melville]
    # Beam search of width 1 is greedy, under the label too.
    assert generator.generate("It is a truth", length=20, beam_width=1, labels="melville") == [melville]


def test_a_conditioned_model_without_labels_writes_as_any(model):
    generator = Generator(model, precision="float32")
    assert generator.generate("Mr. Bennet", length=16, temperature=0) == [keras_greedy(model, "Mr. Bennet", 16, [0, 0])]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_per_sample_labels_sample_as_each_label_alone(precision):
    """With one random seed, sample i of labels (austen, melville) is sample i of that label for
    every row: the rows share the random numbers of their batch and nothing else."""
    generator = Generator(conditioned("gru"), precision=precision)
    options = {"length": 40, "temperature": 1.0, "random_seed": 9, "num_samples": 2}
    mixed = generator.generate("She", labels=("austen", "melville"), **options)
    assert mixed == [generator.generate("She", labels="austen", **options)[0],
                     generator.generate("She", labels="melville", **options)[1]]
    assert mixed[0] != generator.generate("She", labels="melville", **options)[0]


def test_stream_session_and_score_take_labels():
    model = conditioned("lstm")
    generator = Generator(model, precision="float32")
    request = Request(seed="Bennet", length=30, sampler=make_sampler(0.8, None, None), random_seed=4,
                      labels=("verne", "genre=novel"))
    assert "".join(generator.stream(request)) == generator.run(request)[0].text
    greedy = generator.generate("Bennet", length=5, temperature=0, labels="verne")[0]
    assert generator.session("Bennet", labels=["verne"]).candidates(1)[0][1] == greedy[0]
    assert generator.session("Bennet").candidates(1)[0][1] == generator.generate("Bennet", 5, 0)[0][0]
    # The score is the Keras model's own log-probability of the text under the label.
    ids = np.array([TOKENIZER.encode("Bennet" + greedy)], np.int32)
    log_probs = tf.nn.log_softmax(model([ids, label_ids(ids, [3, 1])])).numpy()[0]
    expected = sum(log_probs[t - 1, ids[0, t]] for t in range(6, ids.shape[1]))
    assert generator.log_probability("Bennet", greedy, labels=["verne", "genre=novel"]) == \
        pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("call, message", [
    (lambda g: g.generate("a", 5, labels="dickens"), "unknown label 'dickens'; valid labels are author: any, austen"),
    (lambda g: g.generate("a", 5, beam_width=2, labels=("austen", "verne")), "beam search is for one text"),
    (lambda g: list(g.stream(Request("a", 5, labels=("austen", "verne")))), "streaming produces one sample"),
    (lambda g: g.session("a", labels=("austen", "verne")), "a session is for one text"),
    (lambda g: g.generate("a", 5, num_samples=3, labels=("austen", "verne")), "but --num-samples is 3"),
])
def test_labels_a_model_cannot_take_are_one_line_errors(call, message):
    with pytest.raises(UsageError, match=message):
        call(Generator(conditioned("simple_rnn")))


def test_labels_for_a_model_without_labels_are_an_error():
    generator = Generator(conditioned("simple_rnn", labels=None))
    with pytest.raises(UsageError, match="this model was trained without labels; drop --label"):
        generator.check(Request("a", 5, labels=("austen",)))
    with pytest.raises(ValueError, match="for a model without labels"):
        generator.stepper.initial_states(1, np.zeros((1, 8), np.float32))


@pytest.mark.parametrize("name", ["gru", "window", "transformer"])
def test_a_model_without_labels_generates_as_its_keras_model(name):
    model = conditioned(name, labels=None)
    assert len(model.inputs) == 1 and len(Generator(model).stepper.initial_states(1)) == \
        (3 if name == "transformer" else 1 if name == "window" else 2)  # no label state
    ids = list(TOKENIZER.encode("Netherfield"))
    for _ in range(14):  # past the transformer's context
        window = np.array([ids[-CONTEXT:] if name == "transformer" else ids], np.int32)
        ids.append(int(np.argmax(model(window).numpy()[0, -1])))
    expected = TOKENIZER.decode(ids[len("Netherfield"):])
    assert Generator(model, precision="float32").generate("Netherfield", length=14, temperature=0) == [expected]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A conditioned model file and one without labels."""
    folder = tmp_path_factory.mktemp("models")
    conditioned("gru").save(folder / "labelled.keras")
    conditioned("gru", labels=None).save(folder / "plain.keras")
    return folder


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_generate_label_on_the_command_line(saved):
    path = saved / "labelled.keras"
    generator = textgen.load(path, precision="float32")
    result = run_cli("generate", "--model", path, "--seed", "The ", "--length", 25, "--temperature", 0,
                     "--label", "author=melville", "--label", "genre=play", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["samples"][0]["text"] == generator.generate("The ", 25, 0, labels=("melville", "genre=play"))[0]
    assert document["settings"]["labels"] == ["author=melville", "genre=play"]
    result = run_cli("generate", "--model", path, "--seed", "The ", "--length", 25, "--temperature", 0,
                     "--label", "austen", "--label", "verne")
    assert result.exit_code == 0, result.output
    for label, text in zip(("austen", "verne"), generator.generate("The ", 25, 0, labels=("austen", "verne"))):
        assert f"label {label})\nThe {text}\n" in result.output


def test_generate_label_errors_are_one_line(saved):
    result = run_cli("generate", "--model", saved / "labelled.keras", "--seed", "The", "--label", "dickens")
    assert result.exit_code == 2
    assert "unknown label 'dickens'; valid labels are author: any, austen, melville, verne; genre: any, novel, play" \
        in result.output and "Traceback" not in result.output
    result = run_cli("generate", "--model", saved / "plain.keras", "--seed", "The", "--label", "austen")
    assert result.exit_code == 2 and "this model was trained without labels; drop --label" in result.output


def test_info_shows_the_label_groups(saved):
    result = run_cli("info", saved / "labelled.keras")
    assert result.exit_code == 0, result.output
    assert "labels:\n  author: austen, melville, verne (and any)\n  genre: novel, play (and any)\n" in result.output
    facts = json.loads(run_cli("info", saved / "labelled.keras", "--json").output)
    assert facts["labels"] == SPACE.to_card() == file_facts(saved / "labelled.keras")["labels"]  # read without Keras
    assert "labels" not in json.loads(run_cli("info", saved / "plain.keras", "--json").output)


def test_prime_states_primes_each_seed_under_its_own_label():
    """The server's priming (one row per seed) takes one label vector per seed."""
    generator = Generator(conditioned("lstm"), precision="float32")
    vectors, _ = generator.label_vectors(("austen", "verne"))
    seeds = [TOKENIZER.encode("Longbourn"), TOKENIZER.encode("Mrs. Long")]
    primed = generator.prime_states(seeds, labels=vectors)
    for row, ids in enumerate(seeds):
        alone, _ = generator._start(ids, 1, labels=vectors[row:row + 1])
        for a, b in zip(tf.nest.flatten(primed), tf.nest.flatten(alone)):
            np.testing.assert_allclose(a.numpy()[row:row + 1], b.numpy(), atol=1e-5)
