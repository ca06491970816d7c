"""Handing out a task: POST /tasks/lease.

An SQS receive is the lease: the task message stays invisible for the job's
lease seconds, and if the volunteer vanishes it becomes visible again and
goes to someone else. The volunteer holds a signed token, never the bare SQS
receipt handle. Tokens expire a margin before the message reappears, so two
volunteers never hold a valid token for the same delivery.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from typing import Callable

from chalicelib.domain.records import Lease
from chalicelib.domain.spec import DEFAULT_LEASE_SECONDS
from chalicelib.domain.wire import TaskAnswer, TokenRequest, WaitAnswer, result_tag
from chalicelib.store.leases import LeaseRecord, LeaseRecords
from chalicelib.tasks.answers import Answers
from chalicelib.tasks.identities import Identities
from chalicelib.tasks.slots import LeaseSlots
from chalicelib.tasks.source import TaskSource
from chalicelib.tasks.tokens import token_expiry, token_seconds

# An empty queue answers 204 with this Retry-After.
RETRY_AFTER_SECONDS = 5
# A synchronous job's full round answers a wait of this long: the update is a fold away.
ROUND_RETRY_SECONDS = 1


class Handout:
    def __init__(
        self,
        identities: Identities,
        slots: LeaseSlots,
        source: TaskSource,
        leases: LeaseRecords,
        answers: Answers,
        clock: Callable[[], float] = time.time,
    ):
        self.identities, self.slots, self.source, self.leases = identities, slots, source, leases
        self.answers, self.clock = answers, clock
        # The lease time of the job this Lambda last leased from: tasks are
        # received and slots claimed for that long, so that (with one job, the
        # common case) no lease needs a second call to set its time.
        self.expected_seconds = DEFAULT_LEASE_SECONDS

    def lease(self, request: TokenRequest, address: str) -> TaskAnswer | WaitAnswer | None:
        """The next task of a running job for the identity of the request's
        volunteer token (leasing from `address`), None when there is none now,
        or a wait when a synchronous job's round has no seat for it. The
        identity's slot and its address's are claimed first: one at either
        limit takes nothing out of the queue."""
        volunteer_id = self.identities.verify(request.volunteer_token)
        lease_id, seconds = secrets.token_hex(16), self.expected_seconds
        # the slots are held as long as the lease's token is valid
        seats = self.slots.claim(volunteer_id, address, lease_id, token_seconds(seconds))
        chosen = self.source.next(seconds, volunteer_id)
        if chosen is None:
            self.slots.free(seats)
            return None
        task, spec = chosen.task, chosen.spec
        meta, seated = self.source.seat(chosen, volunteer_id, address)
        if not seated:
            self.slots.free(seats)
            return WaitAnswer(task.job_id, meta.version, ROUND_RETRY_SECONDS)
        now = self.clock()
        varies = task.evaluates is None and spec.local_steps is not None and spec.local_steps.varies
        pace = self.slots.paces.get(task.job_id, volunteer_id) if varies else None
        lease = Lease(
            job_id=task.job_id,
            epoch=task.epoch,
            batch=task.batch,
            base_version=meta.version if task.pin is None else task.pin,
            lease_id=lease_id,
            received=now,
            expires=token_expiry(spec, now),
            volunteer_id=volunteer_id,
            steps=spec.budget(task.batch, pace) if varies else 0,  # the server decides what a result may weigh
        )
        if spec.lease_seconds != seconds:
            try:
                self.source.hide(task, spec.lease_seconds)
            except self.source.errors:  # its job's queue was deleted with it a moment ago
                self.slots.free(seats)
                return None
            self.slots.extend(seats, token_seconds(spec.lease_seconds))
            self.expected_seconds = spec.lease_seconds
        self.leases.put(
            lease, LeaseRecord("leased", volunteer_id, seats.slot, task.pin, task.receipt, address, seats.address_slot)
        )
        if task.evaluates is not None:
            lease = replace(lease, base_version=task.evaluates, evaluates=task.evaluates)
        last = meta.last_fold  # the base version's fold, unless the task is pinned to an older one
        folded = None
        if last is not None and last.version == lease.base_version:
            folded = tuple(result_tag(lease_id) for _, _, lease_id in last.batches)
        return self.answers.task(lease, spec, folded)
