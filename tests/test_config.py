import io
import json
import os
import re
import sys
import typing
from pathlib import Path

import pytest

from textgen.config import Config, ignored_settings, load_config
from textgen.errors import ConfigError
from textgen.data.pairs import RESERVED
from textgen.models.seq2seq import build_seq2seq
from textgen.models.builder import build_model
from textgen.data.tokenizer import CharTokenizer


def test_defaults_match_documented_values():
    packaged = Path(__file__).resolve().parents[1] / "textgen" / "corpora" / "tinyshakespeare.txt"
    assert Config().corpus.paths == (str(packaged),)  # the copy inside the package: any working directory
    config = load_config()
    assert config.corpus.paths == (str(packaged),) and packaged.is_file()
    assert config.model.cell == "lstm" and config.model.units == 512
    assert config.training.seq_length == 100 and config.training.learning_rate == 0.002
    assert config.output.dir == "runs/shakespeare-char"


def test_overrides_are_parsed_as_yaml_and_typed():
    config = load_config(None, ["training.epochs=3", "model.units=64",
                                "corpus.paths=['a.txt', 'b.txt']", "model.dropout=0.25"])
    assert config.training.epochs == 3
    assert config.model.units == 64
    assert config.corpus.paths == (str(Path.cwd() / "a.txt"), str(Path.cwd() / "b.txt"))
    assert config.model.dropout == 0.25


def test_file_then_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  cell: gru\ntraining:\n  epochs: 7\n")
    config = load_config(path, ["training.epochs=2"])
    assert config.model.cell == "gru" and config.training.epochs == 2
    assert config.model.units == 512  # untouched default


@pytest.mark.parametrize("override, message", [
    ("model.unit=64", "unknown config key model.unit; did you mean model.units?"),
    ("trainig.epochs=1", "unknown config key trainig; did you mean training?"),
    ("training.epochs=many", "training.epochs must be an integer, got str 'many'"),
    ("training.epochs=1.5", "training.epochs must be an integer"),
    ("training.epochs=0", "training.epochs must be at least 1, got 0"),
    ("model.units=-3", "model.units must be at least 1, got -3"),
    ("model.cell=lstn", "model.cell must be one of lstm, gru, simple_rnn, peephole_lstm, mgu, got 'lstn'; did you mean lstm?"),
    ("corpus.strip_gutenberg=maybe", "corpus.strip_gutenberg must be true or false"),
    ("corpus.validation_fraction=0.9", "corpus.validation_fraction must be between 0 and 0.5"),
    ("training.seq_length=true", "training.seq_length must be an integer, got bool True"),
    ("training.optimizer=adamm", "training.optimizer must be one of adam, adamw, rmsprop, got 'adamm'; did you mean adam?"),
    ("training.lr_schedule=cosin", "training.lr_schedule must be one of constant, exponential, cosine"),
    ("training.lr_decay=1.5", "training.lr_decay must be in (0, 1], got 1.5"),
    ("training.min_learning_rate=0.1", "training.min_learning_rate must be between 0 and training.learning_rate"),
    ("training.clipvalue=1", "training.clipvalue cannot be combined with training.clipnorm; set training.clipnorm=0"),
    ("training.patience=-1", "training.patience must be 0 or more, got -1"),
    ("training.max_minutes=0", "training.max_minutes must be positive or null, got 0"),
    ("training.decay_over=budget", "training.decay_over must be one of steps, time, got 'budget'"),
    ("training.decay_over=time", "training.decay_over is time, which times the cosine schedule: set training.lr_schedule=cosine, not constant"),
    ("training.steps_per_epoch=0", "training.steps_per_epoch must be at least 1, got 0"),
    ("training.sample_temperatures=[]", "training.sample_temperatures must list at least one temperature"),
    ("training.sample_temperatures=[hot]", "training.sample_temperatures must be a list of numbers"),
    ("training.sample_temperatures=[-1]", "training.sample_temperatures must be 0 (greedy) or more, got -1.0"),
    ("training.unknown_tokens=skip", "training.unknown_tokens must be one of error, unk, drop"),
    ("training.l2=-0.1", "training.l2 must be 0 or more"),
    ("training.l2=.inf", "training.l2 must be a finite number, got inf"),
    ("training.learning_rate=.inf", "training.learning_rate must be a finite number, got inf"),
    ("training.learning_rate=.nan", "training.learning_rate must be a finite number, got nan"),
    ("training.sample_temperatures=[1, .inf]", "training.sample_temperatures must be a finite number, got inf"),
    ("training.seed=-1", "training.seed must be between 0 and 2**32 - 1, got -1"),
    ("training.seed=4294967296", "training.seed must be between 0 and 2**32 - 1, got 4294967296"),
    ("model.embedding_dropout=1", "model.embedding_dropout must be in [0, 1) or null, got 1.0"),
    ("training.warmup_step=5", "unknown config key training.warmup_step; did you mean training.warmup_steps?"),
    ("epochs", "must look like KEY=VALUE"),
    ("model=3", "model must be a mapping"),
])
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_config(path)


def test_yaml_python_tag_is_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("text, where", [
    ("model:\n  units: 64\n  dropout: 0.1\n  units: 128\n", "key 'units' appears twice (lines 2 and 4)"),
    ("model: {units: 8}\ntraining: {epochs: 1}\nmodel: {units: 16}\n", "key 'model' appears twice (lines 1 and 3)"),
    ("model: {units: 8, units: 16}\n", "key 'units' appears twice (lines 1 and 1)"),
])
def test_a_key_given_twice_is_refused_not_silently_overwritten(tmp_path, text, where):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(where) + "; keep one"):
        load_config(path)


def test_yaml_merge_keys_may_still_override_what_they_merge(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("model:\n  <<: {units: 8, layers: 2}\n  units: 16\n")
    merged = load_config(path)
    assert (merged.model.units, merged.model.layers) == (16, 2)


@pytest.mark.parametrize("overrides, ignored", [
    ([], []),
    (["model.type=transformer", "model.cell=gru", "model.units=384", "model.window=64"],
     ["model.cell=gru (rnn only)", "model.units=384 (rnn only)", "model.window=64 (window mode only)"]),
    (["model.heads=8", "model.context_length=128", "model.window=64"],
     ["model.heads=8 (transformer only)", "model.context_length=128 (transformer only)",
      "model.window=64 (window mode only)"]),
    (["model.mode=window", "model.window=64", "model.heads=4"], []),  # heads at its default is no setting
    (["tokenizer.lowercase=true", "tokenizer.min_count=3"],
     ["tokenizer.lowercase=true (word level only)", "tokenizer.min_count=3 (word level only)"]),
    (["tokenizer.level=word", "tokenizer.lowercase=true", "tokenizer.min_count=3"], []),
])
def test_settings_the_chosen_architecture_does_not_read_are_listed(overrides, ignored):
    assert ignored_settings(load_config(None, overrides)) == ignored


def test_shipped_configs_set_nothing_their_model_ignores():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert ignored_settings(load_config(path)) == [], path.name


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_config_is_frozen_and_round_trips_through_yaml(tmp_path):
    config = load_config(None, ["model.units=8"])
    with pytest.raises(Exception):
        config.model.units = 9
    path = tmp_path / "saved.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config
    assert isinstance(config, Config)


def test_training_workflow_keys_and_yaml_exponents():
    config = load_config(None, ["training.learning_rate=3e-4", "training.l2=1e-6", "training.sample_temperatures=0.7",
                                "training.lr_schedule=cosine", "training.max_minutes=30", "model.embedding_dropout=0.1"])
    training = config.training
    assert training.learning_rate == 3e-4 and training.l2 == 1e-6  # YAML 1.1 reads these as strings
    assert training.sample_temperatures == (0.7,) and training.max_minutes == 30.0
    assert config.model.embedding_dropout == 0.1
    defaults = load_config().training
    assert (defaults.optimizer, defaults.lr_schedule, defaults.patience, defaults.unknown_tokens) == (
        "adam", "constant", 0, "error")
    assert defaults.steps_per_epoch is None and defaults.max_minutes is None and defaults.init_from is None


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates_builds_and_is_listed_in_the_readme(path):
    config = load_config(path)
    for corpus in config.corpus.paths:
        assert (ROOT / corpus).exists(), f"{path.name} trains on {corpus}, which the project does not ship"
    for corpus in config.corpus.validation_paths:
        assert (ROOT / corpus).exists(), f"{path.name} validates on {corpus}, which the project does not ship"
    tokenizer = CharTokenizer.fit("a shipped config builds\n").get_config()
    if config.model.type == "seq2seq":
        model = build_seq2seq(config.model, tokenizer, tokenizer)
        assert model.count_params() > 0 and model.output_shape[-1] == len(tokenizer["vocabulary"]) + RESERVED
    else:
        model = build_model(config.model, tokenizer, fused_kernels=True)
        assert model.count_params() > 0 and model.output_shape[-1] == len(tokenizer["vocabulary"])
    assert f"| `{path.stem}` |" in (ROOT / "README.md").read_text(encoding="utf-8")  # a row of its presets table


# --------------------------------------------------------------------------- inputs: size, kind, paths

def test_a_config_that_is_not_a_regular_file_is_refused_unopened(tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    with pytest.raises(ConfigError, match=r"config path .*config.fifo is not a regular file \(a FIFO\)"):
        load_config(fifo)
    with pytest.raises(ConfigError, match=r"config path /dev/null is not a regular file \(a character device\)"):
        load_config("/dev/null")


def test_a_config_larger_than_the_cap_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1) + "model: {units: 8}\n")
    with pytest.raises(ConfigError, match=r"is 1,048,\d+ bytes, more than a config's 1,048,576"):
        load_config(big)


def test_a_config_on_stdin_is_read_capped_and_its_paths_are_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"corpus: {paths: [texts/a.txt]}\n"
                                                                  b"model: {units: 8}\n")))
    config = load_config("-")
    assert config.model.units == 8 and config.corpus.paths == (str(tmp_path / "texts/a.txt"),)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"#" * (MAX_CONFIG_BYTES + 5))))
    with pytest.raises(ConfigError, match="the config on stdin is larger than 1,048,576 bytes"):
        load_config("-")


def _integer_keys() -> list[str]:
    keys = []
    for section, section_type in typing.get_type_hints(Config).items():
        for key, hint in typing.get_type_hints(section_type).items():
            if hint is int or int in typing.get_args(hint):
                keys.append(f"{section}.{key}")
    return keys


INTEGER_KEYS = _integer_keys()
MAX_CONFIG_BYTES = 1 << 20  # the documented cap on a config's size


def test_every_integer_key_is_found():
    assert {"model.units", "model.embedding_dim", "model.mlp_dim", "training.seed", "tokenizer.max_vocab",
            "training.steps_per_epoch", "training.checkpoint_every"} <= set(INTEGER_KEYS)


@pytest.mark.parametrize("key", INTEGER_KEYS)
def test_an_integer_past_int64_is_refused_with_the_bound(key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)} must be at most [\d,]+, got 100000000000000000000000"):
        load_config(None, [f"{key}=100000000000000000000000"])


@pytest.mark.parametrize("pattern", [r"(\w+)", r"(?P<word>\w+)|[^\w\s]", r"\w+(')?"])
def test_a_word_pattern_with_capture_groups_is_refused(pattern):
    with pytest.raises(ConfigError, match=r"tokenizer.pattern has \d capture groups? .*non-capturing group \(\?:\.\.\.\)"):
        load_config(None, ["tokenizer.level=word", f"tokenizer.pattern={json.dumps(pattern)}"])
    assert load_config(None, ["tokenizer.level=word", r"tokenizer.pattern='(?:\w+)'"]).tokenizer.pattern == r"(?:\w+)"


def test_an_empty_corpus_path_is_refused():
    with pytest.raises(ConfigError, match="corpus.paths holds an empty path, which would read the whole working"):
        load_config(None, ["corpus.paths=['']"])


def test_home_is_expanded_in_output_dir_and_init_from(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(None, ["output.dir=~/runs/x", "training.init_from=~/m.keras", "corpus.paths=['~/c.txt']"])
    assert config.output.dir == str(tmp_path / "runs/x")
    assert config.training.init_from == str(tmp_path / "m.keras")
    assert config.corpus.paths == (str(tmp_path / "c.txt"),)


def test_paths_in_a_config_file_are_relative_to_its_folder_and_output_dir_to_the_working_directory(
        tmp_path, monkeypatch):
    shared = tmp_path / "shared" / "configs"
    shared.mkdir(parents=True)
    (tmp_path / "shared" / "corpus.txt").write_text("text\n")
    path = shared / "c.yaml"
    path.write_text("corpus: {paths: [../corpus.txt, 'more/*.txt']}\n"
                    "training: {init_from: ../model.keras}\noutput: {dir: runs/mine}\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    config = load_config(path)
    assert config.corpus.paths == (str(tmp_path / "shared/corpus.txt"), str(shared / "more/*.txt"))
    assert config.training.init_from == str(tmp_path / "shared/model.keras")
    assert config.output.dir == "runs/mine"  # runs go where the user works, not into the configs folder
    overridden = load_config(path, ["corpus.paths=[mine.txt]", "training.init_from=m.keras"])
    assert overridden.corpus.paths == (str(work / "mine.txt"),)
    assert overridden.training.init_from == str(work / "m.keras")
    # the resolved config means the same when written out and read from elsewhere (a run's config.yaml)
    again = tmp_path / "again.yaml"
    again.write_text(config.to_yaml())
    assert load_config(again) == config


def test_a_missing_corpus_path_names_what_it_was_relative_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "configs" / "c.yaml"
    path.parent.mkdir()
    path.write_text("corpus: {paths: [corpora/x.txt]}\n")
    with pytest.raises(ConfigError, match=rf"corpus path corpora/x.txt \(relative to the config file's folder "
                                          rf"{re.escape(str(path.parent))}\) does not exist; fix corpus.paths"):
        load_config(path, check_corpus=True)
    with pytest.raises(ConfigError, match=rf"corpus path y.txt \(relative to the working directory "
                                          rf"{re.escape(str(tmp_path))}\) does not exist"):
        load_config(path, ["corpus.paths=[y.txt]"], check_corpus=True)
    assert load_config(path).corpus.paths == (str(path.parent / "corpora/x.txt"),)  # checked only when asked
