"""Importing textgen is quick and changes nothing global; its Keras objects load in every import order."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import textgen
from textgen.config import ModelConfig
from textgen.model_file import TEXTGEN_OBJECTS
from textgen.models.builder import build_model
from textgen.saving import save_model_atomic

PRETRAINED = Path(__file__).resolve().parent.parent / "textgen" / "pretrained" / "shakespeare-char.keras"

PROBE = r"""
import json, logging, os, sys, warnings
def state():
    st = os.fstat(2)
    return {"env": sorted(k for k in os.environ if k.startswith(("TF_", "TEXTGEN"))),
            "stderr": [st.st_dev, st.st_ino], "stderr_object": id(sys.stderr),
            "loggers": {n: logging.getLogger(n).level for n in ("tensorflow", "absl", "keras")},
            "filters": len(warnings.filters)}
if sys.argv[2] == "tensorflow first":
    import keras, tensorflow  # they set warning filters and loggers of their own
before = state()
import textgen
if sys.argv[2] == "textgen first":
    textgen.load_keras_objects()  # the one line that registers textgen's objects in any order
import keras
model = keras.models.load_model(sys.argv[1])  # registered by the import
after = state()
print(json.dumps({"before": before, "after": after, "name": model.name}))
"""


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "TEXTGEN"))}


def python(code, *args, cwd):
    """Run `code` in a fresh interpreter; its last line of output, parsed as JSON."""
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                            env=clean_env(), timeout=300, cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny textgen model with a textgen cell (MGUCell) as well as the TokenEmbedding to register."""
    path = tmp_path_factory.mktemp("tiny") / "model.keras"
    tokenizer = {"level": "char", "vocabulary": list(" abcdefghijklmnopqrstuvwxyz")}
    save_model_atomic(build_model(ModelConfig(cell="mgu", units=8, embedding_dim=4), tokenizer), path)
    return path


@pytest.mark.parametrize("order", ["textgen first", "tensorflow first"])
def test_import_textgen_leaves_environment_stderr_loggers_and_warnings_alone(tmp_path, order):
    """Imported first, textgen imports TensorFlow when asked: environment and stderr must stay as they were.
    After TensorFlow, whatever differs (loggers, warning filters) is textgen's doing."""
    facts = python(PROBE, PRETRAINED, order, cwd=tmp_path)
    if order == "textgen first":
        for fact in ("loggers", "filters"):  # TensorFlow's own import sets these
            del facts["after"][fact], facts["before"][fact]
    assert facts["after"] == facts["before"]
    assert not any(name.startswith(("TF_CPP", "TEXTGEN")) for name in facts["after"]["env"])
    assert facts["name"].startswith("textgen")


def test_import_textgen_and_its_light_modules_leave_tensorflow_unimported(tmp_path):
    """The configuration, tokenizers, command line and a model file's facts need no TensorFlow."""
    facts = python(
        "import json, sys\n"
        "import textgen\n"
        "first = sorted({'tensorflow', 'keras'} & set(sys.modules))\n"
        "import textgen.config, textgen.data.tokenizer, textgen.cli.main, textgen.saving, textgen.pretrained\n"
        "from textgen.models.info import file_facts\n"
        "facts = file_facts(sys.argv[1])\n"
        "cell = textgen.load_config('quick').model.cell\n"
        "print(json.dumps({'cell': cell, 'first': first, 'later': sorted({'tensorflow', 'keras'} & set(sys.modules)),\n"
        "                  'units': facts['units'], 'public': [n for n in textgen.__all__ if n in dir(textgen)]}))",
        PRETRAINED, cwd=tmp_path)
    assert facts["first"] == [] and facts["later"] == []
    assert facts["units"] == [512] and facts["cell"] == "gru"  # textgen.load_config read the quick preset
    assert sorted(facts["public"]) == sorted(textgen.__all__)  # the lazy names are listed all the same


def test_keras_imported_first_loads_a_textgen_model_with_plain_keras(tmp_path, tiny_model):
    """`import keras; import textgen` registers at once: the plain-Keras path needs no other line."""
    facts = python("import json, sys\nimport keras\nimport textgen\n"
                   "model = keras.models.load_model(sys.argv[1])\n"
                   "print(json.dumps({'name': model.name, 'cells': [type(l.cell).__name__ for l in model.layers\n"
                   "                                                if hasattr(l, 'cell')]}))",
                   tiny_model, cwd=tmp_path)
    assert facts == {"name": "textgen_mgu", "cells": ["MGUCell"]}


def test_textgen_load_works_after_a_plain_import(tmp_path, tiny_model):
    """The public names import TensorFlow and register textgen's objects on first use."""
    facts = python("import json, sys\nimport textgen\n"
                   "before = 'tensorflow' in sys.modules\n"
                   "generator = textgen.load(sys.argv[1])\n"
                   "text, = generator.generate('ab', length=12, random_seed=1)\n"
                   "print(json.dumps({'before': before, 'text': text, 'class': type(generator).__name__}))",
                   tiny_model, cwd=tmp_path)
    assert facts["before"] is False and facts["class"] == "Generator"
    assert isinstance(facts["text"], str) and len(facts["text"]) == 12
    assert set(facts["text"]) <= set("abcdefghijklmnopqrstuvwxyz ")


def test_an_unknown_public_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Generatr'"):
        textgen.Generatr  # noqa: B018


def test_the_info_reader_knows_every_keras_object_textgen_registers():
    """textgen.model_file vouches for files naming these classes; a new registered class must be listed."""
    root = Path(textgen.__file__).parent
    for source in root.rglob("*.py"):
        if "register_keras_serializable" in source.read_text() and source.name != "model_file.py":
            __import__(".".join(source.relative_to(root.parent).with_suffix("").parts))
    registered = {name for name in keras.saving.get_custom_objects() if name.startswith("textgen>")}
    assert registered == set(TEXTGEN_OBJECTS)


def test_the_command_quiets_tensorflow_only_in_its_own_process(tmp_path):
    """`textgen` hides TensorFlow's start-up lines; the library shows them (its caller decides)."""
    command = subprocess.run([sys.executable, "-m", "textgen", "generate", "--model", PRETRAINED, "--seed", "A",
                              "--length", "5", "--random-seed", "1"], capture_output=True, text=True,
                             env=clean_env(), timeout=300, cwd=tmp_path)
    library = subprocess.run([sys.executable, "-c", "import textgen; textgen.load_keras_objects()"],
                             capture_output=True, text=True, env=clean_env(), timeout=300, cwd=tmp_path)
    assert command.returncode == 0 and command.stderr == "" and re.fullmatch(r"A.{5}\n", command.stdout, re.S)
    assert library.returncode == 0 and library.stderr != ""  # TensorFlow's own lines, untouched
