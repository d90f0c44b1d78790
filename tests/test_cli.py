import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import keras
import pytest
from click.testing import CliRunner

import textgen
from conftest import terminal_signals, tiny_overrides
from textgen.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_version_and_help_on_every_command():
    assert run("--version").output.startswith("textgen, version ")
    assert {"train", "prepare", "generate", "info", "evaluate", "plot", "presets", "init", "export"} <= set(cli.commands)
    for command in cli.commands:
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, command
        assert "Options:" in result.output and "--help" in result.output, command


def test_a_run_directory_stands_for_its_model(trained_model, tmp_path):
    run_dir = trained_model.parent
    assert run("info", run_dir).output == run("info", trained_model).output
    sample = ("--seed", "ab", "--length", "30", "--random-seed", "3")
    by_dir, by_file = run("generate", "--model", run_dir, *sample), run("generate", "--model", trained_model, *sample)
    assert by_dir.exit_code == 0 and by_dir.output == by_file.output and len(by_dir.output) >= 30
    empty = run("info", tmp_path)
    assert empty.exit_code == 2 and "is a directory without a model.keras" in empty.output


def textgen_process(*args, python_options=()):
    """`python -m textgen ARGS` as a terminal starts it: a suite launched from a background shell
    runs with SIGINT ignored, which a child would inherit, so Ctrl-C gets its default action back."""
    return subprocess.Popen([sys.executable, *python_options, "-m", "textgen", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=terminal_signals)


def test_help_usage_errors_and_wrong_paths_do_not_wait_for_tensorflow(tmp_path):
    """The command imports TensorFlow only once a command has parsed its arguments; train and
    prepare only once their config and corpus paths have been checked, generate once its flags
    and seed file have, evaluate once its text file has. (With --verbose, so the import is not
    hidden with the rest of TensorFlow's start-up output.)"""
    missing = f"corpus.paths=['{tmp_path / 'missing.txt'}']"
    for args, code in ((["train", "--help"], 0), (["--version"], 0), (["generate", "--temperature", "x"], 2),
                       (["train", "--config", "/dev/zero", "--output", tmp_path / "a"], 2),
                       (["train", "--config", tmp_path / "none.yaml", "--output", tmp_path / "b"], 2),
                       (["prepare", "--set", missing, "--output", tmp_path / "c"], 2),
                       (["generate", "--seed", "a", "--seed-file", tmp_path / "seed.txt"], 2),
                       (["evaluate", "--text", tmp_path / "held_out.txt"], 2)):
        process = textgen_process("--verbose", *args, python_options=("-X", "importtime"))
        out, err = process.communicate(timeout=120)
        imported = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
        assert process.returncode == code, err
        assert code == 0 or [line for line in err.splitlines() if line.startswith("Error: ")], err
        assert "click" in imported and "textgen.cli.main" in imported
        # textgen.models.layers and textgen.generation.generate are what import Keras and TensorFlow
        assert not imported & {"tensorflow", "keras", "textgen.models.layers", "textgen.generation.generate"}, imported


def test_plot_draws_history_without_importing_tensorflow(trained_model, tmp_path):
    """`textgen plot` only reads history.csv, so it answers at once."""
    (tmp_path / "history.csv").write_bytes((trained_model.parent / "history.csv").read_bytes())
    process = textgen_process("plot", tmp_path, python_options=("-X", "importtime"))
    out, err = process.communicate(timeout=120)
    imported = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    # TensorFlow's own import runs with stderr silenced; textgen.models.layers is imported right after it
    assert "textgen.training.plot" in imported and not imported & {"tensorflow", "keras", "textgen.models.layers"}, imported
    if importlib.util.find_spec("matplotlib"):
        assert process.returncode == 0 and (tmp_path / "loss.png").stat().st_size > 0, err
    else:
        assert process.returncode == 1 and "pip install 'textgen[plot]'" in err
        assert not (tmp_path / "loss.png").exists()


def loaded_tensorflow(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "libtensorflow" in maps.read()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps")
def test_ctrl_c_while_tensorflow_imports_ends_quietly_by_the_signal(trained_model):
    process = textgen_process("generate", "--model", trained_model, "--seed", "a")
    deadline = time.monotonic() + 120
    while not loaded_tensorflow(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # TensorFlow's library loads early in its import, which the command starts after parsing
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert (process.returncode, out, err) == (-signal.SIGINT, "", "")  # a shell shows 130


@pytest.mark.parametrize("where", [pytest.param("before the command", marks=pytest.mark.slow), "after it"])
def test_verbose_shows_what_tensorflow_logs_and_the_default_hides(trained_model, where):
    args = ["generate", "--model", trained_model, "--seed", "a", "--length", "20", "--random-seed", "1"]
    quiet = textgen_process(*args)
    verbose = textgen_process(*(["--verbose", *args] if where == "before the command" else [*args, "--verbose"]))
    quiet_out, quiet_err = quiet.communicate(timeout=120)
    verbose_out, verbose_err = verbose.communicate(timeout=120)
    assert quiet.returncode == verbose.returncode == 0
    assert quiet_out == verbose_out and len(quiet_out) == 1 + 20 + 1  # the seed, the text, a newline
    assert quiet_err == "" and verbose_err != ""


def test_train_via_cli_prints_config_and_saves(small_corpus, tmp_path):
    out = tmp_path / "run"
    sets = [a for o in tiny_overrides(small_corpus, out, **{"training.epochs": 1, "training.sample_every": 1,
                                                             "training.sample_length": 20}) for a in ("--set", o)]
    result = run("train", *sets)
    assert result.exit_code == 0, result.output
    assert "resolved config:" in result.output and "units: 32" in result.output
    # Keras's epoch line first, then textgen's summary, then the samples: nothing lands mid-bar.
    lines = result.output.splitlines()
    keras_line = next(i for i, line in enumerate(lines) if re.match(r"\d+/\d+ - .* - loss: ", line))
    summary = next(i for i, line in enumerate(lines) if line.startswith("epoch 1: loss "))
    sample = next(i for i, line in enumerate(lines) if line.startswith("--- sample at temperature"))
    assert keras_line < summary < sample, lines
    assert (out / "model.keras").exists()
    again = run("train", *sets)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_generate_in_a_fresh_process_needs_only_the_model_file(trained_model, tmp_path):
    copy = tmp_path / "only.keras"
    copy.write_bytes(trained_model.read_bytes())
    cmd = [sys.executable, "-m", "textgen", "generate", "--model", str(copy), "--seed", "ROMEO:",
           "--length", "50", "--temperature", "0"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("ROMEO:") and len(first.stdout) == len("ROMEO:") + 50 + 1
    assert first.stdout == second.stdout
    assert first.stderr == ""  # TensorFlow's start-up lines are kept quiet


def test_plain_load_model_after_import(trained_model):
    code = ("import keras, textgen, numpy as np; m = keras.models.load_model(%r); "  # Keras first: registered at once
            "print(m(np.zeros((1, 3), 'int32')).shape)" % str(trained_model))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    vocabulary = textgen.load(trained_model).tokenizer.vocab_size
    assert out.stdout.strip().endswith(f"(1, 3, {vocabulary})")  # logits over the saved vocabulary


def test_info_describes_the_model(trained_model):
    result = run("info", trained_model, "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["cell"] == "GRU" and facts["units"] == [32] and facts["level"] == "char"
    text = run("info", trained_model).output
    assert "\nunits: 32\n" in text and "\nlayers: 1\n" in text
    assert facts["vocabulary_size"] > 50 and facts["parameters"] > 1000
    assert facts["final_validation_loss"] > 0 and facts["config"]["model"]["units"] == 32
    assert facts["weights"] == "as trained"  # training.ema_momentum is off by default


def test_json_output_and_file(trained_model, tmp_path):
    out = tmp_path / "samples.txt"
    result = run("generate", "--model", trained_model, "--seed", "A", "--length", "30", "--num-samples", "2",
                 "--temperature", "0.5", "--temperature", "1.0", "--random-seed", "3", "--json", "--output", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert len(doc["samples"]) == 4 and doc["settings"]["random_seed"] == 3
    assert [s["temperature"] for s in doc["samples"]] == [0.5, 0.5, 1.0, 1.0]
    assert out.read_text() == "\n\n".join("A" + s["text"] for s in doc["samples"]) + "\n"


# ---------------------------------------------------------------- bad input


def _bad_model_files(tmp_path):
    not_zip = tmp_path / "not_zip.keras"
    not_zip.write_text("hello")
    plain = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(plain)
    wrong_suffix = tmp_path / "model.h5"
    wrong_suffix.write_text("x")
    return {"not_zip": not_zip, "plain": plain, "wrong_suffix": wrong_suffix, "missing": tmp_path / "none.keras"}


@pytest.mark.parametrize("kind, message", [
    ("not_zip", "is not a valid .keras archive"),
    ("plain", "not a textgen model"),
    ("wrong_suffix", "is not a .keras file"),
    ("missing", "does not exist"),
])
def test_bad_model_paths(tmp_path, kind, message):
    path = _bad_model_files(tmp_path)[kind]
    result = run("generate", "--model", path, "--seed", "a")
    assert result.exit_code == (2 if kind == "missing" else 1) and message in result.output
    assert "Traceback" not in result.output and result.output.strip().splitlines()[-1].startswith("Error: ")


def test_truncated_model_file(trained_model, tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(trained_model.read_bytes()[:5000])
    result = run("info", broken)
    assert result.exit_code == 1 and "not a valid .keras archive" in result.output


@pytest.mark.parametrize("args, code, message", [
    (["--seed", "a§"], 2, "'§' is not in the model's vocabulary"),
    (["--seed", ""], 2, "the seed is empty"),
    (["--seed", "a", "--temperature", "-1"], 2, "'--temperature': -1.0 is not in the range x>=0"),
    (["--seed", "a", "--temperature", "nan"], 2, "temperature must be a finite number, got nan"),
    (["--seed", "a", "--temperature", "inf"], 2, "temperature must be a finite number, got inf"),
    (["--seed", "a", "--repetition-penalty", "nan"], 2, "repetition penalty must be a finite number, got nan"),
    (["--seed", "a", "--top-p", "1.5", "--temperature", "1"], 2, "'--top-p': 1.5 is not in the range 0<x<=1"),
    (["--seed", "a", "--top-k", "0"], 2, "'--top-k': 0 is not in the range x>=1"),
    (["--seed", "a", "--length", "-2"], 2, "'--length': -2 is not in the range x>=0"),
])
def test_bad_generation_values(trained_model, args, code, message):
    result = run("generate", "--model", trained_model, *args)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def _train_bad(tmp_path, small_corpus, **extra):
    sets = [a for o in tiny_overrides(small_corpus, tmp_path / "run", **extra) for a in ("--set", o)]
    return run("train", *sets)


@pytest.mark.parametrize("extra, code, message", [
    ({"model.unit": 3}, 2, "unknown config key model.unit; did you mean model.units?"),
    ({"training.batch_size": 0}, 2, "training.batch_size must be at least 1"),
    ({"training.epochs": "'two'"}, 2, "training.epochs must be an integer"),
    ({"corpus.paths": "['/nonexistent/x.txt']"}, 2, "does not exist"),  # a missing input is a usage error
    ({"training.seq_length": 100000}, 1, "fewer than seq_length + 1"),
])
def test_bad_training_input(tmp_path, small_corpus, extra, code, message):
    result = _train_bad(tmp_path, small_corpus, **extra)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "model.keras").exists()


def test_unwritable_output_directory_is_checked_before_training(tmp_path, small_corpus):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sets = [a for o in tiny_overrides(small_corpus, blocker / "run") for a in ("--set", o)]
    result = run("train", *sets)
    assert result.exit_code == 1 and "cannot be written" in result.output


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "x.keras").write_text("not a zip")
    result = CliRunner().invoke(cli, ["--debug", "info", str(tmp_path / "x.keras")])
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "ModelFileError"


def test_generate_without_model_uses_the_pretrained_default():
    result = run("generate", "--seed", "ROMEO:", "--length", "40", "--temperature", "0")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ROMEO:") and len(result.output) == len("ROMEO:") + 40 + 1
    from textgen.generation.generate import load
    from textgen.pretrained import default_model_path

    expected = load(default_model_path()).generate("ROMEO:", length=40, temperature=0)[0]
    assert result.output == "ROMEO:" + expected + "\n"
    facts = json.loads(run("info", default_model_path(), "--json").output)
    assert facts["cell"] == "LSTM" and facts["best_validation_loss"] < 1.6  # a trained model, not a stub
