"""How much a `textgen serve` gains from batching: 64 concurrent clients against the same 64 requests
sent one at a time, to one server on this machine.

The server runs in a child process (`textgen serve --port 0`) on the pretrained model (a
character LSTM of 512 units) unless --model says otherwise. Each request asks for --length
characters at temperature 0.8 with its own random seed. After warm-up requests (which compile
the generation loop for one row and for a full batch), it measures:

  alone        one request with the server otherwise idle (the median of --repeats)
  one by one   the 64 requests sent in turn, each waiting for the previous answer
  concurrent   the 64 requests sent at once from 64 client threads

and prints, for the last two, the aggregate characters per second and the p50 and p95 latency,
then the ratios the goal is stated in: concurrent throughput at least 5x one by one's, and
concurrent p95 latency under 2x that of one request alone.

Last, with the server stopped, it times the compute the concurrent run cannot avoid: all
the clients' samples as one batch through `Generator.run` in this process (the fastest
way this machine writes them, without HTTP or an engine). However requests are scheduled,
the 95th percentile client waits for about 95% of that work, so the bound it prints is the
lowest p95 ratio any server could reach here.

Usage: python scripts/bench_serve.py [--model M] [--clients 64] [--length 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ("ROMEO:", "JULIET:", "KING RICHARD III:", "First Citizen:\n", "To be, or not", "O, ")


def start_server(model: str | None, clients: int, log) -> tuple[subprocess.Popen, int]:
    """`textgen serve` on a free port, with room for every client at once: (process, port)."""
    command = [sys.executable, "-m", "textgen", "serve", "--port", "0", "--max-queue", str(4 * clients),
               "--max-streams", str(clients), "--max-length", "100000"]
    if model:
        command += ["--model", model]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        text = Path(log.name).read_text(encoding="utf-8", errors="replace")
        if "http://" in text:
            return process, int(text.split("http://127.0.0.1:")[1].split("/")[0])
        if process.poll() is not None:
            sys.exit(f"textgen serve ended with {process.returncode}:\n{text}")
        time.sleep(0.1)
    process.kill()
    sys.exit("textgen serve did not start within 300 s")


def post(port: int, body: dict) -> tuple[float, int]:
    """(seconds, characters generated) of one request on its own connection."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/generate", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {answer}")
    return time.perf_counter() - started, sum(len(s["text"]) for s in answer["samples"])


def one_by_one(port: int, bodies: list[dict]) -> tuple[float, list[float], int]:
    """(wall seconds, latencies, characters) of the requests sent in turn."""
    started = time.perf_counter()
    results = [post(port, body) for body in bodies]
    return time.perf_counter() - started, [r[0] for r in results], sum(r[1] for r in results)


def concurrent(port: int, bodies: list[dict]) -> tuple[float, list[float], int]:
    """(wall seconds, latencies, characters) of the requests sent at once, one thread each."""
    results: list = [None] * len(bodies)
    gate = threading.Barrier(len(bodies) + 1)

    def client(i: int) -> None:
        gate.wait()
        results[i] = post(port, bodies[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, [r[0] for r in results], sum(r[1] for r in results)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def compute_floor(model: str | None, clients: int, length: int, repeats: int) -> float:
    """Seconds for `clients` samples of `length` as one batch through Generator.run, best of `repeats`."""
    from textgen.generation.generate import load
    from textgen.generation.request import Request
    from textgen.generation.samplers import RandomSampler

    if model is None:
        from textgen.pretrained import default_model_path

        model = default_model_path()
    generator = load(model)
    request = Request(seed=SEEDS[0], length=length, sampler=RandomSampler(0.8), num_samples=clients)
    generator.run(request)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        generator.run(request)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a .keras file [default: the pretrained model]")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bodies = [{"seed": SEEDS[i % len(SEEDS)], "length": args.length, "temperature": 0.8, "random_seed": i}
              for i in range(args.clients)]
    with tempfile.NamedTemporaryFile("w+", prefix="bench_serve_", suffix=".log") as log:
        process, port = start_server(args.model, args.clients, log)
        try:
            post(port, bodies[0])  # warm-up: the server compiled at start; this loads the rest
            concurrent(port, bodies)
            alone = statistics.median(post(port, bodies[0])[0] for _ in range(args.repeats))
            serial = one_by_one(port, bodies)
            together = concurrent(port, bodies)
        finally:
            process.terminate()
            process.wait(120)
    print(f"{args.clients} requests of {args.length} characters, temperature 0.8; one request alone: "
          f"{alone * 1000:.0f} ms")
    print(f"{'':12} {'chars/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'wall s':>7}")
    for name, (wall, latencies, chars) in (("one by one", serial), ("concurrent", together)):
        print(f"{name:12} {chars / wall:9.0f} {percentile(latencies, 0.5) * 1000:8.0f} "
              f"{percentile(latencies, 0.95) * 1000:8.0f} {wall:7.2f}")
    gain = (together[2] / together[0]) / (serial[2] / serial[0])
    p95_ratio = percentile(together[1], 0.95) / alone
    print(f"throughput, concurrent / one by one: {gain:.1f}x (goal: at least 5x)")
    print(f"p95 latency, concurrent / one request alone: {p95_ratio:.2f}x (goal: under 2x)")
    floor = compute_floor(args.model, args.clients, args.length, args.repeats)
    print(f"compute floor: {args.clients} samples as one Generator batch take {floor * 1000:.0f} ms, so no "
          f"schedule gets p95 below about {0.95 * floor / alone:.2f}x one request alone on this machine")


if __name__ == "__main__":
    main()
