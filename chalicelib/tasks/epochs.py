"""Queuing an epoch's tasks, a bounded chunk at a time, in a shuffled order.

A job's epoch can hold 100,000 batches: more SendMessageBatch calls than one
request may make in API Gateway's 29 s or the fold in its minute. So each
call queues at most `chunk` tasks along the epoch's batch order and moves
META's `queue_cursor` past them; the fold calls again on every invocation
until the epoch is queued. Batches already folded or pending are skipped.

The tasks are sent before META records the cursor, so a crash in between
queues some tasks twice and never zero times; a duplicate task is harmless
because its batch is folded at most once (docs/architecture.md#exactly-once).
A paused job queues nothing; resuming goes on from META's cursor (its
queue kept the tasks queued before the pause), or queues the epoch again
from its start where the job's queue is gone (a teardown deletes them).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from chalicelib.domain.spec import JobSpec
from chalicelib.store.meta import JobMeta, MetaStore
from chalicelib.store.queues import TaskQueue

CHUNK = 1000  # tasks per call: 100 SendMessageBatch calls, 10 at a time


def batch_order(spec: JobSpec, epoch: int) -> list[int]:
    """A fixed permutation of the epoch's tasks per (job seed, epoch): reruns queue the same order."""
    return [int(b) for b in np.random.default_rng([spec.seed, epoch]).permutation(spec.tasks_per_epoch)]


class EpochQueue:
    def __init__(self, meta: MetaStore, tasks: TaskQueue, chunk: int = CHUNK, threads: int = 10):
        self.meta, self.tasks, self.chunk = meta, tasks, chunk
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="epoch-queue")
        self._orders: dict[tuple[str, int], list[int]] = {}

    def queue(self, meta: JobMeta, spec: JobSpec) -> JobMeta:
        """Queue the next chunk of the current epoch's tasks, if any are left to queue."""
        if meta.status != "running" or meta.queued_epoch >= meta.epoch or meta.epoch >= spec.epochs:
            return meta
        order = self._order(meta.job_id, spec, meta.epoch)
        end = min(len(order), meta.queue_cursor + self.chunk)
        taken = meta.pending_pairs()
        batches = [
            b
            for b in order[meta.queue_cursor : end]
            if not meta.is_folded(meta.epoch, b) and (meta.epoch, b) not in taken
        ]
        groups = [batches[i : i + 100] for i in range(0, len(batches), 100)]
        for sent in [self._pool.submit(self.tasks.enqueue, meta.job_id, meta.epoch, group) for group in groups]:
            sent.result()
        done = end >= len(order)
        return self.meta.save(
            meta, replace(meta, queue_cursor=0 if done else end, queued_epoch=meta.epoch if done else meta.queued_epoch)
        )

    def requeue(self, meta: JobMeta) -> JobMeta:
        """META set to queue the current epoch again from its start (on a
        resume that found the job's queue gone: folded and pending batches are skipped)."""
        return replace(meta, queued_epoch=min(meta.queued_epoch, meta.epoch - 1), queue_cursor=0)

    def _order(self, job_id: str, spec: JobSpec, epoch: int) -> list[int]:
        if (job_id, epoch) not in self._orders:
            self._orders = {(job_id, epoch): batch_order(spec, epoch)}  # one job's order at a time is plenty
        return self._orders[(job_id, epoch)]
