"""The seq2seq batch engine: requests that arrive together decode as one batch, in one background thread.

Simpler than the language models' engine (textgen.serve.engine): a target comes whole, so there
is no streaming and no joining a running batch. The worker waits `window_ms` after a request for
others, then hands every group of requests that decode alike (`TranslateRequest.batch_key`) to
one `Translator.translate` call and gives each request its own rows back. It has the interface
textgen.serve.app's lifespan and handlers use: start, stop, submit, pending, warm_up.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

from textgen.errors import TextgenError, UsageError
from textgen.serve.worker import EngineThread, QueueFull

__all__ = ["QueueFull", "Seq2SeqEngine", "TranslateJob"]


class TranslateJob:
    """A submitted request: await `outputs()` on the submitting asyncio loop, or block in `result()`."""

    def __init__(self, request, loop: asyncio.AbstractEventLoop | None):
        self.request = request
        self._loop = loop
        self._future = loop.create_future() if loop is not None else None
        self._finished = threading.Event()
        self._outputs: list[str] | None = None
        self._error: str | None = None
        self.cancelled = False

    async def outputs(self) -> list[str]:
        """The targets, one per source; a TextgenError with the one-line reason when decoding failed."""
        return await self._future

    def result(self, timeout: float | None = None) -> list[str]:
        if not self._finished.wait(timeout):
            raise TimeoutError("the job did not finish in time")
        if self._error is not None:
            raise TextgenError(self._error)
        return self._outputs

    def cancel(self) -> None:
        self.cancelled = True

    def finish(self, outputs: list[str] | None, error: str | None = None) -> None:
        self._outputs, self._error = outputs, error
        self._finished.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if self._future.done():  # the handler gave up waiting (its client left)
            return
        if self._error is not None:
            self._future.set_exception(TextgenError(self._error))
        else:
            self._future.set_result(self._outputs)


class Seq2SeqEngine(EngineThread):
    """Decodes requests for one `Translator` in a background thread, alike ones as one batch.

    Args:
        translator: the loaded model's `textgen.generation.seq2seq.Translator`.
        window_ms: how long an idle engine waits after a request for others to decode with it.
        max_queue: the most requests waiting; `submit` raises QueueFull beyond it.
    """

    def __init__(self, translator, *, window_ms: float = 5.0, max_queue: int = 256):
        if window_ms < 0 or max_queue < 1:
            raise UsageError(f"the engine needs window_ms >= 0 and max_queue >= 1, got {window_ms}, {max_queue}")
        super().__init__()
        self.translator = translator
        self.window, self.max_queue = window_ms / 1000.0, max_queue
        self._waiting: deque[TranslateJob] = deque()
        self._running = 0

    thread_name = "textgen-seq2seq-engine"

    def warm_up(self) -> None:
        """Trace the greedy and beam loops once (each has one trace for every batch and length)."""
        probe = [self.translator.source_tokenizer.decode([0])]
        self.translator.translate(probe, method="greedy", max_length=2)
        self.translator.translate(probe, method="beam", beam_width=2, max_length=2)

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop accepting requests; with `drain` decode the queued ones first, else end them with an error."""
        self._stop_thread(drain, timeout)
        with self._lock:
            left = list(self._waiting)
            self._waiting.clear()
        for job in left:
            job.finish(None, "the server stopped before the request finished")

    def submit(self, request) -> TranslateJob:
        """Check `request`'s sources against the vocabulary and queue it; returns at once."""
        self.translator.encode_sources(list(request.sources))  # a UsageError names the source and characters
        return self._enqueue(lambda loop: TranslateJob(request, loop))

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._waiting) + self._running

    # ------------------------------------------------------------------ the worker thread

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stopping:
                    self._lock.wait()
                if not self._waiting or (self._stopping and not self._drain):
                    break
                self._gather_window()
                jobs = [job for job in self._waiting if not job.cancelled]
                self._waiting.clear()
                self._running = len(jobs)
            for group in _groups(jobs):
                self._decode(group)
            with self._lock:
                self._running = 0

    def _gather_window(self) -> None:
        """With the lock held: wait until `window` passes without a new request."""
        count = -1
        while count != len(self._waiting):
            count = len(self._waiting)
            deadline = time.monotonic() + self.window
            while time.monotonic() < deadline and len(self._waiting) == count and not self._stopping:
                self._lock.wait(deadline - time.monotonic())

    def _decode(self, jobs: list[TranslateJob]) -> None:
        """One Translator call for `jobs` (alike), each job's rows handed back; a failure ends them all."""
        first = jobs[0].request
        sources = [source for job in jobs for source in job.request.sources]
        try:
            outputs = self.translator.translate(sources, method=first.method, temperature=first.temperature,
                                                beam_width=first.beam_width, max_length=first.max_length,
                                                random_seed=first.random_seed)
        except Exception as error:  # one line for the client, whatever broke; the server keeps serving
            text = " ".join(str(error).split()) or type(error).__name__
            for job in jobs:
                job.finish(None, f"decoding failed: {text[:300]}")
            return
        start = 0
        for job in jobs:
            job.finish(outputs[start:start + len(job.request.sources)])
            start += len(job.request.sources)


def _groups(jobs: list[TranslateJob]) -> list[list[TranslateJob]]:
    """The jobs in groups that decode as one call, in order of their first arrival."""
    groups: dict = {}
    for number, job in enumerate(jobs):
        key = job.request.batch_key
        groups.setdefault(number if key is None else key, []).append(job)
    return list(groups.values())
