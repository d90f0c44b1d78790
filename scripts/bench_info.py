"""Time `textgen info MODEL` and `python -c "import textgen"` as a user runs them: fresh processes.

Each command runs --runs times (after --warmup unrecorded runs that fill the file cache),
hyperfine-style, and the wall time of each run is reported as min / median / max, with the
largest peak memory (maxrss) a run reached. Child processes are timed one at a time, so a
run's peak memory is its own.

Usage: python scripts/bench_info.py [MODEL] [--runs 10] [--warmup 2]
MODEL defaults to the pretrained model shipped with textgen.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_runs(argv: list[str], runs: int, warmup: int) -> tuple[list[float], int]:
    """Wall seconds of each of `runs` runs of `argv`, and the largest peak memory of one (KiB on Linux)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    seconds, peak = [], 0
    for i in range(warmup + runs):
        started = time.perf_counter()
        pid = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env).pid
        _, status, usage = os.wait4(pid, 0)
        elapsed = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(argv)} failed (exit {os.waitstatus_to_exitcode(status)})")
        if i >= warmup:
            seconds.append(elapsed)
            peak = max(peak, usage.ru_maxrss)
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(ROOT / "textgen" / "pretrained" / "shakespeare-char.keras"))
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first, to fill the file cache")
    args = parser.parse_args()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import textgen'": [sys.executable, "-c", "import textgen"],
        f"textgen info {Path(args.model).name}": [sys.executable, "-m", "textgen", "info", args.model],
        f"textgen info {Path(args.model).name} --json": [sys.executable, "-m", "textgen", "info", args.model, "--json"],
    }
    print(f"{args.runs} runs each after {args.warmup} warm-up runs; wall seconds; peak memory of one run")
    print(f"{'command':<44} {'min':>7} {'median':>7} {'max':>7} {'peak MB':>8}")
    for name, argv in commands.items():
        seconds, peak = timed_runs(argv, args.runs, args.warmup)
        scale = 1024 if sys.platform != "darwin" else 1024 * 1024  # ru_maxrss: KiB on Linux, bytes on macOS
        print(f"{name:<44} {min(seconds):7.3f} {statistics.median(seconds):7.3f} {max(seconds):7.3f} "
              f"{peak * scale / 1e6:8.0f}")


if __name__ == "__main__":
    main()
