"""The fold: turns completed tasks into new model versions.

Fed by the results FIFO queue, one message group per job, so at most one fold
of a job runs at a time while other jobs fold in parallel. Each message is
one `Result`. Handling it:

1. settle: if META already holds a full update (a previous run crashed after
   recording it), fold it now; make sure the current epoch is queued.
2. duplicate? If its (epoch, batch) is already folded or pending, or its
   lease was already discarded, drop it: that batch is accounted for.
3. stale or invalid? Re-queue the batch as a new task, then mark the lease
   discarded.
4. otherwise add it to META's pending list (a write conditional on META's
   revision), and settle again.

Replicated jobs put a check before pending: an accepted first copy waits in
META's `awaiting` list while a check task, pinned to the same version, is
queued; the pair goes on only if a different volunteer's copy agrees.

Why every batch is folded exactly once, or discarded and re-queued, whatever
crashes where: docs/architecture.md#exactly-once (the one place it is argued).
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from chalicelib.errors import BadRequest, NotFound
from chalicelib.fold.commit import VersionCommit
from chalicelib.fold.outcomes import FoldOutcome
from chalicelib.fold.vetting import GradientVetting, relative_difference
from chalicelib.jobs.spec import JobSpec
from chalicelib.model.versions import VersionStore
from chalicelib.store.jobs import JobRecords
from chalicelib.store.leases import LeaseRecords
from chalicelib.store.meta import JobMeta, MetaStore, Pending, StaleState, mark_folded
from chalicelib.store.stats import Counters
from chalicelib.tasks.epochs import EpochQueue
from chalicelib.tasks.queues import TaskQueue
from chalicelib.tasks.records import Result

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5


class Fold:
    def __init__(self, jobs: JobRecords, meta: MetaStore, leases: LeaseRecords, counters: Counters,
                 versions: VersionStore, tasks: TaskQueue, epochs: EpochQueue, vetting: GradientVetting,
                 commit: VersionCommit):
        self.jobs, self.meta, self.leases, self.counters = jobs, meta, leases, counters
        self.versions, self.tasks, self.epochs, self.vetting, self.committer = versions, tasks, epochs, vetting, commit

    def handle(self, result: Result) -> FoldOutcome:
        """Process one completed task. Raises on AWS errors so the queue
        redelivers (every step is safe to repeat)."""
        for _ in range(MAX_ATTEMPTS):
            try:
                return self.apply(result)
            except StaleState:
                continue  # META moved under us (e.g. a pause): read it again
        raise RuntimeError(f"job {result.job_id}: META kept changing during {MAX_ATTEMPTS} attempts")

    def apply(self, r: Result) -> FoldOutcome:
        """One attempt at handling a result, from a fresh read of META."""
        try:
            meta, spec = self.meta.get(r.job_id), self.jobs.spec(r.job_id)
        except NotFound:
            return FoldOutcome.GONE
        meta = self.settle(meta, spec)
        if ((r.epoch, r.batch) in meta.pending_pairs() or r.lease_id in {p.lease_id for p in meta.awaiting}
                or meta.is_folded(r.epoch, r.batch)
                or self.leases.state(r.job_id, r.lease_id) == "discarded"):
            self.counters.add(r.job_id, duplicates=1)
            return FoldOutcome.DUPLICATE
        first = next((p for p in meta.awaiting if (p.epoch, p.batch) == (r.epoch, r.batch)), None)
        if first is not None:
            return self._check_replica(r, first, meta, spec)
        reason, digest, _ = self.vetting.reject(r, meta, spec)
        if reason:
            self.discard(r.job_id, r.epoch, r.batch, [r.lease_id], reason)
            return reason
        pending = Pending(**{**r.__dict__, "digest": digest})
        if spec.replication.copies > 1:
            # Queue the check first (pinned to this copy's version), then record
            # the copy as awaiting it: a crash in between queues a second check,
            # whose result is later dropped as a duplicate; none is ever missing.
            self.tasks.enqueue(r.job_id, r.epoch, [r.batch], pin=r.base_version)
            self.meta.save(meta, replace(meta, awaiting=meta.awaiting + (pending,)))
            return FoldOutcome.AWAITING_REPLICA
        return self._add_pending(meta, spec, pending, meta.awaiting)

    def _add_pending(self, meta: JobMeta, spec: JobSpec, pending: Pending,
                     awaiting: tuple[Pending, ...]) -> FoldOutcome:
        meta = self.meta.save(meta, replace(meta, pending=meta.pending + (pending,), awaiting=awaiting))
        before = meta.version
        meta = self.settle(meta, spec)
        return FoldOutcome.FOLDED if meta.version > before else FoldOutcome.PENDING

    def _check_replica(self, r: Result, first: Pending, meta: JobMeta, spec: JobSpec) -> FoldOutcome:
        """The second copy of a replicated batch: the first goes on to pending
        if both agree within the job's tolerance. Otherwise both are discarded
        and the batch re-queued. META drops the first copy before the batch is
        re-queued: a crash in between leaves this result's message to come
        back, and it then starts the batch over as a first copy."""
        rest = tuple(p for p in meta.awaiting if p is not first)
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
            return self._add_pending(meta, spec, first, rest)
        self.meta.save(meta, replace(meta, awaiting=rest))
        self.discard(r.job_id, r.epoch, r.batch, [first.lease_id, r.lease_id], reason)
        return reason

    def discard(self, job_id: str, epoch: int, batch: int, lease_ids: list[str], reason: FoldOutcome) -> None:
        """Re-queue the batch as a new task, then mark its leases discarded
        (in this order: a crash in between re-queues twice, never zero times)."""
        self.tasks.enqueue(job_id, epoch, [batch])
        moved = sum(self.leases.move(job_id, lease_id, ("leased", "completed"), "discarded", reason=reason.value)
                    for lease_id in lease_ids)
        if moved:
            self.counters.add(job_id, **{f"discarded_{reason.value}": moved})

    def settle(self, meta: JobMeta, spec: JobSpec) -> JobMeta:
        """Fold a full update if META holds one; queue the epoch if it is not queued."""
        if meta.pending and (len(meta.pending) >= spec.gradients_per_update
                             or meta.folded_in_epoch + len(meta.pending) >= spec.dataset.batches):
            meta = self.update(meta, spec)
        return self.epochs.queue(meta, spec)

    def update(self, meta: JobMeta, spec: JobSpec) -> JobMeta:
        """Apply META's pending gradients to version N and commit version N+1."""
        if any(p.epoch != meta.epoch or meta.is_folded(p.epoch, p.batch) for p in meta.pending):
            raise RuntimeError(f"job {meta.job_id}: pending holds a batch that is not of epoch {meta.epoch} "
                               f"or already folded: {meta.pending}")
        gradients, spoiled = [], []
        for p in meta.pending:
            try:
                gradients.append(self.vetting.load(spec, p.key, p.digest))
            except (BadRequest, NotFound) as err:
                log.warning("job %s: pending %s-%s spoiled: %s", meta.job_id, p.epoch, p.batch, err)
                spoiled.append(p)
        if spoiled:
            return self._drop_spoiled(meta, spoiled)
        combined = spec.build_strategy().aggregate(gradients)
        weights = self.versions.read_weights(meta.job_id, meta.version, spec)
        state = self.versions.read_state(meta.job_id, meta.version, spec)
        new_weights, new_state = spec.build_optimizer().apply(weights, combined, state)
        self.versions.write(meta.job_id, meta.version + 1, spec, new_weights, new_state)

        after = replace(meta, version=meta.version + 1, pending=(), folded_total=meta.folded_total + len(meta.pending),
                        folded=mark_folded(meta.folded, (p.batch for p in meta.pending)))
        if after.folded_in_epoch >= spec.dataset.batches:
            epoch = meta.epoch + 1
            after = replace(after, folded=b"", epoch=epoch, status="finished" if epoch >= spec.epochs else meta.status)
        return self.committer.commit(meta, after, float(np.mean([p.loss for p in meta.pending])))

    def _drop_spoiled(self, meta: JobMeta, spoiled: list[Pending]) -> JobMeta:
        """A pending gradient that is no longer the one accepted (overwritten
        through its still-valid upload form, or expired from S3) must not be
        folded, nor wedge the job: re-queue its batch, mark its lease
        discarded, then take it out of pending (re-queue first, as in step 3)."""
        for p in spoiled:
            self.discard(meta.job_id, p.epoch, p.batch, [p.lease_id], FoldOutcome.INVALID)
        return self.meta.save(meta, replace(meta, pending=tuple(p for p in meta.pending if p not in spoiled)))
