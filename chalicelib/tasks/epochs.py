"""Queuing an epoch's tasks: once per epoch, in a shuffled order.

Called when a job starts and by every fold. The tasks are sent before META
records the epoch as queued, so a crash in between queues some tasks twice
and never zero times; a duplicate task is harmless because its batch is
folded at most once (docs/architecture.md#exactly-once).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from chalicelib.jobs.spec import JobSpec
from chalicelib.store.meta import JobMeta, MetaStore
from chalicelib.tasks.queues import TaskQueue


def batch_order(spec: JobSpec, epoch: int) -> list[int]:
    """A fixed permutation per (job seed, epoch): reruns queue the same order."""
    return [int(b) for b in np.random.default_rng([spec.seed, epoch]).permutation(spec.dataset.batches)]


class EpochQueue:
    def __init__(self, meta: MetaStore, tasks: TaskQueue):
        self.meta, self.tasks = meta, tasks

    def queue(self, meta: JobMeta, spec: JobSpec) -> JobMeta:
        """Queue the current epoch's tasks unless that was done already."""
        if meta.status not in ("running", "paused") or meta.queued_epoch >= meta.epoch or meta.epoch >= spec.epochs:
            return meta
        self.tasks.enqueue(meta.job_id, meta.epoch, batch_order(spec, meta.epoch))
        return self.meta.save(meta, replace(meta, queued_epoch=meta.epoch))
