"""`textgen info`: the facts read from a file's JSON are the loaded model's, and the command takes
its model as MODEL or --model, the pretrained model by default."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from textgen.cli.main import cli
from textgen.config import ModelConfig
from textgen.generation.generate import load_keras_model
from textgen.models.builder import build_model
from textgen.models.info import file_facts, model_facts
from textgen.pretrained import default_model_path
from textgen.saving import save_model_atomic

CHARS = {"level": "char", "vocabulary": list(" abcdefghijklmnopqrstuvwxyz")}
WORDS = {"level": "word", "vocabulary": ["<nospace>", "<space>", "<unk>", "a", "cat", "the"], "lowercase": True,
         "max_vocab": None, "min_count": 1, "pattern": None}
CARD = {"textgen_version": "0.1.0", "coverage": 0.98765, "init_from": {"path": "base.keras"},
        "history": {"epochs": 2, "best_epoch": 1, "best_loss": 1.5, "final_loss": 1.2, "final_val_loss": 1.6,
                    "seconds": 3.0, "stopped": "completed", "best_step": 7},
        "config": {"training": {"seq_length": 10, "ema_momentum": 0.99}}}

# Every kind of network textgen builds, with the options that change what info shows.
MODELS = {
    "lstm, 2 layers, dropout": (dict(cell="lstm", layers=2, dropout=0.2), CHARS, {}),
    "gru, trained twin": (dict(cell="gru"), CHARS, {"fused_kernels": True}),
    "mgu, no card": (dict(cell="mgu"), CHARS, {"card": None}),
    "peephole_lstm": (dict(cell="peephole_lstm"), CHARS, {}),
    "simple_rnn, embedding dropout": (dict(cell="simple_rnn", embedding_dropout=0.1), CHARS, {}),
    "window, bidirectional, attention": (dict(cell="gru", mode="window", window=5, bidirectional=True,
                                              attention=True, layers=2, dropout=0.1), CHARS, {}),
    "window, lstm": (dict(cell="lstm", mode="window", window=4), CHARS, {}),
    "transformer": (dict(type="transformer", embedding_dim=16, heads=2, layers=2, context_length=8, dropout=0.1),
                    CHARS, {}),
    "word level": (dict(cell="gru"), WORDS, {}),
}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each of MODELS saved as training saves its model.keras: {name: path}."""
    root = tmp_path_factory.mktemp("info-models")
    paths = {}
    for i, (name, (config, tokenizer, options)) in enumerate(MODELS.items()):
        card = options.get("card", CARD)
        model = build_model(ModelConfig(**{"embedding_dim": 8, "units": 8, **config}), tokenizer, model_card=card,
                            fused_kernels=options.get("fused_kernels", False))
        paths[name] = root / f"model{i}.keras"
        save_model_atomic(model, paths[name])
    return paths


@pytest.mark.parametrize("name", MODELS)
def test_the_files_json_gives_the_loaded_models_facts(saved, name):
    from_file, loaded = file_facts(saved[name]), model_facts(load_keras_model(saved[name]))
    assert from_file == loaded
    assert list(from_file) == list(loaded)  # the same order on screen too
    assert from_file["parameters"] == load_keras_model(saved[name]).count_params() > 0


def test_the_pretrained_and_a_trained_model_read_the_same_from_the_file(trained_model):
    for path in (default_model_path(), trained_model):
        assert file_facts(path) == model_facts(load_keras_model(path))
    facts = file_facts(default_model_path())  # saved before the card named its architecture: read from its layers
    assert (facts["cell"], facts["units"], facts["parameters"], facts["mode"]) == ("LSTM", [512], 1_219_201, "sequence")


def test_info_takes_the_model_as_argument_or_option_and_the_pretrained_by_default(trained_model):
    by_argument, by_option = run("info", trained_model), run("info", "--model", trained_model)
    assert by_argument.exit_code == by_option.exit_code == 0, by_argument.output
    assert by_argument.output == by_option.output and "\nunits: 32\n" in by_argument.output
    default, pretrained = run("info", "--json"), run("info", default_model_path(), "--json")
    assert default.exit_code == 0 and default.output == pretrained.output
    assert json.loads(default.output)["units"] == [512]


def test_info_refuses_a_model_given_twice_in_one_line(trained_model):
    result = run("info", trained_model, "--model", trained_model)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "Error: give the model once: as MODEL or as --model, not both"


def test_info_ends_with_how_to_load_the_model_in_python(trained_model):
    last = run("info", trained_model).output.splitlines()[-1]
    shown = repr(str(trained_model))
    assert last.startswith(f"in Python: import textgen; generator = textgen.load({shown})")
    assert f"import keras, textgen; model = keras.models.load_model({shown})" in last
    as_json = run("info", trained_model, "--json").output
    assert "in Python" not in as_json and json.loads(as_json)["units"] == [32]  # JSON holds only the facts


def test_info_help_names_both_forms_and_the_default():
    text = " ".join(run("info", "--help").output.split())
    assert "[MODEL]" in text and "--model FILE" in text and "(the same as MODEL)" in text
    assert "[default: the pretrained Shakespeare character model shipped with textgen]" in text


def test_info_reads_a_model_without_importing_tensorflow(trained_model, tmp_path):
    code = ("import sys\nfrom textgen.cli.main import cli\n"
            "cli.main(['info', sys.argv[1]], standalone_mode=False)\n"
            "print(sorted({'tensorflow', 'keras', 'textgen.models.layers'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code, str(trained_model)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\nunits: 32\n" in result.stdout and result.stdout.splitlines()[-1] == "[]"


def test_a_file_the_json_reader_does_not_vouch_for_is_described_by_loading_it(trained_model, monkeypatch):
    import textgen.models.info as info_module
    from textgen.model_file import NeedsKeras

    expected = run("info", trained_model, "--json").output

    def refuse(path):
        raise NeedsKeras(f"{path}: pretend only Keras can judge it")

    monkeypatch.setattr(info_module, "read_model_file", refuse)
    fallback = run("info", trained_model, "--json")
    assert fallback.exit_code == 0 and fallback.output == expected


def test_a_file_naming_a_foreign_class_is_refused_by_keras_in_one_line(trained_model, tmp_path):
    from test_bad_input import rewrite_keras_config, walk

    def foreign(config):
        for node in walk(config):
            if node.get("class_name") == "GRU":
                node.update(module="keras.layers", class_name="Lambda")  # code safe mode never runs
        return config

    path = tmp_path / "lambda.keras"
    rewrite_keras_config(trained_model, path, foreign)
    result = run("info", path)
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert result.output.startswith(f"Error: model file {path} cannot be loaded: ")
