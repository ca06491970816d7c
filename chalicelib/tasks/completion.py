"""Accepting a result: POST /tasks/complete.

The lease moves leased -> completed before the result is sent, so a
replayed or concurrent completion is refused (409). If sending fails, the
lease is moved back so the volunteer may retry; the task message is deleted
only after the result is safely in the fold queue.
"""

from __future__ import annotations

import logging

from chalicelib.domain.errors import BadRequest, Conflict, NotFound
from chalicelib.domain.gradients import check_gradient, digest
from chalicelib.domain.keys import gradient_key
from chalicelib.domain.records import Lease, Result
from chalicelib.domain.spec import JobSpec
from chalicelib.domain.wire import Accepted, Completion
from chalicelib.store.evaluations import Claim
from chalicelib.store.jobs import JobRecords
from chalicelib.store.objects import ObjectStore
from chalicelib.store.queues import ResultQueue
from chalicelib.store.stats import Counters
from chalicelib.tasks.evaluations import Evaluations
from chalicelib.tasks.held import HeldLeases
from chalicelib.tasks.slots import LeaseSlots, Seats
from chalicelib.tasks.source import TaskSource

log = logging.getLogger(__name__)


class Completions:
    def __init__(
        self,
        held: HeldLeases,
        jobs: JobRecords,
        results: ResultQueue,
        source: TaskSource,
        objects: ObjectStore,
        counters: Counters,
        slots: LeaseSlots,
        evaluations: Evaluations,
    ):
        self.held, self.jobs, self.results, self.source = held, jobs, results, source
        self.objects, self.counters, self.slots, self.evaluations = objects, counters, slots, evaluations

    def complete(self, c: Completion) -> Accepted:
        """Accept an uploaded gradient: verify, hand it to the fold, retire the
        task. `steps` defaults to the lease's budget (all the task's batches, or
        where steps vary what the server's timing of the identity allowed),
        and may only lower it; the bytes a page
        says it used are summed by the fold, and its volunteer counted once in
        `volunteers_data`."""
        lease = self.held.verify(c.held)
        spec = self.jobs.spec(lease.job_id)
        if lease.evaluates is not None:
            return self._evaluation(lease, spec, c, lease.evaluates)
        if c.accuracy is not None:
            raise BadRequest("accuracy is an evaluation task's answer; this lease is a training task")
        allowed = spec.steps_allowed(lease.batch)
        most = min(lease.steps, allowed[-1]) if lease.steps else allowed[-1]  # the budget the lease was given
        steps = most if c.steps is None else c.steps
        if steps not in allowed or steps > most:
            raise BadRequest(f"steps must be between {allowed[0]} and {most} for this lease")
        record = self.held.move(lease, "leased", "completed", loss=c.loss)
        key = gradient_key(lease.job_id, lease.epoch, lease.batch, lease.lease_id)
        try:
            checked = self._check_upload(lease.job_id, spec, key)
            samples = steps * spec.dataset.batch_size
            self.results.send(
                Result.of(lease, key, c.loss, samples, record.volunteer_id, c.backend, checked, c.data, record.address),
                spec.fold_groups,
            )
        except Exception:
            self.held.reopen(lease)
            raise
        self.source.retire(lease.task(record.receipt))
        self.slots.free(Seats.of(record, lease.lease_id))
        if lease.steps:  # the server's own timing of this identity, for its next lease's budget
            try:
                self.slots.paces.timed(lease.job_id, record.volunteer_id, lease.received, steps)
            except Exception:  # the result is accepted already: its next lease keeps the last pace
                log.exception("job %s: timing %s's task failed", lease.job_id, record.volunteer_id)
        if c.data is not None:
            self.counters.first_time(lease.job_id, "data", record.volunteer_id)
        return Accepted(lease.job_id, lease.epoch, lease.batch)

    def _evaluation(self, lease: Lease, spec: JobSpec, c: Completion, version: int) -> Accepted:
        """A volunteer's held-out loss (and accuracy) of the version: its claim (tasks/evaluations.py)."""
        if c.accuracy is not None and not spec.classifies:
            raise BadRequest(f"accuracy is reported only for a classifier's loss, not {spec.loss}")
        record = self.held.move(lease, "leased", "completed", loss=c.loss)
        task = lease.task(record.receipt)
        try:
            outcome = self.evaluations.settle(
                lease.job_id, spec, Claim(record.volunteer_id, c.loss, c.accuracy, record.address), version
            )
        except Conflict:  # this volunteer answered that version already: the task is someone else's
            self.source.evaluate_later(task)
            self.slots.free(Seats.of(record, lease.lease_id))
            raise
        self.source.retire(task, "evaluated")
        self.slots.free(Seats.of(record, lease.lease_id))
        return Accepted(lease.job_id, evaluates=lease.evaluates, held_out=outcome)

    def _check_upload(self, job_id: str, spec: JobSpec, key: str) -> str:
        """400 unless the lease's upload is there and passes the gradient
        check; the digest of the bytes checked (the result is pinned to them)."""
        try:
            data = self.objects.get(key)
        except NotFound:
            raise BadRequest("no gradient was uploaded for this lease; POST it to the upload form first")
        try:
            if len(data) != spec.gradient_bytes:
                raise BadRequest(
                    f"uploaded gradient is {len(data)} bytes; the job's {spec.codec} gradients "
                    f"are exactly {spec.gradient_bytes} bytes"
                )
            check_gradient(spec, data)
        except BadRequest:
            self.counters.add(job_id, rejected=1)
            raise
        return digest(data)
