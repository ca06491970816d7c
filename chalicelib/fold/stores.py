"""The records every step of the fold reads or moves, handed as one to the
steps that need them (the fold, its replica checks)."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.store.jobs import JobRecords
from chalicelib.store.leases import LeaseRecords
from chalicelib.store.meta import MetaStore
from chalicelib.store.queues import TaskQueue
from chalicelib.store.stats import Counters


@dataclass(frozen=True)
class FoldStores:
    jobs: JobRecords
    meta: MetaStore
    leases: LeaseRecords
    counters: Counters
    tasks: TaskQueue
