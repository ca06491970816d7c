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

from chalicelib.domain.errors import BadRequest, Conflict, NotFound, TooManyRequests
from chalicelib.domain.spec import DEFAULT_LEASE_SECONDS, JobSpec
from chalicelib.domain.gradients import check_gradient, digest
from chalicelib.domain.keys import batch_key, gradient_key, model_key
from chalicelib.store.jobs import JobRecords
from chalicelib.store.leases import LeaseRecord, LeaseRecords
from chalicelib.store.meta import JobMeta, MetaStore
from chalicelib.store.objects import ObjectStore
from chalicelib.store.rounds import RoundSeats
from chalicelib.store.stats import Counters
from chalicelib.store.volunteers import VolunteerSlots
from chalicelib.store.evaluations import Claim
from chalicelib.tasks.evaluations import REQUEUE_DELAY_SECONDS, Evaluations
from chalicelib.tasks.identities import Identities
from chalicelib.store.queues import ResultQueue, TaskQueue
from chalicelib.domain.records import DataUsed, Lease, Result, Task
from chalicelib.tasks.tokens import TokenSigner

log = logging.getLogger(__name__)

# SQS keeps a received message out of sight at most this long in all, however
# often its visibility is extended (moto does not enforce it; AWS does).
MAX_VISIBILITY_SECONDS = 12 * 3600
# An empty queue answers 204 with this Retry-After.
RETRY_AFTER_SECONDS = 5
# A synchronous job's full round answers a wait of this long: the update is a fold away.
ROUND_RETRY_SECONDS = 1
# Why a volunteer hands a task back (POST /tasks/release): its compute failed,
# its batches or model did not download, no TF.js backend of its browser can
# train the model, or it was stopped.
RELEASE_REASONS = ("compute_error", "download_error", "no_backend", "stopped")
# The TF.js backends a completion may say computed it (counted per job by the fold).
BACKENDS = ("webgpu", "wasm", "webgl", "cpu")
# The most bytes a completion may say its page used since the one before (1 TB: more is not a browser's).
MAX_BYTES_REPORTED = 10**12
# Receives tried per lease request while skipping tasks of paused or ended jobs.
MAX_SKIPS = 5
# A lease lasts at most this many times the job's lease_seconds from its receive,
# heartbeats included: then its task goes to someone else (a volunteer cannot sit on it).
MAX_LEASE_EXTENSION = 4


def token_seconds(lease_seconds: float) -> float:
    """How long a lease token is valid: a margin less than its task stays out
    of sight, so two volunteers never hold a valid token for one delivery."""
    return lease_seconds - min(5.0, lease_seconds / 10)


def token_expiry(spec: JobSpec, now: float) -> float:
    """When a lease token taken or renewed `now` stops being valid."""
    return now + token_seconds(spec.lease_seconds)


@dataclass(frozen=True)
class LeasePolicy:
    """The deployment's lease settings (chalicelib/domain/config.py)."""

    wait_seconds: int  # SQS long-poll per receive
    max_leases_per_volunteer: int
    max_leases_per_address: int
    meta_max_age: float  # how old a META read a lease may reuse (each lease would read it otherwise)


class LeaseService:
    def __init__(self, jobs: JobRecords, meta: MetaStore, leases: LeaseRecords, slots: VolunteerSlots,
                 counters: Counters, tasks: TaskQueue, results: ResultQueue, objects: ObjectStore,
                 signer: TokenSigner, policy: LeasePolicy, evaluations: Evaluations, identities: Identities,
                 address_slots: VolunteerSlots, rounds: RoundSeats, clock: Callable[[], float] = time.time):
        self.jobs, self.meta, self.leases, self.slots, self.counters = jobs, meta, leases, slots, counters
        self.rounds = rounds
        self.tasks, self.results, self.objects, self.evaluations = tasks, results, objects, evaluations
        self.identities, self.address_slots = identities, address_slots
        self.signer, self.policy, self.clock = signer, policy, clock
        # The lease time of the job this Lambda last leased from: tasks are
        # received and slots claimed for that long, so that (with one job, the
        # common case) no lease needs a second call to set its time.
        self.expected_seconds = DEFAULT_LEASE_SECONDS

    def lease(self, volunteer_token: Any, address: str) -> dict[str, Any] | None:
        """The next task of a running job for the identity of `volunteer_token`
        (leasing from `address`), None when there is none now, or a wait
        when a synchronous job's round is all handed out. The identity's
        slot and its address's are claimed first: one at either limit takes
        nothing out of the queue."""
        volunteer_id = self.identities.verify(volunteer_token)
        lease_id, limit, seconds = secrets.token_hex(16), self.policy.max_leases_per_volunteer, self.expected_seconds
        # the slots are held as long as the lease's token is valid
        slot = self.slots.claim(volunteer_id, lease_id, token_seconds(seconds), limit)
        if slot is None:
            raise TooManyRequests(f"volunteer {volunteer_id!r} already holds {limit} "
                                  "leases; complete or let them expire first")
        shared = self.policy.max_leases_per_address
        address_slot = self.address_slots.claim(address, lease_id, token_seconds(seconds), shared)
        if address_slot is None:
            self.slots.release(volunteer_id, slot, lease_id)
            raise TooManyRequests(f"the volunteers at this address already hold {shared} leases together; "
                                  "complete or let them expire first")
        task = self._next_task(seconds, volunteer_id)
        if task is None:
            self.slots.release(volunteer_id, slot, lease_id)
            self.address_slots.release(address, address_slot, lease_id)
            return None
        task, meta, spec = task
        if spec.synchronous and task.evaluates is None:  # a check's batch holds its seat in its version's round
            meta = self.meta.get(task.job_id)  # the newest version: its round is the one to sit in
            if not self.rounds.claim(task.job_id, meta.version, f"{task.epoch}-{task.batch}", spec.gradients_per_update):
                self._put_back(task)
                self.slots.release(volunteer_id, slot, lease_id)
                self.address_slots.release(address, address_slot, lease_id)
                return {"kind": "wait", "job_id": task.job_id, "base_version": meta.version,
                        "retry_after": ROUND_RETRY_SECONDS,
                        "reason": f"waiting for version {meta.version + 1}: this round's tasks are all handed out"}
        base = meta.version if task.pin is None else task.pin
        now = self.clock()
        lease = Lease(job_id=task.job_id, epoch=task.epoch, batch=task.batch, base_version=base,
                      lease_id=lease_id, received=now,
                      expires=token_expiry(spec, now), volunteer_id=volunteer_id)
        if spec.lease_seconds != seconds:
            self.tasks.hide(task.receipt, spec.lease_seconds)
            self.slots.extend(volunteer_id, slot, lease_id, token_seconds(spec.lease_seconds))
            self.address_slots.extend(address, address_slot, lease_id, token_seconds(spec.lease_seconds))
            self.expected_seconds = spec.lease_seconds
        self.leases.put(task.job_id, lease.lease_id, task.epoch, task.batch, lease.expires, volunteer_id, slot,
                        task.receipt, task.pin, address, address_slot)
        if task.evaluates is not None:
            return self._evaluation_lease(replace(lease, base_version=task.evaluates, evaluates=task.evaluates), spec)
        upload_key = gradient_key(task.job_id, task.epoch, task.batch, lease.lease_id)
        batch_urls = [self.objects.public_url(batch_key(task.job_id, b)) for b in spec.task_batches(task.batch)]
        local = {"local_learning_rate": spec.local_learning_rate(base)} if spec.local_steps else {}
        return {
            "kind": "train", "job_id": task.job_id, "task_id": f"{task.epoch}-{task.batch}", "epoch": task.epoch,
            "batch": task.batch, "base_version": base,
            "model_url": self.objects.public_url(model_key(task.job_id, base)),
            "batch_url": batch_urls[0], "batch_urls": batch_urls,  # local steps: one batch per step
            "upload": self.objects.presigned_post(upload_key, spec.gradient_bytes, spec.lease_seconds),
            "upload_bytes": spec.gradient_bytes,
            "lease_token": self.signer.sign(lease), "lease_expires": lease.expires,
            "heartbeat_seconds": max(1, spec.lease_seconds // 3),
            "spec": spec.public(), **local,
        }

    def _put_back(self, task: Task) -> None:
        """A received task goes back to the queue now, as a fresh copy (the
        received one deleted), so that a task handed back or waiting for a
        round is leased again at once and does not count as receives toward
        the dead-letter queue."""
        if task.evaluates is not None:
            self.tasks.enqueue_evaluation(task.job_id, task.evaluates, 1)
        else:
            self.tasks.enqueue(task.job_id, task.epoch, [task.batch], pin=task.pin)
        try:
            self.tasks.delete(task.receipt)
        except self.tasks.errors as err:  # two copies: the second result of the batch is a duplicate to the fold
            log.warning("could not delete task %s-%s of %s put back: %s", task.epoch, task.batch, task.job_id, err)

    def _evaluation_lease(self, lease: Lease, spec: JobSpec) -> dict[str, Any]:
        """An evaluation task: the version's forward pass over the held-out batches; nothing to upload."""
        urls = [self.objects.public_url(batch_key(lease.job_id, b)) for b in spec.held_out]
        return {
            "kind": "evaluate", "job_id": lease.job_id, "task_id": f"evaluate-{lease.evaluates}",
            "epoch": lease.epoch, "batch": lease.batch, "base_version": lease.evaluates,
            "model_url": self.objects.public_url(model_key(lease.job_id, lease.evaluates)),
            "batch_url": urls[0], "batch_urls": urls,
            "lease_token": self.signer.sign(lease), "lease_expires": lease.expires,
            "heartbeat_seconds": max(1, spec.lease_seconds // 3),
            "spec": spec.public(),
        }

    def _next_task(self, seconds: int, volunteer_id: str) -> tuple[Task, JobMeta, JobSpec] | None:
        """A task of a running job, received out of sight for `seconds`;
        tasks of deleted, finished or paused jobs and of folded batches met on
        the way are dropped (resuming a job queues its epoch again).
        Evaluations are kept for a finished job (its last version's); one this
        volunteer answered already goes back for another volunteer."""
        for _ in range(MAX_SKIPS):
            task = self.tasks.receive(seconds, self.policy.wait_seconds)
            if task is None:
                return None
            live = ("running", "finished") if task.evaluates is not None else ("running",)
            try:
                meta = self.meta.get(task.job_id, max_age=self.policy.meta_max_age)
                if meta.status not in live:  # drop a task only on a fresh read: the job may have just resumed
                    meta = self.meta.get(task.job_id)
                spec = self.jobs.spec(task.job_id)
            except NotFound:
                meta = None
            if meta is None or meta.status not in live or (task.evaluates is None
                                                           and meta.is_folded(task.epoch, task.batch)):
                self.tasks.delete(task.receipt)
                continue
            if task.evaluates is not None and self.evaluations.answered(task.job_id, task.evaluates, volunteer_id):
                self._evaluate_later(task)
                continue
            return task, meta, spec
        return None

    def _evaluate_later(self, task: Task) -> None:
        """The evaluation back on the queue, out of sight a while (for another volunteer)."""
        self.tasks.enqueue_evaluation(task.job_id, task.evaluates, 1, delay=REQUEUE_DELAY_SECONDS)
        self.tasks.delete(task.receipt)

    def heartbeat(self, job_id: str, token: Any, volunteer_token: Any) -> dict[str, Any]:
        """Extend a live lease by the job's lease seconds; a fresh token and a
        fresh upload form (valid as long as the renewed lease) come back."""
        lease = self.signer.verify(token, job_id)
        self.identities.check_holder(lease, volunteer_token)
        spec = self.jobs.spec(job_id)
        now = self.clock()
        if now + spec.lease_seconds > lease.received + MAX_VISIBILITY_SECONDS:
            raise Conflict("this lease cannot be extended: SQS hides a task at most 12 hours after it was "
                           "received; complete the task before the lease ends, or let it go")
        if now + spec.lease_seconds > lease.received + MAX_LEASE_EXTENSION * spec.lease_seconds:
            raise Conflict(f"this lease has been extended as far as it may be ({MAX_LEASE_EXTENSION} x the job's "
                           f"lease_seconds, {MAX_LEASE_EXTENSION * spec.lease_seconds} s from when it was taken); "
                           "complete the task before it ends, or let it go")
        renewed = replace(lease, expires=token_expiry(spec, now))
        moved, record = self.leases.transition(job_id, lease.lease_id, "leased", "leased", expires=renewed.expires)
        if not moved:
            self._refuse(record)
        try:
            self.tasks.hide(record.receipt, spec.lease_seconds)
        except self.tasks.errors as err:
            raise Conflict(f"the task can no longer be extended: {err}")
        # the slots are held as long as the renewed lease: a heartbeated lease still counts
        self.slots.extend(record.volunteer_id, record.slot, lease.lease_id, renewed.expires - now)
        self.address_slots.extend(record.address, record.address_slot, lease.lease_id, renewed.expires - now)
        extended = {"lease_token": self.signer.sign(renewed), "lease_expires": renewed.expires}
        if lease.evaluates is not None:
            return extended
        # a fresh upload form: the first expires lease_seconds after the lease was taken
        upload = self.objects.presigned_post(gradient_key(job_id, lease.epoch, lease.batch, lease.lease_id),
                                             spec.gradient_bytes, spec.lease_seconds)
        return {**extended, "upload": upload}

    def complete(self, job_id: str, token: Any, volunteer_token: Any, loss: float, steps: int | None = None,
                 backend: str = "", data: DataUsed | None = None, accuracy: float | None = None) -> dict[str, Any]:
        """Accept an uploaded gradient: verify, hand it to the fold, retire the task.
        `steps`: the local steps the volunteer ran, where the job lets it choose
        (all the task's batches when not given); `backend`: the TF.js backend
        that computed it, if said; `data`: the bytes its page used, if said
        (the fold sums them; the volunteer is counted once in `volunteers_data`).

        The lease moves leased -> completed before the result is sent, so a
        replayed or concurrent completion is refused (409). If sending fails,
        the lease is moved back so the volunteer may retry; the task message
        is deleted only after the result is safely in the fold queue.
        """
        lease = self.signer.verify(token, job_id)
        self.identities.check_holder(lease, volunteer_token)
        spec = self.jobs.spec(job_id)
        if lease.evaluates is not None:
            return self._complete_evaluation(lease, spec, loss, accuracy)
        if accuracy is not None:
            raise BadRequest("accuracy is an evaluation task's answer; this lease is a training task")
        allowed = spec.steps_allowed(lease.batch)
        steps = allowed[-1] if steps is None else steps
        if steps not in allowed:
            raise BadRequest(f"steps must be between {allowed[0]} and {allowed[-1]} for this task")
        moved, record = self.leases.transition(job_id, lease.lease_id, "leased", "completed", loss=loss)
        if not moved:
            self._refuse(record)
        key = gradient_key(job_id, lease.epoch, lease.batch, lease.lease_id)
        try:
            checked = self._check_upload(job_id, spec, key)
            samples = steps * spec.dataset.batch_size
            self.results.send(Result.of(lease, key, loss, samples, record.volunteer_id, backend, checked, data,
                                        record.address),
                              spec.fold_groups)
        except Exception:
            # back to leased: the volunteer may upload again, or retry the completion
            self.leases.move(job_id, lease.lease_id, "completed", "leased")
            raise
        try:
            self.tasks.delete(record.receipt)
        except self.tasks.errors as err:
            # The task will reappear and be leased again; its second result is
            # then discarded as a duplicate by the fold. Nothing is lost.
            log.warning("could not delete task %s-%s of %s: %s", lease.epoch, lease.batch, job_id, err)
        self._free_slots(record, lease.lease_id)
        if data is not None:
            self.counters.first_time(job_id, "data", record.volunteer_id)
        return {"accepted": True, "job_id": job_id, "epoch": lease.epoch, "batch": lease.batch}

    def _complete_evaluation(self, lease: Lease, spec: JobSpec, loss: float,
                             accuracy: float | None) -> dict[str, Any]:
        """A volunteer's held-out loss (and accuracy) of the version: its claim (tasks/evaluations.py)."""
        if accuracy is not None and not spec.classifies:
            raise BadRequest(f"accuracy is reported only for a classifier's loss, not {spec.loss}")
        moved, record = self.leases.transition(lease.job_id, lease.lease_id, "leased", "completed", loss=loss)
        if not moved:
            self._refuse(record)
        try:
            outcome = self.evaluations.settle(lease.job_id, spec, Claim(record.volunteer_id, loss, accuracy),
                                              lease.evaluates)
        except Conflict:  # this volunteer answered that version already: the task is someone else's
            self._evaluate_later(Task(lease.job_id, lease.epoch, lease.batch, record.receipt,
                                      evaluates=lease.evaluates))
            self._free_slots(record, lease.lease_id)
            raise
        try:
            self.tasks.delete(record.receipt)
        except self.tasks.errors as err:
            log.warning("could not delete evaluation %s of %s: %s", lease.evaluates, lease.job_id, err)
        self._free_slots(record, lease.lease_id)
        return {"accepted": True, "job_id": lease.job_id, "evaluates": lease.evaluates, "held_out": outcome}

    def release(self, job_id: str, token: Any, volunteer_token: Any, reason: str) -> dict[str, Any]:
        """Hand a leased task back at once (the volunteer cannot compute it): a
        fresh copy of its message is queued and the leased one deleted, so the
        task is leased again now, not when the lease would have run out, and
        a broken browser's hand-backs do not count as receives towards the
        dead-letter queue. The reason is counted per job, and the volunteers
        who gave it."""
        lease = self.signer.verify(token, job_id)
        self.identities.check_holder(lease, volunteer_token)
        moved, record = self.leases.transition(job_id, lease.lease_id, "leased", "released", reason=reason)
        if not moved:
            self._refuse(record)
        self._put_back(Task(job_id, lease.epoch, lease.batch, receipt=record.receipt, pin=record.pin,
                            evaluates=lease.evaluates))
        self._free_slots(record, lease.lease_id)
        self.counters.add(job_id, **{f"released_{reason}": 1})
        self.counters.first_time(job_id, f"released_{reason}", record.volunteer_id)
        return {"released": True, "job_id": job_id, "epoch": lease.epoch, "batch": lease.batch}

    def _check_upload(self, job_id: str, spec: JobSpec, key: str) -> str:
        """400 unless the lease's upload is there and passes the gradient
        check; the digest of the bytes checked (the result is pinned to them)."""
        try:
            data = self.objects.get(key)
        except NotFound:
            raise BadRequest("no gradient was uploaded for this lease; POST it to the upload form first")
        try:
            if len(data) != spec.gradient_bytes:
                raise BadRequest(f"uploaded gradient is {len(data)} bytes; the job's {spec.codec} gradients "
                                 f"are exactly {spec.gradient_bytes} bytes")
            check_gradient(spec, data)
        except BadRequest:
            self.counters.add(job_id, rejected=1)
            raise
        return digest(data)

    def _free_slots(self, record: LeaseRecord, lease_id: str) -> None:
        self.slots.release(record.volunteer_id, record.slot, lease_id)
        self.address_slots.release(record.address, record.address_slot, lease_id)

    @staticmethod
    def _refuse(record: LeaseRecord | None) -> None:
        """Why a lease could not move on: gone (404) or no longer leased (409)."""
        if record is None:
            raise NotFound("no such lease (was the job deleted?)")
        raise Conflict(f"lease is already {record.state}; each lease is completed or released once")
