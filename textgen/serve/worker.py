"""The worker thread both serving engines run their batches in: started once, stopped by
refusing new work, then draining or ending what is queued."""

from __future__ import annotations

import asyncio
import threading

from textgen.errors import UsageError


class QueueFull(UsageError):
    """The engine's queue holds max_queue requests already; try again later."""


class EngineThread:
    """The thread and the flags an engine's `_work` loop reads under `_lock`: `_accepting` (new
    requests are queued), `_stopping` (the loop should end) and `_drain` (finish what is queued
    first). A subclass names its thread and provides `_work`."""

    thread_name = "textgen-engine"

    def __init__(self):
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._accepting, self._drain, self._stopping = True, True, False

    def start(self) -> None:
        """Start the worker thread (once; later calls do nothing)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.thread_name, daemon=True)
                self._thread.start()

    def _stop_thread(self, drain: bool, timeout: float) -> threading.Thread | None:
        """Refuse new requests, tell the loop to end (after the queued ones, with `drain`) and wait
        up to `timeout` seconds for it; the thread, or None if it never started."""
        with self._lock:
            self._accepting, self._drain, self._stopping = False, drain, True
            thread = self._thread
            self._lock.notify_all()
        if thread is not None:
            thread.join(timeout)
        return thread

    def _enqueue(self, make_job):
        """Queue the job `make_job(loop)` makes (loop: the caller's asyncio loop, or None), unless
        the engine is stopping or its queue (`_waiting`, at most `max_queue`) is full."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if not self._accepting:
                raise UsageError("the server is shutting down and takes no new requests; try again shortly")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"the queue holds {self.max_queue} requests already; try again shortly")
            job = make_job(loop)
            self._waiting.append(job)
            self._lock.notify_all()
        return job

    def _work(self) -> None:
        raise NotImplementedError
