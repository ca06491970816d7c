"""The fold: turns completed tasks into new model versions.

Fed by the results FIFO queue, one message group per job, so at most one fold
of a job runs at a time while other jobs fold in parallel. Each message is
one `Result`; an invocation handles its whole batch (up to 10), per job:

1. settle: if META already holds a full update (a previous run crashed after
   recording it), fold it now; make sure the current epoch is queued.
2. duplicates: results whose (epoch, batch) is already folded or pending, or
   whose lease was already discarded (one BatchGetItem for the batch), or
   whose batch an earlier result of the same invocation took, are dropped.
3. the rest are checked, their gradients read in parallel; stale or invalid
   ones are discarded (their batch re-queued first, fold/discards.py).
4. the accepted ones join META's pending list in one write conditional on
   META's revision, and settle folds every full update (fold/updates.py).

Replicated jobs put a check before pending (fold/replicas.py).

Why every batch is folded exactly once, or discarded and re-queued, whatever
crashes where: docs/architecture.md#exactly-once (the one place it is argued).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Sequence

from chalicelib.domain.errors import NotFound
from chalicelib.domain.records import PartialSum, Result
from chalicelib.domain.spec import JobSpec
from chalicelib.fold.claims import Claims
from chalicelib.fold.discards import Discards
from chalicelib.fold.outcomes import FoldOutcome
from chalicelib.fold.partials import PartialSums
from chalicelib.fold.replicas import Replicas
from chalicelib.fold.shares import over_share
from chalicelib.fold.stores import FoldStores
from chalicelib.fold.updates import Gradients, Updates
from chalicelib.fold.vetting import GradientVetting
from chalicelib.publish.status import StatusBoard
from chalicelib.store.meta import JobMeta, Pending, StaleState

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
# One attempt at a job's messages of one level: results at level 0, partial sums above (handle_batch groups them).
_Apply = Callable[[str, list[Any]], list[FoldOutcome]]


class Fold:
    def __init__(
        self,
        stores: FoldStores,
        vetting: GradientVetting,
        discards: Discards,
        updates: Updates,
        sums: PartialSums,
        replicas: Replicas,
        board: StatusBoard,
        distinct_addresses: bool = True,
    ):
        s = stores
        self.jobs, self.meta, self.leases, self.counters, self.tasks = s.jobs, s.meta, s.leases, s.counters, s.tasks
        self.vetting, self.discards, self.updates, self.sums = vetting, discards, updates, sums
        self.replicas, self.board = replicas, board
        # source addresses tell clients apart: one address's share of an update
        # is capped (fold/shares.py); off where every volunteer shares one (the local stack)
        self.distinct_addresses = distinct_addresses

    def handle(self, result: Result) -> FoldOutcome:
        """One result, as an invocation of its own."""
        return self.handle_batch([result])[0]

    def handle_batch(self, messages: Sequence[Result | PartialSum]) -> list[FoldOutcome]:
        """Process one invocation's messages (results, and partial sums of a
        job's groups), each job's in order. Raises on AWS errors so the queue
        redelivers the batch (every step is safe to repeat)."""
        self._count_reports(messages)
        outcomes: list[FoldOutcome | None] = [None] * len(messages)
        by_job: dict[tuple[str, int], list[int]] = {}
        for i, m in enumerate(messages):
            by_job.setdefault((m.job_id, m.level if isinstance(m, PartialSum) else 0), []).append(i)
        for (job_id, level), indexes in by_job.items():
            apply: _Apply = (self.apply_batch, self.combine_sums, self.apply_sums)[level]
            for _ in range(MAX_ATTEMPTS):
                try:
                    done = apply(job_id, [messages[i] for i in indexes])
                    break
                except StaleState:
                    continue  # META moved under us: read it again (what was done is safe to repeat)
            else:
                raise RuntimeError(f"job {job_id}: META kept changing during {MAX_ATTEMPTS} attempts")
            for i, outcome in zip(indexes, done):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def _count_reports(self, messages: Sequence[Result | PartialSum]) -> None:
        """What volunteers said of their results, summed per job once per
        invocation (a redelivered one counts again: statistics): the TF.js
        backend that computed each (`backend_<name>`) and the bytes their
        pages used (`bytes_down`, `bytes_up`, over `data_reports` results)."""
        counts: dict[str, Counter] = {}
        for m in messages:
            if not isinstance(m, Result):
                continue
            job = counts.setdefault(m.job_id, Counter())
            if m.backend:
                job[f"backend_{m.backend}"] += 1
            if m.data is not None:
                job.update(bytes_down=m.data.down, bytes_up=m.data.up, data_reports=1)
        for job_id, job in counts.items():
            if job:
                self.counters.add(job_id, **job)

    def _read(self, job_id: str) -> tuple[JobMeta, JobSpec] | None:
        """A fresh read of the job's META, and its spec; None if the job is gone or being deleted."""
        try:
            meta = self.meta.get(job_id)
            return (meta, self.jobs.spec(job_id)) if meta.status != "deleting" else None
        except NotFound:
            return None

    def apply_batch(self, job_id: str, results: list[Result]) -> list[FoldOutcome]:
        """One attempt at a job's results of one invocation, from a fresh read of META."""
        if not (job := self._read(job_id)):
            return [FoldOutcome.GONE] * len(results)
        meta, spec = job
        status = meta.status
        self.counters.seen(job_id, (r.volunteer_id for r in results), len(results))
        if spec.replication.copies > 1:  # first copies and their checks pair up one result at a time
            outcomes = [self.replicas.apply(r) for r in results]
            self._publish(status, self.meta.get(job_id), spec)
            return outcomes
        if spec.fold_groups > 1:  # one of the job's groups: its results are summed, not folded here
            return self.sums.gather(meta, spec, results)
        meta = self.updates.settle(meta, spec)
        claims = Claims.read(meta, self.leases, results)
        keep = len(results) <= self.vetting.parallelism(spec)  # decoded gradients fit the memory share
        screened = self.vetting.screen(results, meta, spec, claims, keep)
        screened.turn_away(
            over_share(meta.pending, [r for _, r, _, _ in screened.accepted], spec, self.distinct_addresses),
            FoldOutcome.OVER_SHARE,
        )
        self.discards.drop(job_id, screened)
        outcomes = screened.outcomes
        if screened.accepted:
            accepted = tuple(Pending.of(r, digest) for _, r, digest, _ in screened.accepted)
            gradients: Gradients = {r.lease_id: tensors for _, r, _, tensors in screened.accepted if keep}
            meta = self.updates.take(meta, spec, accepted, gradients)
            outcomes = self._folded_or_pending(meta, results, outcomes)
        self._publish(status, meta, spec)
        return outcomes

    def combine_sums(self, job_id: str, sums: list[PartialSum]) -> list[FoldOutcome]:
        """A middle group's level-1 sums, from a fresh read of META (fold/partials.py)."""
        job = self._read(job_id)
        return self.sums.combine(*job, sums) if job else [FoldOutcome.GONE] * len(sums)

    def apply_sums(self, job_id: str, sums: list[PartialSum]) -> list[FoldOutcome]:
        """One attempt at level-2 sums (the top level of a multi-level fold,
        fold/partials.py), from a fresh read of META: those that may be taken
        whole join pending in one conditional write."""
        if not (job := self._read(job_id)):
            return [FoldOutcome.GONE] * len(sums)
        meta, spec = job
        status = meta.status
        meta = self.updates.settle(meta, spec)
        claims = Claims.read(meta, self.leases, [r for s in sums for r in s.results])
        outcomes = self.sums.screen(meta, spec, sums, claims)
        accepted = [Pending.in_sum(r, s) for s, o in zip(sums, outcomes) if o is FoldOutcome.PENDING for r in s.results]
        if accepted:
            meta = self.updates.take(meta, spec, tuple(accepted), {})
            outcomes = self._folded_or_pending(meta, [s.results[0] for s in sums], outcomes)
        self._publish(status, meta, spec)
        return outcomes

    @staticmethod
    def _folded_or_pending(meta: JobMeta, results: Sequence[Result], outcomes: list[FoldOutcome]) -> list[FoldOutcome]:
        return [
            FoldOutcome.FOLDED if o is FoldOutcome.PENDING and meta.is_folded(r.epoch, r.batch) else o
            for o, r in zip(outcomes, results)
        ]

    def _publish(self, status_before: str, meta: JobMeta, spec: JobSpec) -> None:
        """The job's public status document (at once, and the job list, when its status changed)."""
        changed = meta.status != status_before
        self.board.publish(meta, spec, force=changed)
        if changed:
            self.board.publish_index()
