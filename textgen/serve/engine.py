"""The batch engine: many requests' samples run as rows of one batch, in one background thread.

Requests arriving within `window_ms` of each other start together; later ones join the
running batch at the next chunk boundary (continuous batching), and a sample that ends
leaves it without stopping the others (textgen.serve.batch). Every row keeps its own
temperature, top-k, top-p, repetition penalty, length, stop strings and random seed, and
draws exactly the random numbers `Generator.run` would draw for its request, so a job's
samples equal `generator.run(request)` (textgen.serve.job explains how).

Transformer models step every row of a batch at one position (their key/value cache is
written at a single index), so a job joins only a batch at its own position: jobs that
start together with seeds of equal length share a batch, and the others run in batches of
their own, taking turns chunk by chunk. Recurrent and window models let any job join.
A conditioned model's rows each carry their own label vector in their states, so jobs of
different labels, and the samples of one job with several labels, share a batch like any others.

The engine runs the float32 stepper, which is what makes its output equal the Generator's
float32 output; it never blocks the caller: `submit` only validates and queues.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque

from textgen.errors import UsageError
from textgen.generation.request import Request
from textgen.serve.batch import SERVED_SAMPLERS, RowBatch, warm_up
from textgen.serve.job import GenerationFailed, Job, JobCancelled
from textgen.serve.worker import EngineThread, QueueFull

__all__ = ["BatchEngine", "GenerationFailed", "Job", "JobCancelled", "QueueFull"]

ENGINE_CHUNK = 16  # tokens per compiled call, how often rows join, leave and stream: 16 beat 32 and 64 (measured)


class BatchEngine(EngineThread):
    """Runs many requests' rows as one batch through the compiled generation loop, in one background thread.

    Args:
        generator: the loaded model's `Generator`.
        window_ms: how long an idle engine waits after a request for others to start with it.
        max_batch: the most rows (samples) stepped together; a larger request runs alone.
        max_queue: the most requests waiting to start; `submit` raises QueueFull beyond it.
        chunk: tokens per compiled call.
    """

    def __init__(self, generator, *, window_ms: float = 5.0, max_batch: int = 64, max_queue: int = 256,
                 chunk: int = ENGINE_CHUNK):
        if window_ms < 0 or max_batch < 1 or max_queue < 1 or chunk < 1:
            raise UsageError(f"the batch engine needs window_ms >= 0, max_batch >= 1, max_queue >= 1 and chunk >= 1, "
                             f"got {window_ms}, {max_batch}, {max_queue}, {chunk}")
        super().__init__()
        self.generator = generator
        self.window, self.max_batch, self.max_queue, self.chunk = window_ms / 1000.0, max_batch, max_queue, chunk
        # A transformer's rows step at one shared position: a batch is keyed by it, up to the
        # position from which every row steps alike (its context; never, with rotary positions).
        self._shared_position = _steps_one_position(generator)
        self._position_limit = getattr(generator.stepper, "position_limit", None)
        self._waiting: deque[Job] = deque()
        self._batches: list[RowBatch] = []

    thread_name = "textgen-batch-engine"

    def warm_up(self) -> None:
        """Compile the generation loop for every batch size the engine can run (seconds; call before serving)."""
        warm_up(self.generator, self.max_batch, self.chunk)

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop accepting jobs; with `drain` finish the accepted ones first, else cancel them."""
        thread = self._stop_thread(drain, timeout)
        if thread is None or thread.is_alive():  # never started, or still busy: end what is left
            with self._lock:
                jobs = list(self._waiting) + [job for batch in self._batches for job in batch.jobs]
                self._waiting.clear()
            for job in jobs:
                job.fail("the server stopped before the request finished") if drain else job.drop()

    def submit(self, request: Request) -> Job:
        """Validate `request` and queue it; returns at once. Thread-safe; callable from an asyncio loop."""
        if request.sampler.beam:
            raise UsageError("the server samples; beam search is not served")
        if not isinstance(request.sampler, SERVED_SAMPLERS):
            raise UsageError(f"the server serves greedy, random, top-k and top-p sampling, "
                             f"not {type(request.sampler).__name__}")
        self.generator.check(request)
        seed_ids, _ = self.generator.encode_seed(request.seed, request.strict)
        # As Generator.run reads labels: several labels of one group set the number of samples, and
        # the random numbers are drawn for that many rows, so the job holds the request so resolved.
        labels, rows = self.generator.label_vectors(request.labels, request.num_samples)
        if rows != request.num_samples:
            request = dataclasses.replace(request, num_samples=rows)
        return self._enqueue(lambda loop: Job(request, seed_ids, self.generator.tokenizer, loop, labels))

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        with self._lock:
            return len(self._waiting) + sum(len(batch.jobs) for batch in self._batches)

    # ------------------------------------------------------------------ the worker thread

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._batches and not self._stopping:
                    self._lock.wait()
                if self._stopping and (not self._drain or (not self._waiting and not self._batches)):
                    break
                if not self._batches:
                    self._gather_window()
                arrivals = list(self._waiting)
                self._waiting.clear()
            try:
                self._admit(arrivals)
                for batch in list(self._batches):
                    self._step(batch)
            except Exception as error:  # a bug of the engine's own: end what it touched, keep serving
                message = _one_line(error)
                for job in arrivals + [job for batch in self._batches for job in batch.jobs]:
                    job.fail(message)
                for batch in self._batches:
                    batch.keep([])
            with self._lock:
                self._batches = [batch for batch in self._batches if batch.rows]
        with self._lock:
            jobs = list(self._waiting) + [job for batch in self._batches for job in batch.jobs]
            self._waiting.clear()
            self._batches = []
        for job in jobs:
            job.drop()

    def _gather_window(self) -> None:
        """With the lock held and nothing running: wait until `window` passes without a new request."""
        count = -1
        while count != len(self._waiting) and sum(j.request.num_samples for j in self._waiting) < self.max_batch:
            count = len(self._waiting)
            deadline = time.monotonic() + self.window
            while time.monotonic() < deadline and len(self._waiting) == count and not self._stopping:
                self._lock.wait(deadline - time.monotonic())

    def _admit(self, jobs: list[Job]) -> None:
        """Put new jobs into batches whose rows they may share a step with; what does not fit waits."""
        left, joining = [], {}
        for job in jobs:
            if job.cancelled:
                job.drop()
            elif job.request.length == 0:
                job.advance({})
            elif (batch := self._batch_for(job, joining)) is None:
                left.append(job)
            else:
                joining.setdefault(batch, []).append(job)
        for batch, group in joining.items():
            try:
                batch.add(group)  # one priming call for the whole group
            except Exception:  # one request's failure must not stop the others: find it alone
                for job in group:
                    try:
                        batch.add([job])
                    except Exception as error:
                        job.fail(_one_line(error))
        with self._lock:
            self._waiting.extendleft(reversed(left))

    def _batch_for(self, job: Job, joining: dict[RowBatch, list[Job]]) -> RowBatch | None:
        """A batch `job` may join, counting the rows of the jobs already `joining` each batch."""
        key = self._position_key(len(job.seed_ids) - 1)
        rows = job.request.num_samples
        for batch in self._batches:
            incoming = sum(other.request.num_samples for other in joining.get(batch, ()))
            if batch.key == key and len(batch.rows) + incoming + rows <= self.max_batch:
                return batch
        if any(batch.key == key for batch in self._batches) and rows <= self.max_batch:
            return None  # a full batch at this position: wait for rows to leave
        batch = RowBatch(self.generator, key)
        with self._lock:
            self._batches.append(batch)
        return batch

    def _step(self, batch: RowBatch) -> None:
        """One chunk of `batch`; a failure ends every job in it with a one-line error."""
        gone = {job for job, _ in batch.rows if job.cancelled}
        if gone:
            for job in gone:
                job.drop()
            batch.keep([r for r, (job, _) in enumerate(batch.rows) if job not in gone])
        if not batch.rows:
            return
        try:
            batch.run(self.chunk)
        except Exception as error:
            message = _one_line(error)
            for job in batch.jobs:
                job.fail(message)
            batch.keep([])
            return
        if self._shared_position:
            batch.key = self._position_key(batch.key + self.chunk)

    def _position_key(self, position: int) -> int | None:
        """The key of a batch whose rows are at `position`: None where rows at any position mix."""
        if not self._shared_position:
            return None
        return position if self._position_limit is None else min(position, self._position_limit)


def _steps_one_position(generator) -> bool:
    """Whether the model's stepper steps all rows at one shared position (a transformer's cache)."""
    from textgen.models.transformer import TransformerStepper

    return isinstance(generator.stepper, TransformerStepper)


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"generation failed: {text[:300]}"
