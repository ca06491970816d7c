"""One client's share of an update: at most `JobSpec.share_cap` of an
update's K gradients may come from one volunteer identity or (where
addresses tell clients apart) one source address. A median or trimmed mean
holds only while hostile gradients are a minority of each update; without
the cap, one client sending results fast enough could fill an update alone.

Updates take pending results K at a time from the front, so the update a
new result would join is known when it arrives: a result over its client's
share is discarded and its batch re-queued for someone else.

Where results weigh by the local steps they report, a count is not a share:
one result claiming every step would outweigh the rest. `capped` lowers the
weights of a client over `max_share` of the update's total weight to that
share, when the update is folded (and its credit with them)."""

from __future__ import annotations

from typing import Callable, Sequence

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


def capped(group: Sequence[Result], weights: Sequence[float], max_share: float, by_address: bool) -> list[float]:
    """The weights of an update's results with no identity (nor, with
    `by_address`, source address) over `max_share` of their total: a
    client's weights scaled down to that share of the total they then make
    (alternately by identity and by address until both hold). A client that
    is the update's only one keeps its weights: a share of itself is all."""
    out = [float(w) for w in weights]
    if max_share >= 1:
        return out
    keys: list[Callable[[Result], str]] = [lambda r: r.volunteer_id]
    if by_address:
        keys.append(lambda r: r.address or r.volunteer_id)
    for _ in range(50):
        moved = False
        for key in keys:
            totals: dict[str, float] = {}
            for r, w in zip(group, out):
                totals[key(r)] = totals.get(key(r), 0.0) + w
            total = sum(totals.values())
            for client, mine in totals.items():
                others = total - mine
                if others > 0 and mine > max_share * total * (1 + 1e-9):
                    scale = max_share / (1 - max_share) * others / mine  # mine x scale = max_share of the new total
                    out = [w * scale if key(r) == client else w for r, w in zip(group, out)]
                    moved = True
                    break  # totals changed: count again
        if not moved:
            break
    return out
