"""A stand-in for textgen.serve.engine with the contract's interface, for the HTTP tests only.

It runs one job at a time through `Generator.stream` / `Generator.run` in one worker thread, so the
HTTP layer can be tested before the batching engine is merged. tests/test_serve_http.py uses the real
engine whenever textgen.serve.engine exists; this file never ships in textgen/.
"""

from __future__ import annotations

import asyncio
import queue
import threading

from textgen.errors import UsageError


class QueueFull(UsageError):
    pass


class Job:
    def __init__(self, request):
        self.request = request
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.samples = None
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._events = asyncio.Queue() if self._loop else None

    def _emit(self, event: dict) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    async def events(self):
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event
            if event["type"] in ("done", "error"):
                return

    def result(self, timeout=None):
        self.finished.wait(timeout)
        return self.samples

    def cancel(self) -> None:
        self.cancelled.set()


class BatchEngine:
    def __init__(self, generator, *, window_ms: float = 5.0, max_batch: int = 64, max_queue: int = 256):
        self.generator, self.max_queue = generator, max_queue
        self._jobs: queue.Queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, daemon=True)
            self._thread.start()

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, request) -> Job:
        if request.sampler.beam:
            raise UsageError("the server samples; beam search is not served")
        self.generator.check(request)
        with self._lock:
            if self._pending >= self.max_queue:
                raise QueueFull(f"the queue holds {self.max_queue} requests already")
            self._pending += 1
        job = Job(request)
        self._jobs.put(job)
        return job

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._run(job)
            except Exception as exc:  # the contract: an error event, never a traceback
                job._emit({"type": "error", "error": f"{type(exc).__name__}: {exc}"})
            finally:
                with self._lock:
                    self._pending -= 1
                job.finished.set()

    def _run(self, job: Job) -> None:
        from textgen.generation.request import Sample

        if job.cancelled.is_set():
            job._emit(None)
            return
        if job.request.num_samples == 1:
            pieces = []
            for piece in self.generator.stream(job.request):
                if job.cancelled.is_set():
                    job._emit(None)
                    return
                pieces.append(piece)
                job._emit({"type": "text", "sample": 0, "text": piece})
            samples = self.generator.run(job.request)  # stopped_by and token counts (same seed: same text)
        else:
            samples = self.generator.run(job.request)
        job.samples = [Sample(s.text, s.tokens, s.stopped_by) for s in samples]
        job._emit({"type": "done", "samples": [{"text": s.text, "tokens": s.tokens, "stopped_by": s.stopped_by}
                                               for s in samples], "seconds": 0.0})
