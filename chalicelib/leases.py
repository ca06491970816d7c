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
from dataclasses import replace
from typing import Any, Callable

from chalicelib.errors import BadRequest, Conflict, NotFound, TooManyRequests
from chalicelib.gradients import check_gradient
from chalicelib.jobstore import JobStore
from chalicelib.objects import ObjectStore
from chalicelib.queues import ResultQueue, TaskQueue
from chalicelib.tokens import Lease, TokenSigner
from chalicelib.versions import batch_key, gradient_key, model_key

log = logging.getLogger(__name__)

# Visibility of a freshly received task until its job's own lease time is set.
FIRST_LOOK_SECONDS = 30
# An empty queue answers 204 with this Retry-After.
RETRY_AFTER_SECONDS = 5
# Receives tried per lease request while skipping tasks of paused or ended jobs.
MAX_SKIPS = 5


def token_margin(lease_seconds: int) -> float:
    return min(5.0, lease_seconds / 10)


class LeaseService:
    def __init__(self, jobs: JobStore, tasks: TaskQueue, results: ResultQueue, objects: ObjectStore,
                 signer: TokenSigner, wait_seconds: int, paused_retry_seconds: int, max_leases_per_volunteer: int,
                 clock: Callable[[], float] = time.time):
        self.jobs, self.tasks, self.results, self.objects = jobs, tasks, results, objects
        self.signer, self.wait_seconds, self.clock = signer, wait_seconds, clock
        self.paused_retry_seconds = paused_retry_seconds
        self.max_leases_per_volunteer = max_leases_per_volunteer

    def lease(self, volunteer: str) -> dict[str, Any] | None:
        """The next task of a running job, or None when there is none now."""
        for _ in range(MAX_SKIPS):
            task = self.tasks.receive(FIRST_LOOK_SECONDS, self.wait_seconds)
            if task is None:
                return None
            try:
                meta, spec = self.jobs.meta(task.job), self.jobs.spec(task.job)
            except NotFound:
                self.tasks.delete(task.receipt)  # the job was deleted: its tasks go with it
                continue
            if meta.status == "paused":
                self.tasks.hide(task.receipt, self.paused_retry_seconds)  # back when it ends
                continue
            if meta.status != "running" or meta.is_folded(task.epoch, task.batch):
                # A finished job, or a second copy of a task already folded.
                self.tasks.delete(task.receipt)
                continue
            now = self.clock()
            base = meta.version if task.pin is None else task.pin
            lease = Lease(job=task.job, epoch=task.epoch, batch=task.batch, base_version=base,
                          lease_id=secrets.token_hex(16), receipt=task.receipt,
                          expires=now + spec.lease_seconds - token_margin(spec.lease_seconds))
            if not self.jobs.claim_slot(volunteer, lease.lease_id, lease.expires, self.max_leases_per_volunteer):
                self.tasks.hide(task.receipt, 0)  # straight back for someone else
                raise TooManyRequests(f"volunteer {volunteer!r} already holds {self.max_leases_per_volunteer} "
                                      "leases; complete or let them expire first")
            self.tasks.hide(task.receipt, spec.lease_seconds)
            self.jobs.put_lease(task.job, lease.lease_id, task.epoch, task.batch, lease.expires, volunteer)
            self.jobs.count(task.job, leases=1)
            upload_key = gradient_key(task.job, task.epoch, task.batch, lease.lease_id)
            return {
                "job_id": task.job, "task_id": f"{task.epoch}-{task.batch}", "epoch": task.epoch,
                "batch": task.batch, "base_version": base,
                "model_url": self.objects.public_url(model_key(task.job, base)),
                "batch_url": self.objects.public_url(batch_key(task.job, task.batch)),
                "upload": self.objects.presigned_post(upload_key, spec.gradient_bytes, spec.lease_seconds),
                "upload_bytes": spec.gradient_bytes,
                "lease_token": self.signer.sign(lease), "lease_expires": lease.expires,
                "heartbeat_seconds": max(1, spec.lease_seconds // 3),
                "job": spec.public(),
            }
        return None

    def heartbeat(self, job: str, token: Any) -> dict[str, Any]:
        """Extend a live lease by the job's lease seconds; a fresh token comes back."""
        lease = self.signer.verify(token, job)
        spec = self.jobs.spec(job)
        self._require_state(lease, "leased")
        try:
            self.tasks.hide(lease.receipt, spec.lease_seconds)
        except self.tasks.errors as err:
            raise Conflict(f"the task can no longer be extended: {err}")
        renewed = replace(lease, expires=self.clock() + spec.lease_seconds - token_margin(spec.lease_seconds))
        if not self.jobs.move_lease(job, lease.lease_id, "leased", "leased", expires=renewed.expires):
            raise Conflict("lease was completed meanwhile")
        return {"lease_token": self.signer.sign(renewed), "lease_expires": renewed.expires}

    def complete(self, job: str, token: Any, loss: float) -> dict[str, Any]:
        """Accept an uploaded gradient: verify, hand it to the fold, retire the task.

        The lease moves leased -> completed before the result is sent, so a
        replayed or concurrent completion is refused (409). If sending fails,
        the lease is moved back so the volunteer may retry; the task message
        is deleted only after the result is safely in the fold queue.
        """
        lease = self.signer.verify(token, job)
        spec = self.jobs.spec(job)
        record = self._require_state(lease, "leased")
        key = gradient_key(job, lease.epoch, lease.batch, lease.lease_id)
        size = self.objects.size(key)
        if size is None:
            raise BadRequest("no gradient was uploaded for this lease; POST it to the upload form first")
        try:
            if size != spec.gradient_bytes:
                raise BadRequest(f"uploaded gradient is {size} bytes; the job's {spec.codec} gradients "
                                 f"are exactly {spec.gradient_bytes} bytes")
            check_gradient(spec, self.objects.get(key))
        except BadRequest:
            self.jobs.count(job, rejected=1)
            raise
        if not self.jobs.move_lease(job, lease.lease_id, "leased", "completed", loss=loss):
            raise Conflict("this lease was already completed")
        result = {"job": job, "epoch": lease.epoch, "batch": lease.batch, "lease_id": lease.lease_id,
                  "base_version": lease.base_version, "key": key, "loss": loss, "samples": spec.batch_size,
                  "volunteer": record["volunteer"]}
        try:
            self.results.send(result)
        except Exception:
            self.jobs.move_lease(job, lease.lease_id, "completed", "leased")
            raise
        try:
            self.tasks.delete(lease.receipt)
        except self.tasks.errors as err:
            # The task will reappear and be leased again; its second result is
            # then discarded as a duplicate by the fold. Nothing is lost.
            log.warning("could not delete task %s-%s of %s: %s", lease.epoch, lease.batch, job, err)
        self.jobs.release_slot(record["volunteer"], lease.lease_id)
        self.jobs.count(job, completed=1, samples=spec.batch_size)
        return {"accepted": True, "job_id": job, "epoch": lease.epoch, "batch": lease.batch}

    def _require_state(self, lease: Lease, state: str) -> dict[str, Any]:
        record = self.jobs.lease_record(lease.job, lease.lease_id)
        if record is None:
            raise NotFound("no such lease (was the job deleted?)")
        if record["state"] != state:
            raise Conflict(f"lease is already {record['state']}; each lease is completed once")
        return record
