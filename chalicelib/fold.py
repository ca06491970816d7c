"""The fold: turns completed tasks into new model versions.

Fed by the results FIFO queue, one message group per job, so at most one fold
of a job runs at a time while other jobs fold in parallel. Each message is
one completed task. Handling it:

1. settle: if META already holds a full update (a previous run crashed after
   recording it), fold it now; make sure the current epoch is queued.
2. duplicate? If its (epoch, batch) is already folded or already pending, or
   its lease was already discarded, drop it: that batch is accounted for.
   (A lease still marked "leased" is not a duplicate: `complete` moves it
   back when sending looked failed, though SQS may have taken the message.)
3. stale or invalid? (base version more than S versions behind, or a gradient
   that fails the size/finite/norm check): re-queue the batch as a new task,
   then mark the lease discarded. Re-queue first: a crash between the two
   re-queues twice (the copy is dropped in step 2 later) but never loses it.
4. otherwise add it to META's pending list (a write conditional on META's
   revision), and settle again.

Replicated jobs (BOINC-style, `replication.copies = 2`) put one more step
before pending: an accepted first copy waits in META's `awaiting` list while a
check task, pinned to the same version, goes back on the task queue. The
check's result joins the first copy in pending if a different volunteer
computed it and the two gradients agree within the job's tolerance; otherwise
both are discarded (the reason is recorded on their leases and counted) and
the batch is re-queued. Pending holds one copy per batch either way, so the
argument below is unchanged.

Folding an update reads the pending gradients, aggregates them with the job's
strategy, applies the numpy optimizer to version N, writes version N+1's
files to S3, and then advances META to N+1 in one write conditional on its
revision: that write empties pending and sets the pending batches' bits in
the epoch's folded bitmap. The fold log (FOLD and VER records) is written
after it (see jobstore.py). So:

- a batch is folded at most once: it enters pending only if META's bitmap
  (or an earlier epoch) does not already count it as folded, and only the
  conditional write that advances the version moves it from pending to the
  bitmap; the fold refuses a pending list that breaks this;
- a batch is folded at least once or re-queued: a result is deleted from the
  fold queue only after it is pending in META (or its batch re-queued), and
  pending results are folded before anything else happens to the job
  (one whose bytes are no longer those accepted, by SHA-256, because it was
  overwritten through its upload form or expired, is re-queued as in step 3);
- a crash between writing N+1's files and advancing META leaves META at N
  with the same pending list, so the retry writes the same bytes again
  (the fold is deterministic) and then commits; browsers are only ever
  pointed at versions META has reached, so no half-written version is served.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from chalicelib.epochs import queue_epoch
from chalicelib.errors import BadRequest, NotFound
from chalicelib.gradients import check_gradient
from chalicelib.jobstore import JobMeta, JobStore, Pending, StaleState, mark_folded
from chalicelib.objects import ObjectStore
from chalicelib.queues import TaskQueue
from chalicelib.spec import JobSpec
from chalicelib.versions import VersionStore

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Result:
    job: str
    epoch: int
    batch: int
    lease_id: str
    base_version: int
    key: str
    loss: float
    samples: int
    volunteer: str = ""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def relative_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """||a - b|| / max(||a||, ||b||) over all tensors: 0 for identical copies."""
    diff = np.sqrt(sum(float(np.sum((x.astype(np.float64) - y) ** 2)) for x, y in zip(a, b)))
    scale = max(np.sqrt(sum(float(np.sum(np.square(t, dtype=np.float64))) for t in g)) for g in (a, b))
    return float(diff / scale) if scale > 0 else 0.0


class Folder:
    def __init__(self, jobs: JobStore, versions: VersionStore, tasks: TaskQueue, objects: ObjectStore):
        self.jobs, self.versions, self.tasks, self.objects = jobs, versions, tasks, objects

    def handle(self, message: dict[str, Any]) -> str:
        """Process one completed task; returns what happened to it. Raises on
        AWS errors so the queue redelivers (every step is safe to repeat)."""
        result = Result(**message)
        for _ in range(MAX_ATTEMPTS):
            try:
                return self._handle(result)
            except StaleState:
                continue  # META moved under us (e.g. a pause): read it again
        raise RuntimeError(f"job {result.job}: META kept changing during {MAX_ATTEMPTS} attempts")

    def _handle(self, r: Result) -> str:
        try:
            meta, spec = self.jobs.meta(r.job), self.jobs.spec(r.job)
        except NotFound:
            return "gone"
        meta = self.settle(meta, spec)
        if ((r.epoch, r.batch) in meta.pending_pairs() or r.lease_id in {p.lease_id for p in meta.awaiting}
                or meta.is_folded(r.epoch, r.batch)
                or self.jobs.lease_state(r.job, r.lease_id) == "discarded"):
            self.jobs.count(r.job, duplicates=1)
            return "duplicate"
        first = next((p for p in meta.awaiting if (p.epoch, p.batch) == (r.epoch, r.batch)), None)
        if first is not None:
            return self._check_replica(r, first, meta, spec)
        reason, digest, _ = self._reject_reason(r, meta, spec)
        if reason:
            self._discard(r.job, r.epoch, r.batch, [r.lease_id], reason)
            return reason
        pending = Pending(r.epoch, r.batch, r.lease_id, r.key, r.base_version, r.loss, r.samples, r.volunteer,
                          digest)
        if spec.replicas > 1:
            # Queue the check first (pinned to this copy's version), then record
            # the copy as awaiting it: a crash in between queues a second check,
            # whose result is later dropped as a duplicate; none is ever missing.
            self.tasks.enqueue(r.job, r.epoch, [r.batch], pin=r.base_version)
            self.jobs.save(meta, replace(meta, awaiting=meta.awaiting + (pending,)))
            return "awaiting replica"
        return self._add_pending(meta, spec, pending, meta.awaiting)

    def _add_pending(self, meta: JobMeta, spec: JobSpec, pending: Pending, awaiting: tuple[Pending, ...]) -> str:
        meta = self.jobs.save(meta, replace(meta, pending=meta.pending + (pending,), awaiting=awaiting))
        before = meta.version
        meta = self.settle(meta, spec)
        return "folded" if meta.version > before else "pending"

    def _check_replica(self, r: Result, first: Pending, meta: JobMeta, spec: JobSpec) -> str:
        """The second copy of a replicated batch: the first goes on to pending
        if both agree within the job's tolerance. Otherwise both are discarded
        and the batch re-queued. META drops the first copy before the batch is
        re-queued: a crash in between leaves this result's message to come
        back, and it then starts the batch over as a first copy."""
        rest = tuple(p for p in meta.awaiting if p is not first)
        reason, _, second = self._reject_reason(r, meta, spec)
        if not reason and r.volunteer == first.volunteer:
            reason = "same_volunteer"
        elif not reason and r.base_version != first.base_version:
            reason = "replica_version"
        elif not reason:
            try:
                difference = relative_difference(self._load(spec, first.key, first.digest), second)
            except (BadRequest, NotFound):
                reason = "invalid"
            else:
                if difference > spec.replica_tolerance:
                    log.warning("job %s: %s-%s: volunteers %r and %r disagree (relative difference %.3g)",
                                r.job, r.epoch, r.batch, first.volunteer, r.volunteer, difference)
                    reason = "disagreement"
        if not reason:
            self.jobs.count(r.job, replicas_agreed=1)
            return self._add_pending(meta, spec, first, rest)
        self.jobs.save(meta, replace(meta, awaiting=rest))
        self._discard(r.job, r.epoch, r.batch, [first.lease_id, r.lease_id], reason)
        return reason

    def _discard(self, job: str, epoch: int, batch: int, lease_ids: list[str], reason: str) -> None:
        """Re-queue the batch as a new task, then mark its leases discarded
        (in this order: a crash in between re-queues twice, never zero times)."""
        self.tasks.enqueue(job, epoch, [batch])
        moved = sum(self.jobs.move_lease(job, lease_id, ("leased", "completed"), "discarded", reason=reason)
                    for lease_id in lease_ids)
        if moved:
            self.jobs.count(job, **{f"discarded_{reason}": moved})

    def _reject_reason(self, r: Result, meta: JobMeta, spec: JobSpec) -> tuple[str, str, list[np.ndarray]]:
        """Why the result cannot be used ("" if it can); if it can, the digest
        of the bytes that passed and the tensors they decode to."""
        if meta.version - r.base_version > spec.staleness:
            return "stale", "", []
        try:
            data = self.objects.get(r.key)
            tensors = check_gradient(spec, data)
        except (BadRequest, NotFound) as err:
            log.warning("job %s: discarding %s-%s: %s", r.job, r.epoch, r.batch, err)
            return "invalid", "", []
        return "", _digest(data), tensors

    def _load(self, spec: JobSpec, key: str, digest: str) -> list[np.ndarray]:
        """An accepted gradient, only if its bytes are still those that were
        accepted: the upload form stays valid until the lease ends, so a
        volunteer could otherwise swap in another well-formed gradient."""
        data = self.objects.get(key)
        if digest and _digest(data) != digest:
            raise BadRequest(f"gradient {key} changed after it was accepted")
        return check_gradient(spec, data)

    def settle(self, meta: JobMeta, spec: JobSpec) -> JobMeta:
        """Fold a full update if META holds one; queue the epoch if it is not queued."""
        if meta.pending and (len(meta.pending) >= spec.gradients_per_update
                             or meta.folded_in_epoch + len(meta.pending) >= spec.num_batches):
            meta = self.fold(meta, spec)
        return queue_epoch(self.jobs, self.tasks, meta, spec)

    def fold(self, meta: JobMeta, spec: JobSpec) -> JobMeta:
        """Apply META's pending gradients to version N and commit version N+1."""
        if any(p.epoch != meta.epoch or meta.is_folded(p.epoch, p.batch) for p in meta.pending):
            raise RuntimeError(f"job {meta.job_id}: pending holds a batch that is not of epoch {meta.epoch} "
                               f"or already folded: {meta.pending}")
        gradients, spoiled = [], []
        for p in meta.pending:
            try:
                gradients.append(self._load(spec, p.key, p.digest))
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
        if after.folded_in_epoch >= spec.num_batches:
            epoch = meta.epoch + 1
            after = replace(after, folded=b"", epoch=epoch, status="finished" if epoch >= spec.epochs else meta.status)
        return self.jobs.commit_fold(meta, after, float(np.mean([p.loss for p in meta.pending])))

    def _drop_spoiled(self, meta: JobMeta, spoiled: list[Pending]) -> JobMeta:
        """A pending gradient that is no longer the one accepted (overwritten
        through its still-valid upload form, or expired from S3) must not be
        folded, nor wedge the job:
        re-queue its batch, mark its lease discarded, then take it out of pending.
        Re-queue first, as in step 3: a crash in between re-queues twice, never zero times."""
        for p in spoiled:
            self._discard(meta.job_id, p.epoch, p.batch, [p.lease_id], "invalid")
        return self.jobs.save(meta, replace(meta, pending=tuple(p for p in meta.pending if p not in spoiled)))
