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

Replicated jobs put a check before pending: an accepted first copy waits in
its own item (store/awaiting.py) while a check task, pinned to the same
version, is queued; the pair goes on only if a different volunteer's copy agrees.

Why every batch is folded exactly once, or discarded and re-queued, whatever
crashes where: docs/architecture.md#exactly-once (the one place it is argued).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Sequence

from chalicelib.errors import BadRequest, NotFound
from chalicelib.fold.discards import Discards
from chalicelib.fold.outcomes import FoldOutcome
from chalicelib.fold.updates import Gradients, Updates
from chalicelib.fold.vetting import GradientVetting, relative_difference
from chalicelib.jobs.spec import JobSpec
from chalicelib.jobs.status import StatusBoard
from chalicelib.store.awaiting import AwaitingCopies
from chalicelib.store.jobs import JobRecords
from chalicelib.store.leases import LeaseRecords
from chalicelib.store.meta import JobMeta, MetaStore, Pending, StaleState
from chalicelib.store.stats import Counters
from chalicelib.tasks.queues import TaskQueue
from chalicelib.tasks.records import Result

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5


class Fold:
    def __init__(self, jobs: JobRecords, meta: MetaStore, leases: LeaseRecords, counters: Counters,
                 tasks: TaskQueue, vetting: GradientVetting, discards: Discards, updates: Updates, board: StatusBoard,
                 awaiting: AwaitingCopies):
        self.jobs, self.meta, self.leases, self.counters, self.awaiting = jobs, meta, leases, counters, awaiting
        self.tasks, self.vetting, self.discards, self.updates, self.board = tasks, vetting, discards, updates, board

    def handle(self, result: Result) -> FoldOutcome:
        """One result, as an invocation of its own."""
        return self.handle_batch([result])[0]

    def handle_batch(self, results: Sequence[Result]) -> list[FoldOutcome]:
        """Process one invocation's results, each job's in order. Raises on AWS
        errors so the queue redelivers the batch (every step is safe to repeat)."""
        outcomes: list[FoldOutcome | None] = [None] * len(results)
        by_job: dict[str, list[int]] = {}
        for i, r in enumerate(results):
            by_job.setdefault(r.job_id, []).append(i)
        for job_id, indexes in by_job.items():
            for _ in range(MAX_ATTEMPTS):
                try:
                    done = self.apply_batch(job_id, [results[i] for i in indexes])
                    break
                except StaleState:
                    continue  # META moved under us: read it again (what was done is safe to repeat)
            else:
                raise RuntimeError(f"job {job_id}: META kept changing during {MAX_ATTEMPTS} attempts")
            for i, outcome in zip(indexes, done):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def apply_batch(self, job_id: str, results: list[Result]) -> list[FoldOutcome]:
        """One attempt at a job's results of one invocation, from a fresh read of META."""
        try:
            meta, spec = self.meta.get(job_id), self.jobs.spec(job_id)
        except NotFound:
            return [FoldOutcome.GONE] * len(results)
        status = meta.status
        self.counters.seen(job_id, (r.volunteer_id for r in results), len(results))
        if spec.replication.copies > 1:  # first copies and their checks pair up one result at a time
            outcomes = [self._apply_one(r) for r in results]
            self._publish(status, self.meta.get(job_id), spec)
            return outcomes
        meta = self.updates.settle(meta, spec)
        discarded = {lease_id for lease_id, state in self.leases.states(
            job_id, [r.lease_id for r in results]).items() if state == "discarded"}
        outcomes: list[FoldOutcome] = [FoldOutcome.DUPLICATE] * len(results)
        claimed = meta.pending_pairs()
        fresh = [i for i, r in enumerate(results) if (r.epoch, r.batch) not in claimed
                 and not meta.is_folded(r.epoch, r.batch) and r.lease_id not in discarded]
        keep = len(fresh) <= self.vetting.parallelism(spec)  # decoded gradients fit the memory share
        verdicts = self.vetting.reject_all([results[i] for i in fresh], meta, spec, keep)
        accepted, rejected = [], {}
        gradients: Gradients = {}  # accepted in this invocation: checked moments ago
        for i, (reason, digest, tensors) in zip(fresh, verdicts):
            r = results[i]
            if (r.epoch, r.batch) in claimed:
                continue  # a second result for a batch of this invocation: a duplicate
            if reason:
                rejected.setdefault(reason, []).append(r)
                outcomes[i] = reason
                continue
            claimed.add((r.epoch, r.batch))
            accepted.append(Pending.of(r, digest))
            if keep:
                gradients[r.lease_id] = tensors
            outcomes[i] = FoldOutcome.PENDING
        duplicates = outcomes.count(FoldOutcome.DUPLICATE)
        if duplicates:
            self.counters.add(job_id, duplicates=duplicates)
        for reason, group in rejected.items():
            self.discards.discard(job_id, [(r.epoch, r.batch, [r.lease_id]) for r in group], reason)
        if accepted:
            joined = replace(meta, pending=meta.pending + tuple(accepted))
            # An update due now folds them and records the rest in one META
            # write; otherwise they are recorded as pending.
            meta = joined if self.updates.due(joined, spec) else self.meta.save(meta, joined)
            meta = self.updates.settle(meta, spec, gradients)
            outcomes = [FoldOutcome.FOLDED if o is FoldOutcome.PENDING and meta.is_folded(r.epoch, r.batch) else o
                        for o, r in zip(outcomes, results)]
        self._publish(status, meta, spec)
        return outcomes

    def _publish(self, status_before: str, meta: JobMeta, spec: JobSpec) -> None:
        """The job's public status document (at once, and the job list, when its status changed)."""
        changed = meta.status != status_before
        self.board.publish(meta, spec, force=changed)
        if changed:
            self.board.publish_index()

    def _apply_one(self, r: Result) -> FoldOutcome:
        """One result of a replicated job, from a fresh read of META."""
        meta, spec = self.meta.get(r.job_id), self.jobs.spec(r.job_id)
        meta = self.updates.settle(meta, spec)
        accounted = (r.epoch, r.batch) in meta.pending_pairs() or meta.is_folded(r.epoch, r.batch)
        first = None if accounted else self.awaiting.get(r.job_id, r.epoch, r.batch)
        if (accounted or (first is not None and first.lease_id == r.lease_id)
                or self.leases.state(r.job_id, r.lease_id) == "discarded"):
            self.counters.add(r.job_id, duplicates=1)
            return FoldOutcome.DUPLICATE
        if first is not None:
            return self._check_replica(r, first, meta, spec)
        reason, digest, _ = self.vetting.reject(r, meta, spec)
        if reason:
            self.discards.discard(r.job_id, [(r.epoch, r.batch, [r.lease_id])], reason)
            return reason
        # A first copy. Queue its check first (pinned to this copy's version),
        # then record the copy as awaiting it: a crash in between queues a second
        # check, whose result is later dropped as a duplicate; none is ever missing.
        self.tasks.enqueue(r.job_id, r.epoch, [r.batch], pin=r.base_version)
        self.awaiting.put(Pending.of(r, digest))
        return FoldOutcome.AWAITING_REPLICA

    def _add_pending(self, meta: JobMeta, spec: JobSpec, pending: Pending) -> FoldOutcome:
        meta = self.meta.save(meta, replace(meta, pending=meta.pending + (pending,)))
        before = meta.version
        meta = self.updates.settle(meta, spec)
        return FoldOutcome.FOLDED if meta.version > before else FoldOutcome.PENDING

    def _check_replica(self, r: Result, first: Pending, meta: JobMeta, spec: JobSpec) -> FoldOutcome:
        """The second copy of a replicated batch: the first goes on to pending
        if both agree within the job's tolerance, and its item is dropped after
        (a crash in between leaves a stale item behind a pending batch, which
        the duplicate check meets first). Otherwise both are discarded and the
        batch re-queued, the first copy dropped before: a crash in between
        leaves this result's message to come back, and it then starts the
        batch over as a first copy."""
        reason, _, second = self.vetting.reject(r, meta, spec)
        if not reason and r.volunteer_id == first.volunteer_id:
            reason = FoldOutcome.SAME_VOLUNTEER
        elif not reason and r.base_version != first.base_version:
            reason = FoldOutcome.REPLICA_VERSION
        elif not reason:
            try:
                difference = relative_difference(self.vetting.load(spec, first.key, first.digest), second)
            except (BadRequest, NotFound):
                reason = FoldOutcome.INVALID
            else:
                if difference > spec.replication.tolerance:
                    log.warning("job %s: %s-%s: volunteers %r and %r disagree (relative difference %.3g)",
                                r.job_id, r.epoch, r.batch, first.volunteer_id, r.volunteer_id, difference)
                    reason = FoldOutcome.DISAGREEMENT
        if not reason:
            self.counters.add(r.job_id, replicas_agreed=1)
            outcome = self._add_pending(meta, spec, first)
            self.awaiting.drop(first)
            return outcome
        self.awaiting.drop(first)
        self.discards.discard(r.job_id, [(r.epoch, r.batch, [first.lease_id, r.lease_id])], reason)
        return reason
