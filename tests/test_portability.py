"""What can be tested here of macOS and Windows: no /proc, and a file system that refuses to
fsync a read-only handle or a folder."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from textgen.config import load_config
from textgen.training import distribute
from textgen.training.distribute import plan_devices
from textgen.training.train import train

from conftest import tiny_overrides


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Point the CPU reader at a file of the test's making (missing until written)."""
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(distribute, "CPUINFO", path)
    return path


def test_without_proc_the_cpu_is_unknown_and_training_picks_float32(cpuinfo):
    assert not cpuinfo.exists()
    assert distribute.cpu_flags() == set()
    assert not distribute.cpu_has_native_bf16() and not distribute.cpu_has_amx_bf16()
    assert isinstance(distribute.cpu_model(), str) and distribute.cpu_model()  # platform's answer or "an unknown CPU"
    plan = plan_devices(load_config().training)
    assert (plan.device, plan.precision) == ("cpu", "float32")
    assert "no bfloat16 units" in plan.describe()


def test_cpu_flags_and_model_are_read_from_cpuinfo(cpuinfo):
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx512_bf16 amx_bf16\n\n"
                       "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx512_bf16 amx_bf16\n")
    assert distribute.cpu_model() == "Test CPU 9000"
    assert distribute.cpu_flags() == {"fpu", "sse2", "avx512_bf16", "amx_bf16"}
    assert plan_devices(load_config().training).precision == "mixed_bfloat16"


def test_an_arm_cpuinfo_without_flags_picks_float32(cpuinfo):
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd bf16\nCPU implementer\t: 0x41\n")
    assert distribute.cpu_flags() == set()
    assert plan_devices(load_config().training).precision == "float32"


@pytest.fixture
def windows_like_files(monkeypatch):
    """os.fsync fails with EBADF on a handle not open for writing (Windows' _commit does) and on
    a folder (which Windows cannot open, so a folder fsync would not even start); every fsync
    is recorded."""
    fcntl = pytest.importorskip("fcntl")
    real_fsync, synced = os.fsync, []

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode) or fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_training_and_resuming_work_where_fsync_needs_a_writable_handle(windows_like_files, small_corpus, tmp_path):
    overrides = tiny_overrides(small_corpus, tmp_path / "run", **{"training.epochs": 1, "training.steps_per_epoch": 4,
                                                                   "training.checkpoint_every": 2})
    result = train(load_config(None, overrides), echo=None, verbose=0, progress=None)
    resumed = train(load_config(None, [*overrides, "training.epochs=2"]), resume=True, echo=None, verbose=0,
                    progress=None)
    assert windows_like_files  # the token cache, checkpoints, history and model were flushed, none refused
    assert [row["epoch"] for row in resumed.history] == [1, 2] and resumed.global_step == 8
    assert result.model_path.is_file() and (result.run_dir / "cache").is_dir()
    leftovers = [p.name for p in result.run_dir.rglob(".*.tmp*")]
    assert leftovers == []  # every temporary file was renamed into place


def test_the_command_starts_where_signal_lacks_the_posix_only_names(tmp_path):
    """Windows' signal module has no SIGHUP, SIGPIPE or pthread_sigmask: `textgen --help` still answers."""
    import subprocess
    import sys
    from pathlib import Path

    script = ("import signal, sys\n"
              "del signal.SIGHUP, signal.SIGPIPE, signal.pthread_sigmask\n"
              "sys.argv = ['textgen', '--help']\n"
              "from textgen.cli.main import main\n"
              "main()\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert "Usage: textgen" in done.stdout and "train" in done.stdout
