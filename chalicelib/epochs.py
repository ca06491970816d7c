"""Queuing an epoch's tasks: once per epoch, in a shuffled order.

Called when a job starts and by every fold. The tasks are sent before META
records the epoch as queued, so a crash in between queues some tasks twice
and never zero times; a duplicate task is harmless because its batch is
folded at most once (see fold.py).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from chalicelib.jobstore import JobMeta, JobStore
from chalicelib.queues import TaskQueue
from chalicelib.spec import JobSpec


def batch_order(spec: JobSpec, epoch: int) -> list[int]:
    """A fixed permutation per (job seed, epoch): reruns queue the same order."""
    return [int(b) for b in np.random.default_rng([spec.seed, epoch]).permutation(spec.num_batches)]


def queue_epoch(jobs: JobStore, tasks: TaskQueue, meta: JobMeta, spec: JobSpec) -> JobMeta:
    """Queue the current epoch's tasks unless that was done already."""
    if meta.status not in ("running", "paused") or meta.queued_epoch >= meta.epoch or meta.epoch >= spec.epochs:
        return meta
    tasks.enqueue(meta.job_id, meta.epoch, batch_order(spec, meta.epoch))
    return jobs.save(meta, replace(meta, queued_epoch=meta.epoch))
