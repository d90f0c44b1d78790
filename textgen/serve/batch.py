"""The rows stepping together in the batch engine: their states, options and random numbers.

A `RowBatch` holds one row per live sample of its jobs, in the stepper's float32 layout,
and runs them through the Generator's per-row compiled loop (`Generator.row_sample_loop`)
one chunk at a time. Between chunks rows leave (a sample ended, a job was cancelled) and
rows join (a new job's samples, primed from its seed), by gathering and concatenating the
states, so no step is spent on a finished row. The batch is padded with copies of its first
row to a power of two, so the compiled loop (XLA compiles one program per shape) sees a
handful of batch sizes instead of every count from 1 to max_batch: on 64 staggered requests
of mixed lengths that ran 3x faster than compiling each exact size (measured). The Generator's float32
stepper, the one used here, keeps the batch on axis 0 of every state tensor.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from textgen.generation import loops
from textgen.generation.samplers import GreedySampler, RandomSampler, TopKSampler, TopPSampler
from textgen.serve.job import Job, draw_tables

SERVED_SAMPLERS = (GreedySampler, RandomSampler, TopKSampler, TopPSampler)
MIN_BUCKET = 4  # the smallest padded batch; below it a step costs about the same for any size


def bucket(rows: int) -> int:
    """The padded batch size for `rows` rows: the next power of two, at least MIN_BUCKET."""
    return max(MIN_BUCKET, 1 << max(rows - 1, 0).bit_length())


def warm_up(generator, max_batch: int, chunk: int) -> None:
    """Compile, before the first request, what the engine calls for every padded batch size up to max_batch.

    XLA compiles one program per shape, about 0.7 s each; without this the first burst of
    requests waits for several compiles (measured: 1.2 s instead of 0.4 s for 64 requests).
    """
    vocab = generator.tokenizer.vocab_size
    loop = generator.row_sample_loop(penalised=False)
    loops.uniforms_many(np.zeros([1], np.int64), np.zeros([1], np.int64), 1)
    rows = 1
    while rows <= bucket(max_batch):
        states = generator.prime_states([np.zeros(2, np.int32)] * rows)  # prime pads rows to a power of two
        if rows >= MIN_BUCKET:
            values = {"temperature": tf.ones([rows]), "top_k": tf.zeros([rows], tf.int32), "top_p": tf.ones([rows])}
            loop(states, tf.zeros([rows], tf.int32), tf.zeros([rows, vocab], tf.bool), tf.constant(chunk, tf.int32),
                 tf.zeros([chunk, rows]), tf.ones([rows]), values)
        rows *= 2


def row_options(job: Job) -> tuple[float, int, float, float]:
    """(temperature, top_k, top_p, penalty) of a job's rows as the per-row sampler reads them."""
    sampler = job.request.sampler
    return (sampler.temperature, getattr(sampler, "top_k", 0), getattr(sampler, "top_p", 1.0),
            job.request.repetition_penalty)


class RowBatch:
    """Rows of one or more jobs that step together; `key` says which jobs may join (see `BatchEngine`)."""

    def __init__(self, generator, key=None):
        self.generator, self.key = generator, key
        self.stepper = generator.stepper
        self.rows: list[tuple[Job, int]] = []  # (job, sample index) of each real row, in batch order
        self.options = np.zeros((0, 4), np.float64)
        self.states = self.last = self.seen = None  # padded tensors, real rows first

    @property
    def jobs(self) -> list[Job]:
        return list(dict.fromkeys(job for job, _ in self.rows))

    def add(self, jobs: list[Job]) -> None:
        """Prime the jobs' seeds and append one row per sample (at the next chunk boundary)."""
        jobs = [job for job in jobs if job.labels is None] + [job for job in jobs if job.labels is not None]
        counts = [job.request.num_samples for job in jobs]
        states = self._prime(jobs)
        seen = np.zeros((sum(counts), self.generator.tokenizer.vocab_size), bool)
        last = np.zeros([sum(counts)], np.int32)
        row = 0
        for job, n in zip(jobs, counts):
            seen[row:row + n, np.unique(job.seed_ids)] = True
            last[row:row + n] = job.seed_ids[-1]
            row += n
        self._set(self._real(self.states), states, self._real(self.last), tf.constant(last),
                  self._real(self.seen), tf.constant(seen))
        self.rows += [(job, i) for job, n in zip(jobs, counts) for i in range(n)]
        self.options = np.concatenate([self.options] + [np.tile(row_options(job), (n, 1))
                                                        for job, n in zip(jobs, counts)])

    def _prime(self, jobs: list[Job]):
        """The states of the jobs' rows (jobs without labels come first, as `add` orders them).

        A job without labels primes its seed once for all its samples (every row starts as
        `any`); a job with labels primes a row per sample under that sample's own label vector,
        since a job's samples may have different labels. Each kind is one priming call.
        """
        plain = [job for job in jobs if job.labels is None]
        labelled = [job for job in jobs if job.labels is not None]
        parts = []
        if plain:
            parts.append(tf.nest.map_structure(
                lambda s: tf.repeat(s, [job.request.num_samples for job in plain], axis=0),
                self.generator.prime_states([job.seed_ids for job in plain])))
        if labelled:
            seeds = [job.seed_ids for job in labelled for _ in range(job.request.num_samples)]
            parts.append(self.generator.prime_states(seeds, labels=np.concatenate([job.labels for job in labelled])))
        if len(parts) == 1:
            return parts[0]
        return tf.nest.map_structure(lambda a, b: tf.concat([a, b], 0), *parts)

    def _real(self, tensors):
        """The real rows of padded tensors (None when the batch is empty)."""
        if tensors is None or not self.rows:
            return None
        return self._gather(tensors, np.arange(len(self.rows)))

    @staticmethod
    def _gather(tensors, index):
        return tf.nest.map_structure(lambda s: tf.gather(s, index), tensors)

    def _set(self, states, new_states, last, new_last, seen, new_seen):
        if states is None:
            self.states, self.last, self.seen = new_states, new_last, new_seen
            return
        self.states = tf.nest.map_structure(lambda a, b: tf.concat([a, b], 0), states, new_states)
        self.last, self.seen = tf.concat([last, new_last], 0), tf.concat([seen, new_seen], 0)

    def keep(self, wanted: list[int]) -> None:
        """Keep only rows `wanted` (indices into the real rows, in order)."""
        if len(wanted) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in wanted]
        self.options = self.options[wanted]
        if not wanted:
            self.states = self.last = self.seen = None
            return
        index = np.asarray(wanted, np.int32)
        self.states, self.last, self.seen = (self._gather(t, index) for t in (self.states, self.last, self.seen))

    def run(self, chunk: int) -> None:
        """Step every row `chunk` tokens and hand each job its samples' tokens."""
        real = len(self.rows)
        size = bucket(real)
        index = np.concatenate([np.arange(real), np.zeros(size - real, np.int64)]).astype(np.int32)
        states, last, seen = (self._gather(t, index) for t in (self.states, self.last, self.seen))
        options = self.options[index]
        uniforms = np.zeros((chunk, size), np.float32)
        jobs = self.jobs
        draw_tables(jobs, chunk)
        tables = {job: job.uniforms(chunk) for job in jobs}
        for r, (job, sample) in enumerate(self.rows):
            uniforms[:, r] = tables[job][:, sample]
        penalised = bool(np.any(options[:, 3] != 1.0))
        values = {"temperature": tf.constant(options[:, 0], tf.float32),
                  "top_k": tf.constant(options[:, 1].astype(np.int32)),
                  "top_p": tf.constant(options[:, 2], tf.float32)}
        loop = self.generator.row_sample_loop(penalised)
        tokens, states, last, seen = loop(states, last, seen, tf.constant(chunk, tf.int32), tf.constant(uniforms),
                                          tf.constant(options[:, 3], tf.float32), values)
        self.states, self.last, self.seen = states, last, seen
        tokens = tokens.numpy()[:chunk].T
        by_job: dict[Job, dict[int, np.ndarray]] = {}
        for r, (job, sample) in enumerate(self.rows):
            by_job.setdefault(job, {})[sample] = tokens[r]
        for job, samples in by_job.items():
            job.advance(samples)
        # The padding rows stay at the end of the tensors; every later use gathers real rows by index.
        self.keep([r for r, (job, sample) in enumerate(self.rows)
                   if not job.finished and job.ended[sample] is None])
