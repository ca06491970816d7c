"""Task leases: hand a task to a volunteer, extend it, accept its result.

An SQS receive is the lease: the task message stays invisible for the job's
lease seconds, and if the volunteer vanishes it becomes visible again and
goes to someone else. The volunteer holds a signed token, never the bare SQS
receipt handle. Tokens expire a margin before the message reappears, so two
volunteers never hold a valid token for the same delivery.
"""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from chalicelib.errors import BadRequest, Conflict, NotFound, TooManyRequests
from chalicelib.model.gradients import check_gradient
from chalicelib.model.keys import batch_key, gradient_key, model_key
from chalicelib.store.jobs import JobRecords
from chalicelib.store.leases import LeaseRecord, LeaseRecords
from chalicelib.store.meta import MetaStore
from chalicelib.store.objects import ObjectStore
from chalicelib.store.stats import Counters
from chalicelib.store.volunteers import VolunteerSlots
from chalicelib.tasks.queues import ResultQueue, TaskQueue
from chalicelib.tasks.records import Lease, Result
from chalicelib.tasks.tokens import TokenSigner

log = logging.getLogger(__name__)

# Visibility of a freshly received task until its job's own lease time is set.
FIRST_LOOK_SECONDS = 30
# An empty queue answers 204 with this Retry-After.
RETRY_AFTER_SECONDS = 5
# Receives tried per lease request while skipping tasks of paused or ended jobs.
MAX_SKIPS = 5


def token_margin(lease_seconds: int) -> float:
    return min(5.0, lease_seconds / 10)


@dataclass(frozen=True)
class LeasePolicy:
    """The deployment's lease settings (chalicelib/config.py)."""

    wait_seconds: int  # SQS long-poll per receive
    paused_retry_seconds: int  # a paused job's task met by a lease is hidden this long
    max_leases_per_volunteer: int


class LeaseService:
    def __init__(self, jobs: JobRecords, meta: MetaStore, leases: LeaseRecords, slots: VolunteerSlots,
                 counters: Counters, tasks: TaskQueue, results: ResultQueue, objects: ObjectStore,
                 signer: TokenSigner, policy: LeasePolicy, clock: Callable[[], float] = time.time):
        self.jobs, self.meta, self.leases, self.slots, self.counters = jobs, meta, leases, slots, counters
        self.tasks, self.results, self.objects = tasks, results, objects
        self.signer, self.policy, self.clock = signer, policy, clock

    def lease(self, volunteer_id: str) -> dict[str, Any] | None:
        """The next task of a running job, or None when there is none now."""
        for _ in range(MAX_SKIPS):
            task = self.tasks.receive(FIRST_LOOK_SECONDS, self.policy.wait_seconds)
            if task is None:
                return None
            try:
                meta, spec = self.meta.get(task.job_id), self.jobs.spec(task.job_id)
            except NotFound:
                self.tasks.delete(task.receipt)  # the job was deleted: its tasks go with it
                continue
            if meta.status == "paused":
                self.tasks.hide(task.receipt, self.policy.paused_retry_seconds)  # back when it ends
                continue
            if meta.status != "running" or meta.is_folded(task.epoch, task.batch):
                # A finished job, or a second copy of a task already folded.
                self.tasks.delete(task.receipt)
                continue
            now = self.clock()
            base = meta.version if task.pin is None else task.pin
            lease = Lease(job_id=task.job_id, epoch=task.epoch, batch=task.batch, base_version=base,
                          lease_id=secrets.token_hex(16), receipt=task.receipt,
                          expires=now + spec.lease_seconds - token_margin(spec.lease_seconds))
            limit = self.policy.max_leases_per_volunteer
            if not self.slots.claim(volunteer_id, lease.lease_id, lease.expires, limit):
                self.tasks.hide(task.receipt, 0)  # straight back for someone else
                raise TooManyRequests(f"volunteer {volunteer_id!r} already holds {limit} "
                                      "leases; complete or let them expire first")
            self.tasks.hide(task.receipt, spec.lease_seconds)
            self.leases.put(task.job_id, lease.lease_id, task.epoch, task.batch, lease.expires, volunteer_id)
            self.counters.add(task.job_id, leases=1)
            upload_key = gradient_key(task.job_id, task.epoch, task.batch, lease.lease_id)
            return {
                "job_id": task.job_id, "task_id": f"{task.epoch}-{task.batch}", "epoch": task.epoch,
                "batch": task.batch, "base_version": base,
                "model_url": self.objects.public_url(model_key(task.job_id, base)),
                "batch_url": self.objects.public_url(batch_key(task.job_id, task.batch)),
                "upload": self.objects.presigned_post(upload_key, spec.gradient_bytes, spec.lease_seconds),
                "upload_bytes": spec.gradient_bytes,
                "lease_token": self.signer.sign(lease), "lease_expires": lease.expires,
                "heartbeat_seconds": max(1, spec.lease_seconds // 3),
                "spec": spec.public(),
            }
        return None

    def heartbeat(self, job_id: str, token: Any) -> dict[str, Any]:
        """Extend a live lease by the job's lease seconds; a fresh token comes back."""
        lease = self.signer.verify(token, job_id)
        spec = self.jobs.spec(job_id)
        self._require_state(lease, "leased")
        try:
            self.tasks.hide(lease.receipt, spec.lease_seconds)
        except self.tasks.errors as err:
            raise Conflict(f"the task can no longer be extended: {err}")
        renewed = replace(lease, expires=self.clock() + spec.lease_seconds - token_margin(spec.lease_seconds))
        if not self.leases.move(job_id, lease.lease_id, "leased", "leased", expires=renewed.expires):
            raise Conflict("lease was completed meanwhile")
        return {"lease_token": self.signer.sign(renewed), "lease_expires": renewed.expires}

    def complete(self, job_id: str, token: Any, loss: float) -> dict[str, Any]:
        """Accept an uploaded gradient: verify, hand it to the fold, retire the task.

        The lease moves leased -> completed before the result is sent, so a
        replayed or concurrent completion is refused (409). If sending fails,
        the lease is moved back so the volunteer may retry; the task message
        is deleted only after the result is safely in the fold queue.
        """
        lease = self.signer.verify(token, job_id)
        spec = self.jobs.spec(job_id)
        record = self._require_state(lease, "leased")
        key = gradient_key(job_id, lease.epoch, lease.batch, lease.lease_id)
        size = self.objects.size(key)
        if size is None:
            raise BadRequest("no gradient was uploaded for this lease; POST it to the upload form first")
        try:
            if size != spec.gradient_bytes:
                raise BadRequest(f"uploaded gradient is {size} bytes; the job's {spec.codec} gradients "
                                 f"are exactly {spec.gradient_bytes} bytes")
            check_gradient(spec, self.objects.get(key))
        except BadRequest:
            self.counters.add(job_id, rejected=1)
            raise
        if not self.leases.move(job_id, lease.lease_id, "leased", "completed", loss=loss):
            raise Conflict("this lease was already completed")
        samples = spec.dataset.batch_size
        try:
            self.results.send(Result.of(lease, key, loss, samples, record.volunteer_id))
        except Exception:
            self.leases.move(job_id, lease.lease_id, "completed", "leased")
            raise
        try:
            self.tasks.delete(lease.receipt)
        except self.tasks.errors as err:
            # The task will reappear and be leased again; its second result is
            # then discarded as a duplicate by the fold. Nothing is lost.
            log.warning("could not delete task %s-%s of %s: %s", lease.epoch, lease.batch, job_id, err)
        self.slots.release(record.volunteer_id, lease.lease_id)
        self.counters.add(job_id, completed=1, samples=samples)
        return {"accepted": True, "job_id": job_id, "epoch": lease.epoch, "batch": lease.batch}

    def _require_state(self, lease: Lease, state: str) -> LeaseRecord:
        record = self.leases.get(lease.job_id, lease.lease_id)
        if record is None:
            raise NotFound("no such lease (was the job deleted?)")
        if record.state != state:
            raise Conflict(f"lease is already {record.state}; each lease is completed once")
        return record
