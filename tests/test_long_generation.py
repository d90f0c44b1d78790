"""Long generation and long seeds run in constant memory.

A recurrent model carries a fixed-size state, so any seed length works (there is no
context limit to refuse) and generating 100,000 characters should cost no more memory than
generating 10,000, apart from the text itself. Each measurement runs in a fresh process and
reports how much its resident set grew during the call: the largest RSS seen while the text
streams (read from /proc after every piece) minus the RSS after a warm-up call, so
TensorFlow's and XLA's one-time allocations are not counted. (ru_maxrss would hide the
growth under the peak of compiling the loops.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MB = 1024  # /proc reports kilobytes

MEASURE = r"""
import json, sys
import textgen


def rss_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


generator = textgen.load(sys.argv[1])
seed_chars, length = int(sys.argv[2]), int(sys.argv[3])
alphabet = [c for c in "abcdefghijklmnopqrstuvwxyz ,.\n" if c in generator.tokenizer.vocabulary]
seed = "".join(alphabet[(i * 7) % len(alphabet)] for i in range(seed_chars))
generator.generate(seed[:50], length=300, temperature=1.0, random_seed=1)  # warm-up: compile the loops
before = peak = rss_kb()
pieces = 0
request = textgen.generation.generate.Request(seed=seed, length=length, random_seed=2,
                                   sampler=textgen.generation.samplers.make_sampler(1.0, None, None, None))
for piece in generator.stream(request):  # streamed and dropped, as the CLI prints it
    pieces += len(piece)
    peak = max(peak, rss_kb())
print(json.dumps({"growth_kb": max(peak, rss_kb()) - before, "chars": pieces}))
"""


def peak_growth_kb(model: Path, seed_chars: int, length: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", MEASURE, str(model), str(seed_chars), str(length)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
@pytest.mark.slow
def test_generating_100k_characters_uses_no_more_memory_than_10k(trained_model):
    short = peak_growth_kb(trained_model, 10, 10_000)
    long = peak_growth_kb(trained_model, 10, 100_000)
    assert short["chars"] == 10_000 and long["chars"] == 100_000
    print(f"\npeak RSS growth: 10,000 chars {short['growth_kb'] / MB:.1f} MB, "
          f"100,000 chars {long['growth_kb'] / MB:.1f} MB")
    # 90,000 more characters held as text are well under 1 MB; anything proportional to the
    # length (a window re-fed, states kept per token) would add tens of MB.
    assert long["growth_kb"] - short["growth_kb"] < 16 * MB


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
@pytest.mark.slow
def test_a_100k_character_seed_is_read_in_constant_memory(trained_model):
    short = peak_growth_kb(trained_model, 10_000, 100)
    long = peak_growth_kb(trained_model, 100_000, 100)
    assert short["chars"] == 100 and long["chars"] == 100
    print(f"\npeak RSS growth: 10,000-char seed {short['growth_kb'] / MB:.1f} MB, "
          f"100,000-char seed {long['growth_kb'] / MB:.1f} MB")
    # the seed's ids (4 bytes a token) are the only thing that grows with it: 0.4 MB here
    assert long["growth_kb"] - short["growth_kb"] < 16 * MB
