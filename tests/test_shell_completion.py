"""Shell completion (docs/cli.md): click writes the script for bash, zsh and fish and answers
each Tab press by running `textgen` with `_TEXTGEN_COMPLETE` set, before TensorFlow is imported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def completing(instruction: str, words: str = "", cword: int = 0, python_options=()) -> subprocess.CompletedProcess:
    env = {**os.environ, "_TEXTGEN_COMPLETE": instruction, "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    return subprocess.run([sys.executable, *python_options, "-m", "textgen"], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F _textgen_completion textgen"),
                                           ("zsh", "#compdef textgen"),
                                           ("fish", "complete --no-files --command textgen")])
def test_the_completion_script_is_written_for_each_shell(shell, marker):
    result = completing(f"{shell}_source")
    assert result.returncode == 0 and result.stderr == ""
    assert marker in result.stdout and "_TEXTGEN_COMPLETE" in result.stdout


def test_completing_a_command_name_offers_it_without_importing_tensorflow():
    result = completing("bash_complete", "textgen ge", 1, python_options=("-X", "importtime"))
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["plain,generate"]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "textgen.cli.main" in imported and not imported & {"tensorflow", "keras"}, imported


def test_completing_options_of_a_command():
    offered = completing("bash_complete", "textgen generate --te", 2).stdout.splitlines()
    assert offered == ["plain,--temperature"]
    offered = completing("bash_complete", "textgen info --q", 2).stdout.splitlines()
    assert offered == ["plain,--quiet"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_through_the_documented_line(tmp_path):
    """The line docs/cli.md gives for bash, in a real bash, with `textgen` on PATH."""
    command = tmp_path / "textgen"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m textgen "$@"\n')
    command.chmod(0o755)
    script = ('eval "$(_TEXTGEN_COMPLETE=bash_source textgen)"\n'
              'COMP_WORDS=(textgen ge); COMP_CWORD=1; _textgen_completion textgen\n'
              'echo "${COMPREPLY[@]}"\n')
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["generate"]
    documented = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert 'eval "$(_TEXTGEN_COMPLETE=bash_source textgen)"' in documented
