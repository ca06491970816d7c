"""Which batches a fold may still take: the duplicate check every fold level
shares. A result is taken if its (epoch, batch) is already folded or pending
in META, its lease was discarded, or an earlier result of the same
invocation took its batch."""

from __future__ import annotations

from typing import Iterable

from chalicelib.domain.records import Result
from chalicelib.store.leases import LeaseRecords
from chalicelib.store.meta import JobMeta


class Claims:
    def __init__(self, meta: JobMeta, discarded: set[str]):
        self.meta, self.discarded = meta, discarded
        self.claimed = meta.pending_pairs()

    @classmethod
    def read(cls, meta: JobMeta, leases: LeaseRecords, results: Iterable[Result]) -> "Claims":
        """The claims on `results`' batches: META's, and their leases' states (one BatchGetItem per 100)."""
        states = leases.states(meta.job_id, [r.lease_id for r in results])
        return cls(meta, {lease_id for lease_id, state in states.items() if state == "discarded"})

    def taken(self, r: Result) -> bool:
        return (
            (r.epoch, r.batch) in self.claimed or self.meta.is_folded(r.epoch, r.batch) or r.lease_id in self.discarded
        )

    def take(self, r: Result) -> None:
        self.claimed.add((r.epoch, r.batch))

    def drop(self, results: Iterable[Result]) -> None:
        """Their leases were just discarded."""
        self.discarded.update(r.lease_id for r in results)
