"""Importing textgen as a library changes nothing global in the importing process."""

import json
import os
import subprocess
import sys

import pytest

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
import keras
model = keras.models.load_model(sys.argv[1])  # registered by the import
after = state()
print(json.dumps({"before": before, "after": after, "name": model.name}))
"""


@pytest.mark.parametrize("order", ["textgen first", "tensorflow first"])
def test_import_textgen_leaves_environment_stderr_loggers_and_warnings_alone(tmp_path, order):
    """Imported first, textgen imports TensorFlow itself: environment and stderr must stay as they were.
    After TensorFlow, whatever differs (loggers, warning filters) is textgen's doing."""
    model = os.path.join(os.path.dirname(__file__), "..", "textgen", "pretrained", "shakespeare-char.keras")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "TEXTGEN"))}
    result = subprocess.run([sys.executable, "-c", PROBE, model, order], capture_output=True, text=True, env=env,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    if order == "textgen first":
        for fact in ("loggers", "filters"):  # TensorFlow's own import sets these
            del facts["after"][fact], facts["before"][fact]
    assert facts["after"] == facts["before"]
    assert not any(name.startswith(("TF_CPP", "TEXTGEN")) for name in facts["after"]["env"])
    assert facts["name"].startswith("textgen")


def test_the_command_quiets_tensorflow_only_in_its_own_process(tmp_path):
    """`textgen` hides TensorFlow's start-up lines; the library import shows them (its caller decides)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "TEXTGEN"))}
    model = os.path.join(os.path.dirname(__file__), "..", "textgen", "pretrained", "shakespeare-char.keras")
    command = subprocess.run([sys.executable, "-m", "textgen", "info", model], capture_output=True, text=True,
                             env=env, timeout=300, cwd=tmp_path)
    library = subprocess.run([sys.executable, "-c", "import textgen"], capture_output=True, text=True, env=env,
                             timeout=300, cwd=tmp_path)
    assert command.returncode == 0 and command.stderr == "" and "units" in command.stdout
    assert library.returncode == 0 and library.stderr != ""  # TensorFlow's own lines, untouched
