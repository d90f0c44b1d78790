"""The first hour of `pip install textgen`: the built wheel, in a fresh virtual environment,
used from an empty folder with nothing of the checkout around.

Slow (a wheel build and an install of TensorFlow into a new environment, a minute or two
from pip's cache, then one short training run), so it runs with `make test-slow` and in CI.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHORT_RUN = ["--set", "training.epochs=1", "--set", "training.steps_per_epoch=30", "--set", "training.sample_length=60"]
VERSE = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"

pytestmark = pytest.mark.slow


def clean_env() -> dict:
    """The environment without anything that points Python at the checkout (pip would take its
    egg-info for an installed textgen)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def checkout_copy(target: Path) -> Path:
    """What the wheel is built from, copied out, so no build/ or egg-info folder of an earlier
    build in the checkout can add stale files to it, and the checkout is not written to."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / "textgen", target / "textgen", ignore=ignore)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The `bin` folder of a new virtual environment with the freshly built wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = checkout_copy(tmp / "source")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(tmp / "dist")],
                           capture_output=True, text=True, timeout=600, env=clean_env())
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("textgen-*.whl")
    venv = tmp / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300,
                          env=clean_env())
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtual environment here: {made.stderr.strip()[-300:]}")
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    pip = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", str(wheel)],
                         capture_output=True, text=True, timeout=1200, env=clean_env(), cwd=tmp)
    if pip.returncode != 0 and any(s in pip.stderr for s in ("No matching distribution", "Could not find a version",
                                                             "NewConnectionError", "Temporary failure")):
        pytest.skip(f"textgen's dependencies cannot be installed (no network and no pip cache): "
                    f"{pip.stderr.strip().splitlines()[-1]}")
    assert pip.returncode == 0, pip.stderr[-3000:]
    return bin_dir


def textgen(bin_dir: Path, cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The installed `textgen` command, run in `cwd` with nothing pointing back at the checkout."""
    result = subprocess.run([str(bin_dir / "textgen"), *args], cwd=cwd, env=clean_env(), input=stdin,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"textgen {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_wheel_trains_generates_describes_and_evaluates_from_an_empty_folder(installed, tmp_path):
    where = subprocess.run([str(installed / "python"), "-c",
                            "import importlib.util; print(importlib.util.find_spec('textgen').origin)"],
                           cwd=tmp_path, capture_output=True, text=True, env=clean_env())
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout  # the wheel, not the checkout
    work = tmp_path / "empty"
    work.mkdir()

    listed = textgen(installed, work, "presets").stdout
    assert "quick" in listed and "shakespeare-fast" in listed

    trained = textgen(installed, work, "train", "--config", "quick", *SHORT_RUN)
    model = work / "runs" / "quick" / "model.keras"
    corpus = next(line for line in trained.stdout.splitlines() if "tinyshakespeare.txt" in line)
    assert str(installed.parent) in corpus  # the corpus that ships in the wheel, inside the environment
    assert "saved runs/quick/model.keras" in trained.stdout and model.is_file()
    assert sorted(p.name for p in work.iterdir()) == ["runs"]  # nothing written beside the run

    generated = textgen(installed, work, "generate", "--model", "runs/quick/model.keras", "--seed", "ROMEO:",
                        "--length", "50").stdout
    assert generated.startswith("ROMEO:") and len(generated) >= len("ROMEO:") + 40

    info = textgen(installed, work, "info", "runs/quick/model.keras").stdout
    assert "cell: GRU" in info and "units: 256" in info and "level: char" in info

    scored = textgen(installed, work, "evaluate", "--model", "runs/quick/model.keras", "--text", "-",
                     stdin=VERSE).stdout
    bits = float(next(line for line in scored.splitlines() if line.startswith("bits per character:")).split()[-1])
    assert 1.0 < bits < 5.0  # 30 steps: worse than the pretrained model's 1.6, well below chance (6.0 bits)

    pretrained = json.loads(textgen(installed, work, "info", "--json").stdout)  # no --model: the shipped model
    assert pretrained["units"] == [512] and pretrained["level"] == "char"
    by_default = textgen(installed, work, "evaluate", "--text", "-", "--json", stdin=VERSE).stdout
    assert json.loads(by_default)["bits_per_char"] < bits  # the pretrained model knows Shakespeare better

    (work / "mine.txt").write_text(VERSE * 20)
    started = textgen(installed, work, "init", "project", "--corpus", "mine.txt").stdout
    assert "textgen train --config project/textgen.yaml" in started and (work / "project" / "textgen.yaml").is_file()
