"""Dropping results the fold cannot use: the batch goes back on the task
queue first, then the leases are marked discarded with the reason (in this
order: a crash in between re-queues twice, never zero times; the extra copy
is dropped as a duplicate, docs/architecture.md#exactly-once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.fold.outcomes import FoldOutcome
from chalicelib.store.leases import LeaseRecords
from chalicelib.store.queues import TaskQueue
from chalicelib.store.stats import Counters

if TYPE_CHECKING:
    from chalicelib.fold.vetting import Screened

Discarded = tuple[int, int, list[str]]  # (epoch, batch, lease ids)


class Discards:
    def __init__(self, tasks: TaskQueue, leases: LeaseRecords, counters: Counters):
        self.tasks, self.leases, self.counters = tasks, leases, counters

    def drop(self, job_id: str, screened: "Screened") -> None:
        """What a screening could not use: duplicates counted, rejects discarded."""
        duplicates = screened.outcomes.count(FoldOutcome.DUPLICATE)
        if duplicates:
            self.counters.add(job_id, duplicates=duplicates)
        for reason, group in screened.rejected.items():
            self.discard(job_id, [(r.epoch, r.batch, [r.lease_id]) for r in group], reason)

    def discard(self, job_id: str, batches: list[Discarded], reason: FoldOutcome) -> None:
        """Re-queue the batches (one queue call per epoch), then mark their leases discarded."""
        for epoch in sorted({e for e, _, _ in batches}):
            self.tasks.enqueue(job_id, epoch, [b for e, b, _ in batches if e == epoch])
        self.mark(job_id, [lease_id for _, _, lease_ids in batches for lease_id in lease_ids], reason)

    def mark(self, job_id: str, lease_ids: list[str], reason: FoldOutcome) -> None:
        """Mark leases discarded with the reason, their batches not re-queued
        (another copy of the batch was taken), and count them."""
        moved = sum(
            self.leases.move(job_id, lease_id, ("leased", "completed"), "discarded", reason=reason.value)
            for lease_id in lease_ids
        )
        if moved:
            self.counters.add(job_id, **{f"discarded_{reason.value}": moved})
