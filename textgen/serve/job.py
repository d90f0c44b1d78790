"""One request inside the batch engine: its samples' progress, their random numbers, and its events.

The worker thread (textgen.serve.engine) feeds a job the tokens its rows produced; the job
decodes them, finds where each sample ends and hands text to whoever waits: an asyncio
consumer of `events()` or a thread blocked in `result()`.

A job's samples must come out exactly as `Generator.run` writes them, although the engine
steps in chunks of its own size. Two things depend on the Generator's chunking, so the job
reproduces it (`generator_chunk_start`): the random numbers (one `loops.uniforms` table per
Generator chunk, drawn for `num_samples` rows) and where the end search starts
(`request.find_end`'s `before`). Between the Generator's chunk ends the job searches early,
and accepts an end found there only when no stop string still incomplete could start before
it; the Generator's search would then have found the same end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import AsyncIterator

import numpy as np

from textgen.errors import TextgenError, UsageError
from textgen.generation import loops
from textgen.generation.request import Request, Sample, find_end, tokens_within


class JobCancelled(UsageError):
    """The job was cancelled (by `Job.cancel`, or its events' consumer went away) before it finished."""


class GenerationFailed(TextgenError):
    """Generation failed inside the engine; the message is the one-line reason."""


def generator_chunk_start(position: int) -> int:
    """Where the Generator's chunk holding token `position` (counted from the request's start) begins."""
    if position < loops.FIRST_CHUNK:
        return 0
    return loops.FIRST_CHUNK + (position - loops.FIRST_CHUNK) // loops.CHUNK * loops.CHUNK


class Job:
    """A submitted request: iterate `events()` on the submitting asyncio loop, or block in `result()`.

    `events()` yields `{"type": "text", "sample": i, "text": piece}` as text is produced (held
    back while a stop string could still begin in it, so nothing yielded is taken back), then
    `{"type": "done", "samples": [...], "seconds": s}` or `{"type": "error", "error": "..."}`.
    """

    def __init__(self, request: Request, seed_ids: np.ndarray, tokenizer, loop: asyncio.AbstractEventLoop | None,
                 labels: np.ndarray | None = None):
        self.request, self.seed_ids = request, seed_ids
        self.labels = labels  # (num_samples, width) label vectors (Generator.label_vectors); None: every row `any`
        self._loop = loop
        self._queue: asyncio.Queue | None = asyncio.Queue() if loop is not None else None
        self._finished = threading.Event()
        self._cancelled = threading.Event()
        self._samples: list[Sample] | None = None
        self._error: TextgenError | None = None
        self._started = time.monotonic()
        n = request.num_samples
        self.decoders = [tokenizer.decoder(seed_ids, request.seed) for _ in range(n)]
        self.texts, self.counts, self.emitted = [""] * n, [0] * n, [0] * n
        self.before = [0] * n  # text length at the Generator's last chunk end: find_end's `before`
        self.ended: list[str | None] = [None] * n
        self.produced = 0  # tokens generated per sample since the request started
        self._tables: dict[int, np.ndarray] = {}  # Generator chunk start -> its (CHUNK, num_samples) uniforms
        self._longest_stop = max((len(s) for s in request.stop), default=0)

    # ------------------------------------------------------------------ for callers

    async def events(self) -> AsyncIterator[dict]:
        """The job's events, in order; iterate on the asyncio loop that was running at submit()."""
        if self._queue is None:
            raise UsageError("events() needs the asyncio loop that was running when the job was submitted; "
                             "use result() from a thread")
        try:
            while True:
                event = await self._queue.get()
                if event is None:  # cancelled: the events end without a last event
                    return
                yield event
                if event["type"] in ("done", "error"):
                    return
        finally:
            if not self._finished.is_set():
                self.cancel()  # the consumer went away: free the rows

    def result(self, timeout: float | None = None) -> list[Sample]:
        """Block until the job ends; its samples, or the engine's one-line error raised."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"the job did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._samples

    def cancel(self) -> None:
        """Ask the engine to drop this job's rows at its next chunk; its events then end."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    # ------------------------------------------------------------------ for the engine's worker

    def live_samples(self) -> list[int]:
        return [i for i, end in enumerate(self.ended) if end is None]

    def table_starts(self, n: int) -> list[int]:
        """The Generator chunk starts the next n tokens draw from whose tables this job has not drawn."""
        if not self.request.sampler.stochastic or n < 1:
            return []
        starts, position = [], self.produced
        while position < self.produced + n:
            start = generator_chunk_start(position)
            starts.append(start)
            position = start + (loops.FIRST_CHUNK if start == 0 else loops.CHUNK)
        return [start for start in starts if start not in self._tables]

    def keep_table(self, start: int, table: np.ndarray) -> None:
        """Keep the uniforms table of the Generator chunk at `start`; tables behind the job are dropped."""
        self._tables = {s: t for s, t in self._tables.items() if s >= generator_chunk_start(self.produced)}
        self._tables[start] = table

    def uniforms(self, n: int) -> np.ndarray:
        """(n, num_samples) uniform numbers for the next n tokens, as the Generator draws them."""
        out = np.zeros((n, self.request.num_samples), np.float32)
        if not self.request.sampler.stochastic:
            return out
        draw_tables([self], n)  # what a batch's draw_tables did not draw in advance (nothing, in the engine)
        t = 0
        while t < n:  # a run of tokens per Generator chunk the window touches, copied as one slice
            position = self.produced + t
            start = generator_chunk_start(position)
            end = start + (loops.FIRST_CHUNK if start == 0 else loops.CHUNK)
            take = min(n - t, end - position)
            out[t:t + take] = self._tables[start][position - start:position - start + take]
            t += take
        return out

    def advance(self, tokens: dict[int, np.ndarray]) -> None:
        """Take the next tokens of each live sample (sample -> ids), find ends, post text events."""
        if self._finished.is_set():  # ended meanwhile (stop() gave up waiting for the worker)
            return
        request = self.request
        take = min(len(next(iter(tokens.values()))), request.length - self.produced) if tokens else 0
        self.produced += take
        at_generator_end = (self.produced == request.length
                            or generator_chunk_start(self.produced) == self.produced)
        for i, ids in tokens.items():
            self.texts[i] += self.decoders[i].push(ids[:take])
            self.counts[i] += take
            self._find_end(i, at_generator_end)
        for i in self.live_samples():
            if self.produced >= request.length:
                self.ended[i] = "length"
        for i in tokens if tokens else range(request.num_samples):
            self._emit(i)
        if all(end is not None for end in self.ended):
            self._finish()

    def _find_end(self, i: int, at_generator_end: bool) -> None:
        request = self.request
        if not request.stop and not request.end_at_sentence:
            return
        cut = find_end(self.texts[i], self.before[i], self.counts[i], self.decoders[i], request)
        if cut is not None and (at_generator_end or cut[0] <= len(self.texts[i]) - self._longest_stop):
            self.texts[i] = self.texts[i][:cut[0]]
            self.counts[i] = tokens_within(self.decoders[i], cut[0], self.counts[i])
            self.ended[i] = cut[1]
        elif at_generator_end:
            self.before[i] = len(self.texts[i])

    def _emit(self, i: int) -> None:
        """Post the text of sample i that no later end can take back."""
        request, text = self.request, self.texts[i]
        safe = len(text)
        if self.ended[i] is None:
            safe -= max(self._longest_stop - 1, 0)
            if (request.stop or request.end_at_sentence) and self.counts[i] < request.min_length:
                safe = self.emitted[i]  # an end may yet be found anywhere after the minimum length
        if safe > self.emitted[i]:
            self._post({"type": "text", "sample": i, "text": text[self.emitted[i]:safe]})
            self.emitted[i] = safe

    def _finish(self) -> None:
        self._samples = [Sample(t, c, e) for t, c, e in zip(self.texts, self.counts, self.ended)]
        self._post({"type": "done", "seconds": time.monotonic() - self._started,
                    "samples": [{"text": s.text, "tokens": s.tokens, "stopped_by": s.stopped_by}
                                for s in self._samples]})
        self._finished.set()

    def fail(self, message: str) -> None:
        """End the job with a one-line error."""
        if self._finished.is_set():
            return
        self._error = GenerationFailed(message)
        self._post({"type": "error", "error": message})
        self._finished.set()

    def drop(self) -> None:
        """End a cancelled job: its events stop, result() raises JobCancelled."""
        if self._finished.is_set():
            return
        self._error = JobCancelled("the request was cancelled before it finished")
        self._post(None)
        self._finished.set()

    def _post(self, event) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._cancelled.set()


def draw_tables(jobs: list[Job], n: int) -> None:
    """Draw the uniforms tables the jobs' next n tokens need, one compiled call per sample count."""
    wanted: dict[int, list[tuple[Job, int]]] = {}
    for job in jobs:
        for start in job.table_starts(n):
            wanted.setdefault(job.request.num_samples, []).append((job, start))
    for samples, pairs in wanted.items():
        tables = loops.uniforms_many(np.array([job.request.random_seed for job, _ in pairs], np.int64),
                                     np.array([start for _, start in pairs], np.int64), samples).numpy()
        for (job, start), table in zip(pairs, tables):
            job.keep_table(start, table)
