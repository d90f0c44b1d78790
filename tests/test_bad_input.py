"""The bad-input matrix: every mistake in a command, config, corpus, seed or model file gets
a one-line answer with the documented exit code, no traceback, and leaves no file behind.

Each case is one row: the arguments (built from a shared set of broken files), the exit
code README.md documents (2: the request is wrong; 1: the work failed), and words the
message must contain. Every row is checked the same way by `check_answer`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import keras
import pytest
from click.testing import CliRunner

from conftest import tiny_overrides
from textgen.cli.main import cli
from textgen.errors import TextgenError
from textgen.training.rundir import LOCK_FILE, RunDirectory

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------- broken files


def rewrite_keras_config(source: Path, target: Path, change) -> None:
    """Copy a .keras zip, passing its config.json through `change(config) -> config`."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                data = json.dumps(change(json.loads(data))).encode()
            zout.writestr(item, data)


def walk(node):
    """Every dict inside a JSON tree."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def with_format_version(version):
    def change(config):
        cards = [d["model_card"] for d in walk(config) if isinstance(d.get("model_card"), dict)]
        assert cards, "the model card was not found in config.json"
        for card in cards:
            card["format_version"] = version
        return config
    return change


def with_unknown_class(config):
    for node in walk(config):
        if node.get("class_name") == "GRU":
            node.update(class_name="EvilLayer", module="evil.layers", registered_name="evil>EvilLayer")
    return config


def with_embedding(change):
    """A `rewrite_keras_config` change applied to the config of the layer holding the tokenizer and card."""
    def rewrite(config):
        layers = [d for d in walk(config) if isinstance(d.get("model_card"), dict) and "tokenizer" in d]
        assert len(layers) == 1, "the token embedding was not found in config.json"
        change(layers[0])
        return config
    return rewrite


def word_tokenizer_of_size(size: int, **options) -> dict:
    """A word tokenizer config with `size` tokens, to put in place of a character model's."""
    from textgen.data.tokenizer import SPECIAL_TOKENS

    words = [f"w{i}" for i in range(size - len(SPECIAL_TOKENS))]
    return {"level": "word", "vocabulary": [*SPECIAL_TOKENS, *words], "lowercase": False, "pattern": None,
            "max_vocab": None, "min_count": 1, **options}


def build_files(root: Path, trained_model: Path, small_corpus: Path) -> SimpleNamespace:
    f = SimpleNamespace(root=root, model=trained_model, corpus=small_corpus)

    def write(name, data):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    # model files
    f.not_zip = write("not_zip.keras", "this is not a zip archive\n")
    f.truncated = write("truncated.keras", trained_model.read_bytes()[:5000])
    f.half = write("half.keras", trained_model.read_bytes()[: trained_model.stat().st_size // 2])
    f.wrong_suffix = write("model.h5", "x")
    f.empty_model = write("empty.keras", b"")
    f.plain = root / "plain.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(f.plain)
    f.newer = root / "newer.keras"
    rewrite_keras_config(trained_model, f.newer, with_format_version(99))
    f.unknown_class = root / "unknown_class.keras"
    rewrite_keras_config(trained_model, f.unknown_class, with_unknown_class)
    f.garbage_config = root / "garbage_config.keras"
    with zipfile.ZipFile(trained_model) as zin, zipfile.ZipFile(f.garbage_config, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, b"{not json" if item.filename == "config.json" else zin.read(item.filename))
    f.foreign_zip = root / "foreign.keras"
    with zipfile.ZipFile(f.foreign_zip, "w") as z:
        z.writestr("readme.txt", "a zip, but no model")
    f.model_dir = root / "model_dir.keras"
    f.model_dir.mkdir()

    # corpora
    f.empty_corpus = write("corpora/empty.txt", b"")
    f.blank_corpus = write("corpora/blank.txt", " \n\n\t \n")
    f.nul_corpus = write("corpora/nul.txt", b"Some text\x00with a NUL byte\n" * 20)
    f.bad_utf8 = write("corpora/bad_utf8.txt", "Valid text first. ".encode() * 50 + b"\xff\xfe broken\n")
    f.truncated_utf8 = write("corpora/cut.txt", "text ending mid-character \u00e9".encode()[:-1])
    f.binaries = root / "corpora/binaries"
    for i in range(3):
        write(f"corpora/binaries/blob{i}.bin", bytes(range(256)) * 4)
    f.empty_dir = root / "corpora/empty_dir"
    f.empty_dir.mkdir()
    f.short_corpus = write("corpora/short.txt", "too short\n")

    # configs
    f.yaml_list = write("configs/list.yaml", "- corpus\n- model\n")
    f.yaml_scalar = write("configs/scalar.yaml", "just a string\n")
    f.marker = root / "python-tag-ran"
    f.yaml_python = write("configs/python.yaml",
                          f"training: !!python/object/apply:os.system ['touch {f.marker}']\n")
    f.yaml_broken = write("configs/broken.yaml", "model:\n  units: [1, 2\n")
    f.yaml_latin1 = write("configs/latin1.yaml", "# caf\xe9\nmodel: {units: 8}\n".encode("latin-1"))
    f.yaml_section = write("configs/section.yaml", "model: 3\n")
    f.yaml_unknown = write("configs/unknown.yaml", "modle:\n  units: 8\n")
    f.yaml_twice = write("configs/twice.yaml", "model:\n  units: 8\n  units: 16\n")

    # places that cannot be written
    f.blocker = write("blocker", "a regular file, so nothing can be created under it\n")
    f.readonly = root / "readonly"
    f.readonly.mkdir()
    f.readonly.chmod(0o500)

    # folders that are not textgen's to write, and a run directory a live process holds
    f.user_folder = root / "user_folder"
    write("user_folder/notes.txt", "the user's notes\n")
    write("user_folder/checkpoint/model.bin", b"\x00\x01 the user's own checkpoint")
    f.corpus_folder = root / "corpus_folder"
    write("corpus_folder/part1.txt", "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40)
    f.live_run = root / "live_run"
    shutil.copytree(trained_model.parent, f.live_run, ignore=shutil.ignore_patterns("cache"))
    f.live = RunDirectory(f.live_run, "textgen train --config live.yaml")
    f.live.__enter__()
    f.text = write("held_out.txt", "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 3)

    # inputs: config files, corpora and texts that are not what they seem (the inputs area)
    f.fifo = root / "inputs" / "pipe.fifo"
    f.fifo.parent.mkdir()
    os.mkfifo(f.fifo)  # a reader that opened it would block until a writer came
    f.fifo_dir = root / "inputs" / "fifo_only"
    f.fifo_dir.mkdir()
    os.mkfifo(f.fifo_dir / "book.txt")
    f.only_dirs = root / "inputs" / "books"
    (f.only_dirs / "volume1").mkdir(parents=True)
    (f.only_dirs / "volume2").mkdir()
    short = "too short\n"
    f.utf16le_short = write("inputs/short_utf16le.txt", short.encode("utf-16-le"))
    f.utf16_short = write("inputs/short_utf16.txt", short.encode("utf-16"))  # with its byte-order mark
    f.utf16_bom = write("inputs/utf16_bom.txt", "First Citizen:\nSpeak.\n".encode("utf-16"))
    f.utf32_bom = write("inputs/utf32_bom.txt", "First Citizen:\nSpeak.\n".encode("utf-32"))
    f.utf16le_unknown = write("inputs/unknown_utf16le.txt", "\u00a7\u00a7 \u00b6\u00b6\n".encode("utf-16-le"))
    f.yaml_big = write("inputs/big.yaml", "# a comment line of padding\n" * 40_000 + "model: {units: 8}\n")
    huge = 100000000000000000000000
    f.yaml_units = write("inputs/units.yaml", f"model:\n  units: {huge}\n")
    f.yaml_embedding = write("inputs/embedding.yaml", f"model:\n  embedding_dim: {huge}\n")
    f.yaml_seq = write("inputs/seq.yaml", f"training:\n  seq_length: {huge}\n")
    f.yaml_batch = write("inputs/batch.yaml", f"training:\n  batch_size: {huge}\n")
    f.yaml_groups = write("inputs/groups.yaml", "tokenizer:\n  level: word\n  pattern: \"(\\\\w+)|[^\\\\w\\\\s]\"\n")
    f.yaml_empty_path = write("inputs/empty_path.yaml", "corpus:\n  paths: ['']\n")
    f.yaml_relative = write("inputs/relative.yaml", "corpus:\n  paths: [corpora/nowhere.txt]\n")

    # model files: valid zips whose tokenizer or model card is damaged (the loader checks both)
    def damaged(name, change):
        path = root / f"{name}.keras"
        rewrite_keras_config(trained_model, path, with_embedding(change))
        return path

    def card(key, value, section=None):
        def change(layer):
            target = layer["model_card"]
            for part in section or ():
                target = target[part]
            target[key] = value
        return change

    def tokenizer(change):
        def apply(layer):
            layer["tokenizer"] = change(layer["tokenizer"])
        return apply

    f.version_text = damaged("version_text", card("format_version", "abc"))
    f.version_null = damaged("version_null", card("format_version", None))
    f.version_zero = damaged("version_zero", card("format_version", 0))
    f.tokenizer_list = damaged("tokenizer_list", tokenizer(lambda t: list(t["vocabulary"])))
    f.tokenizer_level = damaged("tokenizer_level", tokenizer(lambda t: {**t, "level": "byte"}))
    f.vocabulary_numbers = damaged("vocabulary_numbers",
                                   tokenizer(lambda t: {**t, "vocabulary": list(range(len(t["vocabulary"])))}))
    f.vocabulary_unsorted = damaged("vocabulary_unsorted",
                                    tokenizer(lambda t: {**t, "vocabulary": t["vocabulary"][::-1]}))
    f.vocabulary_short = damaged("vocabulary_short", tokenizer(lambda t: {**t, "vocabulary": t["vocabulary"][:-5]}))
    f.vocabulary_long = damaged("vocabulary_long",
                                tokenizer(lambda t: {**t, "vocabulary": [*t["vocabulary"], "\u00e9", "\u00ea"]}))
    f.word_groups = damaged("word_groups", tokenizer(
        lambda t: word_tokenizer_of_size(len(t["vocabulary"]), pattern=r"(\w+)('\w+)?")))
    f.word_lowercase_text = damaged("word_lowercase_text", tokenizer(
        lambda t: word_tokenizer_of_size(len(t["vocabulary"]), lowercase="yes")))
    f.word_extra_key = damaged("word_extra_key", tokenizer(
        lambda t: {**word_tokenizer_of_size(len(t["vocabulary"])), "evil": 1}))
    f.card_loss_text = damaged("card_loss_text", card("final_loss", "low", section=("history",)))
    f.card_history_list = damaged("card_history_list", card("history", [1, 2]))
    f.card_coverage_text = damaged("card_coverage_text", card("coverage", "all"))
    f.card_seq_length_text = damaged("card_seq_length_text", card("seq_length", "long", section=("config", "training")))
    f.card_init_from_text = damaged("card_init_from_text", card("init_from", "elsewhere"))
    f.card_training_list = damaged("card_training_list", card("training", ["x"], section=("config",)))

    # run directories whose checkpoint/state.json is damaged (to --resume)
    def damaged_run(name, change):
        run = root / "runs" / name
        shutil.copytree(trained_model.parent, run)
        state = run / "checkpoint" / "state.json"
        state.write_text(json.dumps(change(json.loads(state.read_text()))))
        return run

    f.state_step_text = damaged_run("step_text", lambda s: {**s, "global_step": str(s["global_step"])})
    f.state_list = damaged_run("list", lambda s: [s])
    f.state_no_recorder = damaged_run("no_recorder", lambda s: {k: v for k, v in s.items() if k != "recorder"})

    # the command line's edges: seed files, and a FIFO where a file belongs
    f.seed_latin1 = write("seeds/latin1.txt", "caf\xe9 ROMEO:".encode("latin-1"))
    f.seed_big = write("seeds/big.txt", b"a" * ((1 << 20) + 1))
    f.seed_empty = write("seeds/empty.txt", b"")
    f.seed_unknown = write("seeds/unknown.txt", "ROMEO \u00a7\n")
    f.seed_dir = root / "seeds"
    return f


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_model, small_corpus):
    root = tmp_path_factory.mktemp("bad")
    f = build_files(root, trained_model, small_corpus)
    yield f
    f.live.__exit__(None, None, None)
    (root / "readonly").chmod(0o700)


# --------------------------------------------------------------------------- the matrix


def train_args(f, out, **extra):
    """`textgen train` on the tiny settings, with `extra` --set overrides."""
    return ["train", *[a for o in tiny_overrides(f.corpus, out, **extra) for a in ("--set", o)]]


def config_args(path, out):
    """`textgen train --config PATH`: the file alone decides what goes wrong."""
    return ["train", "--config", str(path), "--output", str(out)]


def gen(f, *args):
    return ["generate", "--model", str(f.model), *args]


@dataclass
class Case:
    name: str
    args: object  # f, out -> argv
    code: int
    message: str
    marks: tuple = ()
    input: object = None  # f -> bytes on stdin


# ---- the command line
COMMAND_LINE = [
    Case("unknown flag", lambda f, o: gen(f, "--seed", "a", "--bogus"), 2, "No such option '--bogus'"),
    Case("unknown command", lambda f, o: ["frobnicate"], 2, "No such command 'frobnicate'"),
    Case("missing --seed", lambda f, o: ["generate", "--model", str(f.model)], 2,
         "Missing option '--seed' (or '--seed-file')"),
    Case("non-integer --length", lambda f, o: gen(f, "--seed", "a", "--length", "ten"), 2,
         "'ten' is not a valid integer"),
    Case("--resume with --init-from", lambda f, o: [*train_args(f, o), "--resume", "--init-from", str(f.model)], 2,
         "pass only one"),
    Case("--resume with --overwrite", lambda f, o: [*train_args(f, o), "--resume", "--overwrite"], 2,
         "pass only one"),
    Case("--top-k with --top-p", lambda f, o: gen(f, "--seed", "a", "--top-k", "3", "--top-p", "0.5"), 2,
         "either --top-k or --top-p"),
    Case("--interactive with --json", lambda f, o: gen(f, "--seed", "a", "--interactive", "--json"), 2,
         "does not combine with --json"),
    Case("--beam-width with --num-samples", lambda f, o: gen(f, "--seed", "a", "--beam-width", "2",
                                                             "--num-samples", "2"), 2, "drop --num-samples"),
    Case("greedy with --top-k", lambda f, o: gen(f, "--seed", "a", "--temperature", "0", "--top-k", "3"), 2,
         "temperature 0 is greedy"),
    Case("--set without =", lambda f, o: [*train_args(f, o), "--set", "training.epochs"], 2,
         "must look like KEY=VALUE"),
    Case("--set without key", lambda f, o: [*train_args(f, o), "--set", "=3"], 2, "must look like KEY=VALUE"),
    Case("--set value not YAML", lambda f, o: [*train_args(f, o), "--set", "training.epochs=[1"], 2,
         "is not valid YAML"),
    Case("--set into a value", lambda f, o: [*train_args(f, o), "--set", "training.epochs.x=1"], 2,
         "epochs is a value, not a section"),
    Case("--set unknown key", lambda f, o: [*train_args(f, o), "--set", "model.unit=3"], 2,
         "unknown config key model.unit; did you mean model.units?"),
    Case("--set wrong type", lambda f, o: [*train_args(f, o), "--set", "training.epochs=two"], 2,
         "training.epochs must be an integer"),
    Case("--set out of range", lambda f, o: [*train_args(f, o), "--set", "training.learning_rate=-1"], 2,
         "training.learning_rate must be positive"),
    Case("--set misspelt choice", lambda f, o: [*train_args(f, o), "--set", "model.cell=lstn"], 2,
         "did you mean lstm?"),
    Case("--seed and --seed-file", lambda f, o: gen(f, "--seed", "a", "--seed-file", str(f.text)), 2,
         "--seed and --seed-file both give the seed; pass only one"),
    Case("--seed-file - with --interactive", lambda f, o: gen(f, "--seed-file", "-", "--interactive"), 2,
         "--seed-file - reads stdin, where --interactive reads your choices"),
    Case("--output - with --json", lambda f, o: gen(f, "--seed", "a", "--json", "--output", "-"), 2,
         "--output - is stdout, where --json already writes"),
    Case("--output /dev/stdout with --interactive", lambda f, o: gen(f, "--seed", "a", "--interactive", "--output",
                                                                     "/dev/stdout"), 2,
         "is stdout, where --interactive already writes"),
    Case("--output names a closed descriptor", lambda f, o: gen(f, "--seed", "a", "--output", "/dev/fd/97"), 2,
         "--output /dev/fd/97 names descriptor 97, which is not open"),
    Case("--output /proc/self/fd of a closed descriptor", lambda f, o: gen(f, "--seed", "a", "--output",
                                                                           "/proc/self/fd/98"), 2,
         "names descriptor 98, which is not open"),
    Case("info on a missing model", lambda f, o: ["info", str(f.root / "none.keras")], 2,
         "does not exist; check the path, or train one"),
    Case("evaluate with a missing model", lambda f, o: ["evaluate", "--model", str(f.root / "none.keras"),
                                                        "--text", str(f.text)], 2, "does not exist; check the path"),
    Case("--init-from a missing model", lambda f, o: [*train_args(f, o), "--init-from", str(f.root / "none.keras")],
         2, "does not exist; check the path"),
    Case("model is a FIFO", lambda f, o: ["info", str(f.fifo)], 2, "is not a regular file (a pipe or a device)"),
    Case("model is /dev/zero", lambda f, o: ["generate", "--model", "/dev/zero", "--seed", "a"], 2,
         "is not a regular file"),
    Case("plot a missing directory", lambda f, o: ["plot", str(f.root / "no-run")], 2,
         "no-run does not exist; give the run directory of a `textgen train` run"),
]

# ---- config files
CONFIG_FILES = [
    Case("config file missing", lambda f, o: [*train_args(f, o), "--config", str(f.root / "none.yaml")], 2,
         "does not exist"),
    Case("config path is a directory", lambda f, o: [*train_args(f, o), "--config", str(f.root)], 2,
         "is a directory"),
    Case("YAML list", lambda f, o: config_args(f.yaml_list, o), 2,
         "must be a mapping of sections"),
    Case("YAML scalar", lambda f, o: config_args(f.yaml_scalar, o), 2,
         "must be a mapping of sections"),
    Case("YAML python tag", lambda f, o: config_args(f.yaml_python, o), 2,
         "is not valid YAML"),
    Case("YAML syntax error", lambda f, o: config_args(f.yaml_broken, o), 2,
         "is not valid YAML at line"),
    Case("YAML not UTF-8", lambda f, o: config_args(f.yaml_latin1, o), 2, "is not UTF-8"),
    Case("YAML section not a mapping", lambda f, o: config_args(f.yaml_section, o), 2,
         "model must be a mapping"),
    Case("YAML unknown section", lambda f, o: config_args(f.yaml_unknown, o), 2,
         "did you mean model?"),
    Case("YAML key twice", lambda f, o: config_args(f.yaml_twice, o), 2,
         "key 'units' appears twice (lines 2 and 3); keep one"),
    Case("config over the size cap", lambda f, o: config_args(f.yaml_big, o), 2,
         "more than a config's 1,048,576; give the YAML config file"),
    Case("model.units past int64", lambda f, o: config_args(f.yaml_units, o), 2,
         "model.units must be at most 1,048,576, got 100000000000000000000000"),
    Case("model.embedding_dim past int64", lambda f, o: config_args(f.yaml_embedding, o), 2,
         "model.embedding_dim must be at most 1,048,576, got 100000000000000000000000"),
    Case("training.seq_length past int64", lambda f, o: config_args(f.yaml_seq, o), 2,
         "training.seq_length must be at most 1,048,576"),
    Case("training.batch_size past int64", lambda f, o: config_args(f.yaml_batch, o), 2,
         "training.batch_size must be at most 1,048,576"),
    Case("word pattern with a capture group", lambda f, o: config_args(f.yaml_groups, o), 2,
         "tokenizer.pattern has 1 capture group"),
    Case("empty corpus path in a config file", lambda f, o: config_args(f.yaml_empty_path, o), 2,
         "corpus.paths holds an empty path, which would read the whole working directory"),
    Case("config-relative corpus path missing", lambda f, o: config_args(f.yaml_relative, o), 2,
         "corpus path corpora/nowhere.txt (relative to the config file's folder"),
]

# ---- corpora
CORPORA = [
    Case("corpus missing", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.root}/nope.txt']"}), 2,
         "does not exist"),
    Case("0-byte corpus", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.empty_corpus}']"}), 1,
         "the corpus is empty"),
    Case("whitespace-only corpus", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.blank_corpus}']"}), 1,
         "the corpus is empty"),
    Case("NUL bytes in corpus", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.nul_corpus}']"}), 1,
         "looks binary (NUL byte at offset 9)"),
    Case("invalid UTF-8 in corpus", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.bad_utf8}']"}), 1,
         "is not valid utf-8 at byte offset 900"),
    Case("corpus cut mid-character", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.truncated_utf8}']"}),
         1, "is not valid utf-8 at byte offset 26"),
    Case("directory of binaries", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.binaries}']"}), 1,
         "holds no text files"),
    Case("binary file named directly",
         lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.binaries}/blob0.bin']"}), 1, "looks binary"),
    Case("empty corpus directory", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.empty_dir}']"}), 1,
         "holds no text files"),
    Case("glob matching nothing", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.root}/*.nothing']"}), 1,
         "matches no files"),
    Case("unknown encoding", lambda f, o: train_args(f, o, **{"corpus.encoding": "klingon"}), 2,
         "corpus.encoding must name a text encoding Python knows, such as utf-8 or latin-1, got 'klingon'"),
    Case("a codec that is no text encoding", lambda f, o: train_args(f, o, **{"corpus.encoding": "rot13"}), 2,
         "corpus.encoding must name a text encoding Python knows"),
    Case("UTF-16 without a byte-order mark", lambda f, o: train_args(f, o, **{"corpus.encoding": "utf-16"}), 1,
         "UTF-16 stream does not start with BOM; name the byte order (utf-16-le, utf-16-be: corpus.encoding"),
    Case("corpus shorter than a window", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.short_corpus}']"}),
         1, "fewer than seq_length + 1"),
    Case("empty corpus path", lambda f, o: train_args(f, o, **{"corpus.paths": "['']"}), 2,
         "corpus.paths holds an empty path"),
    Case("relative corpus path missing", lambda f, o: train_args(f, o, **{"corpus.paths": "[no/such/book.txt]"}), 2,
         "corpus path no/such/book.txt (relative to the working directory"),
    Case("glob matching only directories",
         lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.only_dirs}/*']"}), 1, "matches only directories"),
    Case("encoding utf_16_le read as utf-16-le",
         lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.utf16le_short}']", "corpus.encoding": "utf_16_le"}),
         1, "fewer than seq_length + 1"),
    Case("encoding U16 read as utf-16",
         lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.utf16_short}']", "corpus.encoding": "U16"}),
         1, "fewer than seq_length + 1"),
    Case("UTF-16 file read as UTF-8", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.utf16_bom}']"}), 1,
         "starts with a UTF-16 byte-order mark but is read as utf-8; set corpus.encoding: utf-16"),
    Case("UTF-32 file read as UTF-8", lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.utf32_bom}']"}), 1,
         "starts with a UTF-32 byte-order mark but is read as utf-8; set corpus.encoding: utf-32"),
    Case("UTF-16 file read as latin-1",
         lambda f, o: train_args(f, o, **{"corpus.paths": f"['{f.utf16_bom}']", "corpus.encoding": "latin_1"}), 1,
         "starts with a UTF-16 byte-order mark but is read as latin_1; set corpus.encoding: utf-16"),
]

# ---- run directories
RUN_DIRECTORIES = [
    Case("output under a regular file", lambda f, o: train_args(f, f.blocker / "run"), 1, "cannot be written"),
    Case("output under /proc", lambda f, o: train_args(f, Path("/proc/textgen-run")), 1, "cannot be written"),
    Case("read-only output directory", lambda f, o: train_args(f, f.readonly / "run"), 1, "cannot be written",
         marks=(pytest.mark.skipif(AS_ROOT, reason="root writes through chmod 0o500; the /proc and "
                                                    "regular-file cases cover unwritable paths"),)),
    Case("run directory already has a model", lambda f, o: train_args(f, f.model.parent), 2, "--overwrite"),
    Case("--resume without a checkpoint", lambda f, o: [*train_args(f, o), "--resume"], 2,
         "holds no training state to resume"),
    Case("--init-from a broken model", lambda f, o: [*train_args(f, o), "--init-from", str(f.not_zip)], 1,
         "is not a valid .keras archive"),
    Case("output is a user's folder", lambda f, o: train_args(f, f.user_folder), 2,
         "is not empty and is not a textgen run directory (it holds notes.txt)"),
    Case("output is a user's folder, with --overwrite", lambda f, o: [*train_args(f, f.user_folder), "--overwrite"], 2,
         "is not a textgen run directory"),
    Case("prepare into a user's folder", lambda f, o: ["prepare", *train_args(f, f.user_folder)[1:]], 2,
         "is not a textgen run directory"),
    Case("output is a regular file", lambda f, o: train_args(f, f.blocker), 1, "cannot be written (it is a file)"),
    Case("output inside the corpus folder", lambda f, o: train_args(f, f.corpus_folder / "run", **{
        "corpus.paths": f"['{f.corpus_folder}']"}), 2, "is inside the corpus folder"),
    Case("output inside a recursive corpus glob", lambda f, o: train_args(f, f.corpus_folder / "runs" / "a", **{
        "corpus.paths": f"['{f.corpus_folder}/**/*.txt']"}), 2, "is inside the corpus folder"),
    Case("prepare inside the corpus folder", lambda f, o: ["prepare", *train_args(f, f.corpus_folder / "run", **{
        "corpus.paths": f"['{f.corpus_folder}']"})[1:]], 2, "is inside the corpus folder"),
    Case("run directory in use", lambda f, o: [*train_args(f, f.live_run), "--overwrite"], 2,
         "is in use by another textgen process (pid"),
    Case("--resume of a run directory in use", lambda f, o: [*train_args(f, f.live_run), "--resume"], 2,
         "textgen train --config live.yaml"),
    Case("prepare in a run directory in use", lambda f, o: ["prepare", *train_args(f, f.live_run)[1:]], 2,
         "is in use by another textgen process"),
]

# ---- seeds and sampler settings
SEEDS_AND_SAMPLERS = [
    Case("empty seed", lambda f, o: gen(f, "--seed", ""), 2, "the seed is empty"),
    Case("seed outside the vocabulary", lambda f, o: gen(f, "--seed", "a\u00a7"), 2,
         "'\u00a7' is not in the model's vocabulary"),
    Case("negative temperature", lambda f, o: gen(f, "--seed", "a", "--temperature", "-1"), 2,
         "'--temperature': -1.0 is not in the range x>=0"),
    Case("top-p above 1", lambda f, o: gen(f, "--seed", "a", "--top-p", "1.5"), 2,
         "'--top-p': 1.5 is not in the range 0<x<=1"),
    Case("top-k 0", lambda f, o: gen(f, "--seed", "a", "--top-k", "0"), 2, "'--top-k': 0 is not in the range x>=1"),
    Case("negative length", lambda f, o: gen(f, "--seed", "a", "--length", "-2"), 2,
         "'--length': -2 is not in the range x>=0"),
    Case("num-samples 0", lambda f, o: gen(f, "--seed", "a", "--num-samples", "0"), 2,
         "'--num-samples': 0 is not in the range x>=1"),
    Case("repetition penalty below 1", lambda f, o: gen(f, "--seed", "a", "--repetition-penalty", "0.5"), 2,
         "'--repetition-penalty': 0.5 is not in the range x>=1"),
    Case("empty stop string", lambda f, o: gen(f, "--seed", "a", "--stop", ""), 2, "a stop string cannot be empty"),
    Case("negative random seed", lambda f, o: gen(f, "--seed", "a", "--random-seed", "-1"), 2,
         "'--random-seed': -1 is not in the range x>=0"),
    Case("min-length above length", lambda f, o: gen(f, "--seed", "a", "--length", "5", "--min-length", "9"), 2,
         "min-length (9) cannot exceed length (5)"),
    Case("beam wider than the vocabulary", lambda f, o: gen(f, "--seed", "a", "--beam-width", "1000"), 2,
         "exceeds the vocabulary size"),
    Case("--output in a missing directory", lambda f, o: gen(f, "--seed", "a", "--output", str(o / "no" / "x.txt")),
         1, "does not exist"),
    Case("--output under a regular file", lambda f, o: gen(f, "--seed", "a", "--output", str(f.blocker / "x.txt")),
         1, "does not exist"),
    Case("--output under /proc", lambda f, o: gen(f, "--seed", "a", "--length", "5", "--output",
                                                  "/proc/textgen-samples.txt"), 1, "cannot be written"),
    Case("--output is a directory", lambda f, o: gen(f, "--seed", "a", "--output", str(f.root)), 2,
         "is a directory"),
    Case("seed not UTF-8 (argv byte 0xff)", lambda f, o: gen(f, "--seed", "ROMEO\udcff"), 2,
         "the seed is not UTF-8 (byte 0xff at character 5)"),
    Case("seed with a lone surrogate", lambda f, o: gen(f, "--seed", "a\ud800b"), 2, "the seed is not UTF-8"),
    Case("--stop not UTF-8", lambda f, o: gen(f, "--seed", "a", "--stop", "\udcfe"), 2,
         "a stop string is not UTF-8 (byte 0xfe"),
    Case("--json with a seed that is not UTF-8", lambda f, o: gen(f, "--seed", "\udce9t\udce9", "--json"), 2,
         "the seed is not UTF-8"),
    Case("--seed-file missing", lambda f, o: gen(f, "--seed-file", str(f.root / "none.txt")), 2,
         "none.txt does not exist; check the path"),
    Case("--seed-file is a directory", lambda f, o: gen(f, "--seed-file", str(f.seed_dir)), 2,
         "is a directory; give a UTF-8 text file"),
    Case("--seed-file not UTF-8", lambda f, o: gen(f, "--seed-file", str(f.seed_latin1)), 2,
         "is not UTF-8 (byte 0xe9 at offset 3); save the seed as UTF-8"),
    Case("--seed-file past 1 MiB", lambda f, o: gen(f, "--seed-file", str(f.seed_big)), 2,
         "holds more than 1 MiB; a seed is the start of a text"),
    Case("--seed-file empty", lambda f, o: gen(f, "--seed-file", str(f.seed_empty)), 2, "the seed is empty"),
    Case("--seed-file outside the vocabulary", lambda f, o: gen(f, "--seed-file", str(f.seed_unknown)), 2,
         "'\u00a7' is not in the model's vocabulary"),
    Case("--seed-file is a FIFO", lambda f, o: gen(f, "--seed-file", str(f.fifo)), 2,
         "is not a regular file (a pipe or a device); give a file, or --seed-file - to read stdin"),
    Case("--seed-file is /dev/zero", lambda f, o: gen(f, "--seed-file", "/dev/zero"), 2, "is not a regular file"),
    Case("--seed-file - past 1 MiB on stdin", lambda f, o: gen(f, "--seed-file", "-"), 2,
         "stdin holds more than 1 MiB", input=lambda f: b"a" * ((1 << 20) + 5)),
    Case("--seed-file - not UTF-8 on stdin", lambda f, o: gen(f, "--seed-file", "-"), 2,
         "stdin is not UTF-8 (byte 0xff at offset 2)", input=lambda f: b"ab\xff"),
    Case("--output is the model", lambda f, o: gen(f, "--seed", "a", "--output", str(f.model)), 2,
         "is the model being read"),
    Case("--output is a FIFO nobody reads", lambda f, o: gen(f, "--seed", "a", "--length", "5", "--output",
                                                             str(f.fifo)), 1, "is a pipe that no process reads"),
]

# ---- model files
MODEL_FILES = [
    Case("model missing", lambda f, o: ["generate", "--model", str(f.root / "none.keras"), "--seed", "a"], 2,
         "does not exist"),
    Case("model path is a directory", lambda f, o: ["info", str(f.model_dir)], 2, "is a directory"),
    Case("model with another suffix", lambda f, o: ["info", str(f.wrong_suffix)], 1, "is not a .keras file"),
    Case("model not a zip", lambda f, o: ["generate", "--model", str(f.not_zip), "--seed", "a"], 1,
         "is not a valid .keras archive"),
    Case("0-byte model", lambda f, o: ["info", str(f.empty_model)], 1, "is not a valid .keras archive"),
    Case("truncated model (5 KB)", lambda f, o: ["info", str(f.truncated)], 1, "is not a valid .keras archive"),
    Case("truncated model (half)", lambda f, o: ["generate", "--model", str(f.half), "--seed", "a"], 1,
         "is not a valid .keras archive"),
    Case("plain Keras model", lambda f, o: ["info", str(f.plain)], 1, "not a textgen model"),
    Case("newer format version", lambda f, o: ["generate", "--model", str(f.newer), "--seed", "a"], 1,
         "uses textgen format 99, newer than this textgen understands (1); upgrade"),
    Case("unregistered class in the model", lambda f, o: ["info", str(f.unknown_class)], 1, "EvilLayer"),
    Case("config.json not JSON", lambda f, o: ["info", str(f.garbage_config)], 1, "cannot be loaded"),
    Case("zip without a model", lambda f, o: ["info", str(f.foreign_zip)], 1, "cannot be loaded"),
    Case("format_version a string", lambda f, o: ["generate", "--model", str(f.version_text), "--seed", "a"], 1,
         "format_version is 'abc', not a whole number"),
    Case("format_version null", lambda f, o: ["info", str(f.version_null)], 1,
         "format_version is None, not a whole number"),
    Case("format_version 0", lambda f, o: ["evaluate", "--model", str(f.version_zero), "--text", str(f.text)], 1,
         "format_version is 0, not a whole number of 1 or more"),
    Case("tokenizer a list", lambda f, o: ["generate", "--model", str(f.tokenizer_list), "--seed", "a"], 1,
         "its tokenizer cannot be used (the tokenizer config must be a mapping, got list)"),
    Case("tokenizer of an unknown level", lambda f, o: ["info", str(f.tokenizer_level)], 1,
         "unknown tokenizer level 'byte'"),
    Case("vocabulary of numbers", lambda f, o: ["generate", "--model", str(f.vocabulary_numbers), "--seed", "a"], 1,
         "vocabulary must be a non-empty list of non-empty strings"),
    Case("character vocabulary out of order", lambda f, o: ["info", str(f.vocabulary_unsorted)], 1,
         "must be sorted by code point"),
    Case("vocabulary shorter than the network", lambda f, o: ["generate", "--model", str(f.vocabulary_short),
                                                              "--seed", "a", "--length", "50"], 1,
         "its vocabulary has 53 tokens but the network reads 58 and predicts 58"),
    Case("vocabulary longer than the network", lambda f, o: ["evaluate", "--model", str(f.vocabulary_long),
                                                             "--text", str(f.text)], 1,
         "its vocabulary has 60 tokens but the network reads 58"),
    Case("word pattern with capture groups", lambda f, o: ["generate", "--model", str(f.word_groups),
                                                           "--seed", "w1"], 1, "pattern has 2 capture groups"),
    Case("word tokenizer option of the wrong type", lambda f, o: ["info", str(f.word_lowercase_text)], 1,
         "the tokenizer's lowercase has the wrong type ('yes')"),
    Case("word tokenizer with an unknown option", lambda f, o: ["info", str(f.word_extra_key)], 1,
         "has unknown keys evil"),
    Case("model card loss a string", lambda f, o: ["info", str(f.card_loss_text)], 1,
         "history.final_loss is 'low', not a number"),
    Case("model card history a list", lambda f, o: ["info", str(f.card_history_list)], 1,
         "history is [1, 2], not a mapping"),
    Case("model card coverage a string", lambda f, o: ["info", str(f.card_coverage_text)], 1,
         "coverage is 'all', not a number"),
    Case("model card seq_length a string", lambda f, o: ["evaluate", "--model", str(f.card_seq_length_text),
                                                         "--text", str(f.text)], 1,
         "config.training.seq_length is 'long', not a whole number"),
    Case("model card init_from a string", lambda f, o: ["info", str(f.card_init_from_text)], 1,
         "init_from is 'elsewhere', not a mapping"),
    Case("model card config section a list", lambda f, o: ["evaluate", "--model", str(f.card_training_list),
                                                           "--text", str(f.text)], 1,
         "config.training is ['x'], not a mapping"),
    Case("--init-from a model whose vocabulary is shorter", lambda f, o: [*train_args(f, o), "--init-from",
                                                                          str(f.vocabulary_short)], 1,
         "its vocabulary has 53 tokens but the network reads 58"),
    Case("--init-from a model whose card has a string loss", lambda f, o: [*train_args(f, o), "--init-from",
                                                                           str(f.card_loss_text)], 1,
         "history.final_loss is 'low', not a number"),
]

# ---- evaluate and plot
EVALUATE_AND_PLOT = [
    Case("evaluate a missing text", lambda f, o: ["evaluate", "--model", str(f.model), "--text",
                                                  str(f.root / "none.txt")], 2, "does not exist; check the path"),
    Case("evaluate a binary text", lambda f, o: ["evaluate", "--model", str(f.model), "--text",
                                                 str(f.nul_corpus)], 1, "looks binary"),
    Case("evaluate invalid UTF-8", lambda f, o: ["evaluate", "--model", str(f.model), "--text",
                                                 str(f.bad_utf8)], 1, "is not valid utf-8"),
    Case("evaluate an empty text", lambda f, o: ["evaluate", "--model", str(f.model), "--text",
                                                 str(f.empty_corpus)], 1,
         "has fewer than two tokens the model can read; give a longer text"),
    Case("evaluate with an unknown encoding", lambda f, o: ["evaluate", "--model", str(f.model), "--text",
                                                            str(f.corpus), "--encoding", "klingon"], 2,
         "'--encoding': must name a text encoding Python knows, such as utf-8 or latin-1, got 'klingon'"),
    Case("plot a directory without history", lambda f, o: ["plot", str(f.empty_dir)], 2, "has no history.csv"),
    Case("evaluate with encoding utf_16_le", lambda f, o: ["evaluate", "--model", str(f.model), "--text",
                                                           str(f.utf16le_unknown), "--encoding", "utf_16_le"], 2,
         "characters the model's vocabulary lacks (2 distinct"),
    Case("evaluate a UTF-16 text as UTF-8", lambda f, o: ["evaluate", "--model", str(f.model), "--text",
                                                          str(f.utf16_bom)], 1,
         "starts with a UTF-16 byte-order mark but is read as utf-8; set corpus.encoding: utf-16 (--encoding utf-16"),
]

CASES = [*COMMAND_LINE, *CONFIG_FILES, *CORPORA, *RUN_DIRECTORIES, *SEEDS_AND_SAMPLERS, *MODEL_FILES,
         *EVALUATE_AND_PLOT]


def leftovers(directory: Path) -> list[str]:
    """Temporary or half-written files anywhere under `directory`."""
    if not directory.exists():
        return []
    return [str(p) for p in directory.rglob("*") if ".tmp" in p.name or p.name.startswith(".write-test")]


def check_answer(result, code: int, message: str) -> None:
    """Exit code, one error line naming the problem, and no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # handled, not crashed
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0], errors[0]
    # besides it, stderr holds only click's usage hint (exit code 2) or progress lines
    assert not any(line.lstrip().startswith('File "') for line in result.stderr.splitlines())
    assert not any("Error" in line or "Exception" in line for line in result.stderr.splitlines()
                   if not line.startswith("Error: "))


def snapshot(*roots: Path) -> dict[Path, bytes | None]:
    """Every path under `roots` with its bytes (None for a directory): what a case must leave as it was.

    A run directory's lock file is left out: textgen notes in it which process last took the
    run directory, which a refused command may have done before it found the mistake."""
    return {p: (p.read_bytes() if p.is_file() else None) for root in roots for p in sorted(root.rglob("*"))
            if (not p.is_symlink() or p.exists()) and p.name != LOCK_FILE}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
def test_bad_input_is_answered(case, files, tmp_path):
    out = tmp_path / "out"
    before = snapshot(files.root, files.model.parent)
    result = CliRunner().invoke(cli, [str(a) for a in case.args(files, out)],
                                input=case.input(files) if case.input else None)
    check_answer(result, case.code, case.message)
    # nothing left behind: no run directory content, no temporary files, and every input file
    # (the broken files and the trained run) byte for byte as it was, with nothing added
    assert not (out / "model.keras").exists()
    assert leftovers(tmp_path) == [] and leftovers(files.root) == []
    assert snapshot(files.root, files.model.parent) == before
    assert not files.marker.exists()  # the !!python tag never ran


def test_the_docs_count_the_matrix_as_it_is():
    from test_bad_input_process import PROCESS_CASES

    usage = sum(c.code == 2 for c in CASES)
    total = len(CASES) + len(PROCESS_CASES)
    root = Path(__file__).resolve().parents[1]
    reliability = (root / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert (f"The bad-input matrix has {total} cases: {len(CASES)} run in-process ({usage} usage errors, "
            f"{len(CASES) - usage} runtime errors) and {len(PROCESS_CASES)} in real processes") in \
        " ".join(reliability.split())
    assert f"A bad-input matrix of {total} cases" in reliability
    assert {c.code for c in CASES} == {1, 2}


# --------------------------------------------------------------------------- more than one row


def test_a_failed_generation_leaves_no_output_file(files, tmp_path):
    """An --output file is written only after a successful generation, and only whole."""
    target = tmp_path / "samples.txt"
    for args in (["--seed", ""], ["--seed", "a", "--top-p", "2"], ["--seed", "a\u00a7"]):
        result = CliRunner().invoke(cli, gen(files, *args, "--output", str(target)))
        assert result.exit_code == 2 and not target.exists()
    target.write_text("the previous samples\n")
    result = CliRunner().invoke(cli, gen(files, "--seed", "", "--output", str(target)))
    assert result.exit_code == 2 and target.read_text() == "the previous samples\n"  # untouched
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("corpus, message", [("nul_corpus", "looks binary"), ("short_corpus", "seq_length")],
                         ids=["unreadable corpus", "corpus too short for a window"])
def test_a_failed_run_into_an_existing_run_directory_keeps_its_model(files, tmp_path, corpus, message):
    run_dir = tmp_path / "run"
    shutil.copytree(files.model.parent, run_dir)
    before = {p.relative_to(run_dir) for p in run_dir.rglob("*") if "cache" not in p.parts}
    model = (run_dir / "model.keras").read_bytes()
    args = train_args(files, run_dir, **{"corpus.paths": f"['{getattr(files, corpus)}']"})
    result = CliRunner().invoke(cli, [*args, "--overwrite"])
    check_answer(result, 1, message)
    assert (run_dir / "model.keras").read_bytes() == model
    assert before <= {p.relative_to(run_dir) for p in run_dir.rglob("*")}  # history, checkpoint, logs kept
    assert leftovers(run_dir) == []


def test_a_new_run_does_not_replace_files_it_did_not_write(files, tmp_path):
    """A folder holding the user's own config.yaml (say, `output.dir: .` beside it) is not a run to replace,
    with --overwrite or without."""
    own = tmp_path / "mine"
    own.mkdir()
    (own / "config.yaml").write_text("# my notes\nmodel:\n  units: 8\n")
    for flags in ((), ("--overwrite",)):
        result = CliRunner().invoke(cli, [*train_args(files, own), "--config", str(own / "config.yaml"), *flags])
        check_answer(result, 2, "is not empty and is not a textgen run directory (it holds config.yaml)")
        assert (own / "config.yaml").read_text() == "# my notes\nmodel:\n  units: 8\n"
        assert {p.name for p in own.iterdir()} == {"config.yaml"}


def test_a_network_too_big_for_memory_is_one_line_and_keeps_the_old_model(files, tmp_path, monkeypatch):
    """TensorFlow's out-of-memory error while the new model is built: the old run is still whole."""
    import tensorflow as tf

    from textgen.training import train as train_module

    def too_big(*args, **kwargs):  # what model.units=100000 gets from TensorFlow, without the wait
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[300000,100000]")

    run_dir = tmp_path / "run"
    shutil.copytree(files.model.parent, run_dir)
    before = {p.relative_to(run_dir) for p in run_dir.rglob("*") if "cache" not in p.parts}
    model, config = (run_dir / "model.keras").read_bytes(), (run_dir / "config.yaml").read_bytes()
    monkeypatch.setattr(train_module, "build_model", too_big)
    result = CliRunner().invoke(cli, [*train_args(files, run_dir, **{"model.units": 100000}), "--overwrite"])
    check_answer(result, 1, "out of memory; use a smaller network (model.units")
    assert (run_dir / "model.keras").read_bytes() == model and (run_dir / "config.yaml").read_bytes() == config
    assert before <= {p.relative_to(run_dir) for p in run_dir.rglob("*")} and leftovers(run_dir) == []


@pytest.mark.parametrize("args", [
    lambda f: ["info", str(f.not_zip)],
    lambda f: ["generate", "--model", str(f.newer), "--seed", "a"],
    lambda f: ["train", "--config", str(f.yaml_list)],
    lambda f: ["generate", "--model", str(f.model), "--seed", ""],
], ids=["broken model", "newer model", "YAML list", "empty seed"])
def test_debug_raises_the_library_error_instead(files, args):
    for argv in (["--debug", *args(files)], [*args(files), "--debug"]):  # before the command or after it
        result = CliRunner().invoke(cli, argv)
        assert isinstance(result.exception, TextgenError), (argv, repr(result.exception))
        assert result.exc_info is not None and result.exc_info[2] is not None  # a traceback to show


def test_real_process_prints_one_line_and_debug_prints_the_traceback(files):
    base = [sys.executable, "-m", "textgen"]
    args = ["generate", "--model", str(files.newer), "--seed", "a"]
    plain = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr.strip().splitlines() == [plain.stderr.strip()]
    assert plain.stderr.startswith("Error: model file") and "upgrade" in plain.stderr
    debug = subprocess.run([*base, "--debug", *args], capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "ModelFileError" in debug.stderr
