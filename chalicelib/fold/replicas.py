"""A replicated job's results (`replication.copies = 2`, BOINC-style), one at
a time: an accepted first copy waits in its own item (store/awaiting.py)
while a check task, pinned to the same version, is queued; the copy goes on
to pending only if a different volunteer's copy agrees, and if the two
disagree a third copy settles it by majority.

Adaptive replication (`replication.trust_after`): an identity's record
(store/reputations.py) counts its copies that agreed with another's; once
it has enough, only some of its results are checked (Replication.check_rate,
drawn at random by the fold, so a volunteer cannot know beforehand which),
and one outvoted in a dispute starts over, checked on every result. One
outvoted too often (Replication.barred) loses its standing in the job: its
copies are discarded, and another copy asked for where one was awaited.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Sequence

from chalicelib.domain.addresses import client
from chalicelib.domain.errors import BadRequest, NotFound
from chalicelib.domain.records import Result
from chalicelib.domain.spec import JobSpec
from chalicelib.fold.discards import Discards
from chalicelib.fold.outcomes import FoldOutcome
from chalicelib.fold.shares import over_share
from chalicelib.fold.stores import FoldStores
from chalicelib.fold.updates import Updates
from chalicelib.fold.vetting import GradientVetting, relative_difference
from chalicelib.store.awaiting import AwaitingCopies
from chalicelib.store.meta import JobMeta, Pending
from chalicelib.store.reputations import Reputations

log = logging.getLogger(__name__)


class Replicas:
    def __init__(
        self,
        stores: FoldStores,
        vetting: GradientVetting,
        discards: Discards,
        updates: Updates,
        awaiting: AwaitingCopies,
        reputations: Reputations,
        distinct_addresses: bool = True,
        draw: Callable[[], float] = random.SystemRandom().random,
    ):
        self.stores, self.vetting, self.discards, self.updates = stores, vetting, discards, updates
        self.awaiting, self.reputations, self.draw = awaiting, reputations, draw
        # a check must come from another address than its first copy (two
        # identities of one client agreeing prove nothing); off where every
        # volunteer shares one address (the local stack)
        self.distinct_addresses = distinct_addresses

    def apply(self, r: Result) -> FoldOutcome:
        """One result of a replicated job, from a fresh read of META."""
        stores = self.stores
        meta, spec = stores.meta.get(r.job_id), stores.jobs.spec(r.job_id)
        meta = self.updates.settle(meta, spec)
        accounted = (r.epoch, r.batch) in meta.pending_pairs() or meta.is_folded(r.epoch, r.batch)
        awaiting = None if accounted else self.awaiting.get(r.job_id, r.epoch, r.batch)
        if (
            accounted
            or (awaiting is not None and awaiting.holds(r.lease_id))
            or stores.leases.state(r.job_id, r.lease_id) == "discarded"
        ):
            stores.counters.add(r.job_id, duplicates=1)
            return FoldOutcome.DUPLICATE
        standing = self.reputations.get(r.job_id, r.volunteer_id)
        if spec.replication.barred(standing):  # it lost its standing: none of its copies count
            if awaiting is None:
                return self._discard_alone(r, FoldOutcome.BARRED)
            return self._another_copy(r, awaiting.first, FoldOutcome.BARRED)
        if awaiting is not None and awaiting.disputed is not None:
            return self._settle_dispute(r, awaiting.first, awaiting.disputed, meta, spec)
        if awaiting is not None:
            return self._check(r, awaiting.first, meta, spec)
        reason, digest, _ = self.vetting.reject(r, meta, spec)
        if reason:
            return self._discard_alone(r, reason)
        copy = Pending.of(r, digest)
        if self.draw() >= spec.replication.check_rate(standing.agreed):  # trusted, and not drawn for a spot check
            if self._over_share(meta, spec, copy):
                return self._discard_alone(r, FoldOutcome.OVER_SHARE)
            stores.counters.add(r.job_id, replicas_skipped=1)
            return self._add_pending(meta, spec, copy)
        # A first copy. Queue its check first (pinned to this copy's version),
        # then record the copy as awaiting it: a crash in between queues a second
        # check, whose result is later dropped as a duplicate; none is ever missing.
        stores.tasks.enqueue(r.job_id, r.epoch, [r.batch], pin=r.base_version)
        self.awaiting.put(copy)
        return FoldOutcome.AWAITING_REPLICA

    def _discard_alone(self, r: Result, reason: FoldOutcome) -> FoldOutcome:
        """Discard a first copy that no other copy waits beside (its batch re-queued)."""
        self.discards.discard(r.job_id, [(r.epoch, r.batch, [r.lease_id])], reason)
        return reason

    def _judge(self, copy: Pending | Result) -> str:
        """Who a verdict counts as: the copy's source address where addresses count, else its identity."""
        return client(copy.volunteer_id, copy.address, self.distinct_addresses)

    def _over_share(self, meta: JobMeta, spec: JobSpec, copy: Pending) -> bool:
        """Whether folding `copy` would take its volunteer (or address) past its share of the update."""
        return over_share(meta.pending, [copy], spec, self.distinct_addresses)[0]

    def _another_copy(self, r: Result, first: Pending, reason: FoldOutcome) -> FoldOutcome:
        """Discard `r` alone and ask for another copy in its place (pinned to
        the first copy's version, queued first: a crash in between asks twice,
        and the extra copy is a duplicate once the batch is settled); the
        copies already there keep waiting."""
        self.stores.tasks.enqueue(r.job_id, r.epoch, [r.batch], pin=first.base_version)
        self.discards.mark(r.job_id, [r.lease_id], reason)
        return reason

    def _add_pending(self, meta: JobMeta, spec: JobSpec, pending: Pending) -> FoldOutcome:
        before = meta.version
        meta = self.updates.take(meta, spec, (pending,), {})
        return FoldOutcome.FOLDED if meta.version > before else FoldOutcome.PENDING

    def _vet_copy(
        self, r: Result, others: Sequence[Pending], meta: JobMeta, spec: JobSpec
    ) -> tuple[FoldOutcome | None, str, list]:
        """Whether `r` may stand as a copy beside `others` (valid, by another
        volunteer, from another address where addresses count, on the same
        version); its digest and tensors if so."""
        reason, digest, tensors = self.vetting.reject(r, meta, spec)
        if not reason and any(r.volunteer_id == o.volunteer_id for o in others):
            reason = FoldOutcome.SAME_VOLUNTEER
        elif not reason and self.distinct_addresses and any(r.address == o.address for o in others):
            reason = FoldOutcome.SAME_ADDRESS
        elif not reason and r.base_version != others[0].base_version:
            reason = FoldOutcome.REPLICA_VERSION
        return reason, digest, tensors

    def _agrees(self, spec: JobSpec, copy: Pending, tensors: list, r: Result) -> bool:
        """Whether a stored copy (still the bytes accepted) is within the job's tolerance of `r`'s tensors."""
        try:
            difference = relative_difference(self.vetting.load(spec, copy.key, copy.digest), tensors)
        except (BadRequest, NotFound):
            return False
        if difference > spec.replication.tolerance:
            log.warning(
                "job %s: %s-%s: volunteers %r and %r disagree (relative difference %.3g)",
                r.job_id,
                r.epoch,
                r.batch,
                copy.volunteer_id,
                r.volunteer_id,
                difference,
            )
            return False
        return True

    def _check(self, r: Result, first: Pending, meta: JobMeta, spec: JobSpec) -> FoldOutcome:
        """The second copy of a replicated batch: the first goes on to pending
        if both agree within the job's tolerance, and its item is dropped after
        (a crash in between leaves a stale item behind a pending batch, which
        the duplicate check meets first). If they disagree, a third copy
        settles it (`_settle_dispute`). Otherwise (an invalid check, by the
        same volunteer or address, on another version, or a first copy over
        its volunteer's share) both are discarded and the batch re-queued, the
        first copy dropped before: a crash in between leaves this result's
        message to come back, and it then starts the batch over as a first copy."""
        stores = self.stores
        reason, digest, second = self._vet_copy(r, [first], meta, spec)
        if not reason and self._over_share(meta, spec, first):
            reason = FoldOutcome.OVER_SHARE
        if not reason and not self._agrees(spec, first, second, r):
            # Queue the third copy first (pinned like the check), then keep this
            # copy beside the first: a crash in between queues another third
            # copy, whose result finds the batch settled and is dropped as a duplicate.
            stores.tasks.enqueue(r.job_id, r.epoch, [r.batch], pin=first.base_version)
            self.awaiting.dispute(first, Pending.of(r, digest))
            stores.counters.add(r.job_id, replicas_disputed=1)
            return FoldOutcome.DISPUTED
        if not reason:
            stores.counters.add(r.job_id, replicas_agreed=1)
            outcome = self._add_pending(meta, spec, first)
            self.awaiting.drop(first)
            self.reputations.agreed(r.job_id, [first.volunteer_id, r.volunteer_id])
            return outcome
        self.awaiting.drop(first)
        self.discards.discard(r.job_id, [(r.epoch, r.batch, [first.lease_id, r.lease_id])], reason)
        return reason

    def _settle_dispute(
        self, r: Result, first: Pending, disputed: Pending, meta: JobMeta, spec: JobSpec
    ) -> FoldOutcome:
        """A third copy of a batch whose first two disagreed: the copy it
        agrees with goes on to pending (a hostile check loses to the majority,
        and the honest work folds), and the other copy's lease is marked
        outvoted, after (a crash in between leaves it merely completed), and
        its volunteer's record starts over. A third copy by one of the two
        disputing volunteers (or from one's address) is discarded alone and
        another asked for; one agreeing with neither, or otherwise unusable,
        discards all three and re-queues the batch."""
        stores = self.stores
        reason, _, third = self._vet_copy(r, [first, disputed], meta, spec)
        if reason in (FoldOutcome.SAME_VOLUNTEER, FoldOutcome.SAME_ADDRESS):
            # one of the disputing volunteers cannot be the tie-breaker
            return self._another_copy(r, first, reason)
        winner = loser = None
        if not reason:
            if self._agrees(spec, first, third, r):
                winner, loser = first, disputed
            elif self._agrees(spec, disputed, third, r):
                winner, loser = disputed, first
            else:
                reason = FoldOutcome.DISAGREEMENT
        if not reason and winner is not None and self._over_share(meta, spec, winner):
            reason = FoldOutcome.OVER_SHARE
        if reason:
            self.awaiting.drop(first)
            self.discards.discard(
                r.job_id, [(r.epoch, r.batch, [first.lease_id, disputed.lease_id, r.lease_id])], reason
            )
            return reason
        assert winner is not None and loser is not None  # no reason: the third copy agreed with one of the two
        stores.counters.add(r.job_id, replicas_agreed=1)
        outcome = self._add_pending(meta, spec, winner)
        self.awaiting.drop(first)
        self.discards.mark(r.job_id, [loser.lease_id], FoldOutcome.OUTVOTED)
        self.reputations.agreed(r.job_id, [winner.volunteer_id, r.volunteer_id])
        self.reputations.outvoted(r.job_id, loser.volunteer_id, {self._judge(winner), self._judge(r)})
        return outcome
