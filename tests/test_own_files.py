"""textgen's own files read back: a damaged checkpoint state, a corrupted token cache,
temporary files a killed process left, and writes that fail on a full disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import tiny_overrides
from test_bad_input import check_answer, leftovers
from textgen.cli import cli


def resume_args(corpus: Path, run_dir: Path, **extra) -> list[str]:
    return ["train", *[a for o in tiny_overrides(corpus, run_dir, **extra) for a in ("--set", o)], "--resume"]


def damage_state(change):
    def apply(state):
        change(state)
        return state
    return apply


STATE_DAMAGE = {
    "global_step a string": (damage_state(lambda s: s.update(global_step="52")),
                             'global_step is "52", not a whole number'),
    "recorder a list": (damage_state(lambda s: s.update(recorder=[1])), "recorder is [1], not a mapping"),
    "config missing": (damage_state(lambda s: s.pop("config")), "config is missing"),
    "corpus tokens a float": (damage_state(lambda s: s["corpus"].update(tokens=1.5)),
                              "corpus.tokens is 1.5, not a whole number"),
    "history rows not mappings": (damage_state(lambda s: s["recorder"].update(rows=[3])),
                                  "recorder.rows holds an entry that is not a mapping"),
    "weights outside the folder": (damage_state(lambda s: s.update(weights="../../model.keras")),
                                   "a file outside the checkpoint folder"),
    "a list, not a state": (lambda s: [s], "it holds list, not a mapping"),
}


@pytest.mark.parametrize("damage", list(STATE_DAMAGE), ids=list(STATE_DAMAGE))
def test_a_damaged_state_json_is_one_line_naming_it(damage, trained_model, small_corpus, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_model.parent, run_dir)
    path = run_dir / "checkpoint" / "state.json"
    change, words = STATE_DAMAGE[damage]
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "cache" not in p.parts}
    result = CliRunner().invoke(cli, resume_args(small_corpus, run_dir, **{"training.epochs": 3}))
    check_answer(result, 1, words)
    assert f"{path} is damaged" in result.stderr and "start again with --overwrite" in result.stderr
    assert {p: p.read_bytes() for p in before} == before and leftovers(run_dir) == []


def test_a_state_without_the_newer_optional_keys_still_resumes(trained_model, small_corpus, tmp_path):
    """Keys a resume reads with a default (precision, averaging, rng) may be absent from an older state."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_model.parent, run_dir)
    path = run_dir / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    for key in ("precision", "averaging", "rng", "finished", "average"):
        state.pop(key, None)
    path.write_text(json.dumps(state))
    result = CliRunner().invoke(cli, resume_args(small_corpus, run_dir, **{"training.epochs": 3}))
    assert result.exit_code == 0, result.output
    assert json.loads(path.read_text())["global_step"] > state["global_step"]
