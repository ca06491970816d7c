"""One client's share of an update: at most `JobSpec.share_cap` of an
update's K gradients may come from one volunteer identity or (where
addresses tell clients apart) one source address. A median or trimmed mean
holds only while hostile gradients are a minority of each update; without
the cap, one client sending results fast enough could fill an update alone.

Updates take pending results K at a time from the front, so the update a
new result would join is known when it arrives: a result over its client's
share is discarded and its batch re-queued for someone else."""

from __future__ import annotations

from typing import Sequence

from chalicelib.domain.records import Result
from chalicelib.domain.spec import JobSpec


def over_share(pending: Sequence[Result], arriving: Sequence[Result], spec: JobSpec, by_address: bool) -> list[bool]:
    """For each arriving result, in order: whether taking it after `pending`
    (and after the arriving ones before it that were taken) would give its
    volunteer, or its source address, more than its share of the update it joins."""
    k, cap = spec.gradients_per_update, spec.share_cap
    if cap >= k:
        return [False] * len(arriving)
    taken = list(pending)
    over = []
    for r in arriving:
        update = taken[len(taken) // k * k :]  # the update r would join, so far
        full = sum(p.volunteer_id == r.volunteer_id for p in update) >= cap or (
            by_address and bool(r.address) and sum(p.address == r.address for p in update) >= cap
        )
        over.append(full)
        if not full:
            taken.append(r)
    return over
