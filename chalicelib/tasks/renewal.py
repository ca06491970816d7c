"""A held lease renewed (POST /tasks/heartbeat) or handed back (POST /tasks/release)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Callable

from chalicelib.domain.errors import Conflict, TooManyRequests
from chalicelib.domain.wire import HeldLease, Release, Released, Renewed
from chalicelib.store.budgets import ReleaseBudgets
from chalicelib.store.jobs import JobRecords
from chalicelib.store.stats import Counters
from chalicelib.tasks.answers import Answers
from chalicelib.tasks.held import HeldLeases
from chalicelib.tasks.slots import LeaseSlots, Seats
from chalicelib.tasks.source import TaskSource
from chalicelib.tasks.tokens import token_expiry
from chalicelib.tasks.untrainable import Untrainable

log = logging.getLogger(__name__)

# SQS keeps a received message out of sight at most this long in all, however
# often its visibility is extended (moto does not enforce it; AWS does).
MAX_VISIBILITY_SECONDS = 12 * 3600
# A lease lasts at most this many times the job's lease_seconds from its receive,
# heartbeats included: then its task goes to someone else (a volunteer cannot sit on it).
MAX_LEASE_EXTENSION = 4


class Heartbeats:
    def __init__(
        self,
        held: HeldLeases,
        jobs: JobRecords,
        source: TaskSource,
        slots: LeaseSlots,
        answers: Answers,
        clock: Callable[[], float] = time.time,
    ):
        self.held, self.jobs, self.source, self.slots, self.answers = held, jobs, source, slots, answers
        self.clock = clock

    def heartbeat(self, request: HeldLease) -> Renewed:
        """Extend a live lease by the job's lease seconds (a synchronous
        round's seat: not at all); a fresh token and a fresh upload form
        (valid as long as the renewed lease) come back."""
        lease = self.held.verify(request)
        spec = self.jobs.spec(lease.job_id)
        if spec.synchronous and lease.evaluates is None:
            # A round's seat lasts one lease: the token is renewed (the lease is still held), its
            # end is not, so a client that never completes lets the round go after lease_seconds.
            self.held.move(lease, "leased", "leased", expires=lease.expires)
            return self.answers.renewed(lease, spec)
        now = self.clock()
        if now + spec.lease_seconds > lease.received + MAX_VISIBILITY_SECONDS:
            raise Conflict(
                "this lease cannot be extended: SQS hides a task at most 12 hours after it was "
                "received; complete the task before the lease ends, or let it go"
            )
        if now + spec.lease_seconds > lease.received + MAX_LEASE_EXTENSION * spec.lease_seconds:
            raise Conflict(
                f"this lease has been extended as far as it may be ({MAX_LEASE_EXTENSION} x the job's "
                f"lease_seconds, {MAX_LEASE_EXTENSION * spec.lease_seconds} s from when it was taken); "
                "complete the task before it ends, or let it go"
            )
        renewed = replace(lease, expires=token_expiry(spec, now))
        record = self.held.move(lease, "leased", "leased", expires=renewed.expires)
        try:
            self.source.hide(lease.task(record.receipt), spec.lease_seconds)
        except self.source.errors as err:
            raise Conflict(f"the task can no longer be extended: {err}")
        # the slots are held as long as the renewed lease: a heartbeated lease still counts
        self.slots.extend(Seats.of(record, lease.lease_id), renewed.expires - now)
        return self.answers.renewed(renewed, spec)


@dataclass(frozen=True)
class ReleaseLimits:
    """How many tasks an identity, and an address, may hand back per window (chalicelib/domain/config.py)."""

    volunteers: ReleaseBudgets
    addresses: ReleaseBudgets
    per_volunteer: int
    per_address: int
    window_seconds: int

    def spend(self, volunteer_id: str, address: str) -> None:
        """Count one release of each; 429 when either has handed back its share of this window."""
        if not self.volunteers.spend(volunteer_id, self.per_volunteer, self.window_seconds):
            raise TooManyRequests(
                f"volunteer {volunteer_id!r} has handed back {self.per_volunteer} tasks in the last "
                f"{self.window_seconds // 60} minutes; finish the task, or let its lease run out"
            )
        if not self.addresses.spend(address, self.per_address, self.window_seconds):
            raise TooManyRequests(
                f"the volunteers at this address have handed back {self.per_address} tasks in the last "
                f"{self.window_seconds // 60} minutes; finish the task, or let its lease run out"
            )


class Releases:
    def __init__(
        self,
        held: HeldLeases,
        source: TaskSource,
        slots: LeaseSlots,
        counters: Counters,
        limits: ReleaseLimits,
        untrainable: Untrainable,
    ):
        self.held, self.source, self.slots, self.counters, self.limits = held, source, slots, counters, limits
        self.untrainable = untrainable

    def release(self, request: Release, address: str) -> Released:
        """Hand a leased task back at once (the volunteer cannot compute it): a
        fresh copy of its message is queued and the leased one deleted, so the
        task is leased again now, not when the lease would have run out, and
        a broken browser's hand-backs do not count as receives towards the
        dead-letter queue. The reason is counted per job, and the volunteers
        who gave it."""
        lease = self.held.verify(request.held)
        self.limits.spend(lease.volunteer_id, address)
        record = self.held.move(lease, "leased", "released", reason=request.reason)
        self.source.put_back(
            replace(
                lease.task(record.receipt),
                pin=record.pin,
                not_for=lease.volunteer_id,  # not back to it before its lease would have ended
                not_for_until=lease.expires,
            )
        )
        self.slots.free(Seats.of(record, lease.lease_id))
        job_id, reason = lease.job_id, request.reason
        self.counters.add(job_id, **{f"released_{reason}": 1})
        self.counters.first_time(job_id, f"released_{reason}", record.volunteer_id)
        if reason == "compute_error" and lease.evaluates is None:
            try:
                self.untrainable.compute_error(job_id, record.volunteer_id, address)
            except Exception:  # the task is handed back already; the next compute error looks again
                log.exception("job %s: checking whether it can train failed", job_id)
        return Released(job_id, lease.epoch, lease.batch)
