"""Folding updates: META's pending results into new model versions.

An update takes the first K pending gradients (or, at the end of an epoch,
what is left of it), aggregates them with the job's strategy, applies the
numpy optimizer to version N (layers' own statistics by their rule,
domain/statistics.py) and commits N+1 (fold/commit.py). Gradients
the same invocation accepted are used as they were checked; the others are
read again and folded only if their bytes are still those accepted.

In a multi-level fold the pending results come in partial sums: an update
takes every pending sum once there are K results or more, and its gradient
is their total over their total weight (the count, or with a range of
local steps the steps behind them).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Iterator

import numpy as np

from chalicelib.domain.errors import BadRequest, NotFound
from chalicelib.domain.spec import JobSpec
from chalicelib.domain.statistics import apply_update
from chalicelib.domain.strategies import RunningSum, Weighted, divided, sum_in_order
from chalicelib.fold.commit import VersionCommit
from chalicelib.fold.credit import CreditNotices, earned
from chalicelib.fold.discards import Discards
from chalicelib.fold.outcomes import FoldOutcome
from chalicelib.fold.shares import capped
from chalicelib.fold.vetting import GradientVetting, SpoiledSum
from chalicelib.store.meta import JobMeta, MetaStore, Pending, mark_folded
from chalicelib.store.versions import VersionStore
from chalicelib.tasks.epochs import EpochQueue

log = logging.getLogger(__name__)
Gradients = dict[str, list[np.ndarray]]  # by lease id


class Spoiled(Exception):
    """Pending results that can no longer be folded as accepted (one gradient,
    or every result of one partial sum)."""

    def __init__(self, *pending: Pending):
        super().__init__(pending[0].key)
        self.pending = pending


class Updates:
    def __init__(
        self,
        meta: MetaStore,
        versions: VersionStore,
        epochs: EpochQueue,
        vetting: GradientVetting,
        committer: VersionCommit,
        discards: Discards,
        notices: CreditNotices,
        distinct_addresses: bool = True,
    ):
        self.meta, self.versions, self.epochs, self.vetting = meta, versions, epochs, vetting
        self.distinct_addresses = distinct_addresses  # a weight share is capped by address too (fold/shares.py)
        self.committer, self.discards, self.notices = committer, discards, notices

    def settle(self, meta: JobMeta, spec: JobSpec, gradients: Gradients | None = None) -> JobMeta:
        """Fold every full update META holds (K pending, or the rest of the
        epoch); queue the epoch if it is not queued."""
        while self.due(meta, spec):
            meta = self.update(meta, spec, gradients or {})
        return self.epochs.queue(meta, spec)

    def take(self, meta: JobMeta, spec: JobSpec, accepted: tuple[Pending, ...], gradients: Gradients) -> JobMeta:
        """Add accepted results to pending: an update due now folds them and
        records the rest in one META write; otherwise they are recorded as
        pending (the write conditional on META's revision that claims them)."""
        joined = replace(meta, pending=meta.pending + accepted)
        meta = joined if self.due(joined, spec) else self.meta.save(meta, joined)
        return self.settle(meta, spec, gradients)

    @staticmethod
    def due(meta: JobMeta, spec: JobSpec) -> bool:
        """Whether META's pending results make a full update."""
        return bool(meta.pending) and (
            len(meta.pending) >= spec.gradients_per_update
            or meta.folded_in_epoch + len(meta.pending) >= spec.tasks_per_epoch
        )

    def update(self, meta: JobMeta, spec: JobSpec, gradients: Gradients) -> JobMeta:
        """Apply META's first K pending gradients to version N and commit N+1.
        `gradients` holds those this invocation already read and checked;
        the others are read again and must still have the bytes accepted."""
        group = self._next_group(meta.pending, spec.gradients_per_update)
        if any(p.epoch != meta.epoch or meta.is_folded(p.epoch, p.batch) for p in group):
            raise RuntimeError(
                f"job {meta.job_id}: pending holds a batch that is not of epoch {meta.epoch} or already folded: {group}"
            )

        def read() -> Iterator[list[np.ndarray]]:
            for p in group:
                try:
                    yield gradients[p.lease_id] if p.lease_id in gradients else self.vetting.load(spec, p.key, p.digest)
                except (BadRequest, NotFound) as err:
                    log.warning("job %s: pending %s-%s spoiled: %s", meta.job_id, p.epoch, p.batch, err)
                    raise Spoiled(p)

        def read_sums() -> Iterator[Weighted]:
            """Each sum (already weighted) as it is, to be added to the others."""
            members: dict[str, list[Pending]] = {}  # each sum's results, sums in order
            for p in group:
                members.setdefault(p.key, []).append(p)
            try:
                for tensors in self.vetting.load_sums(
                    spec, [(key, summed[0].digest) for key, summed in members.items()]
                ):
                    yield tensors, 1
            except SpoiledSum as err:
                log.warning("job %s: %s", meta.job_id, err)
                raise Spoiled(*members[err.key])

        strategy = spec.build_strategy()
        claimed: list[float] = [spec.weight(p.samples) for p in group]
        # a fold in parts weighs its sums whole (their results' weights are summed already)
        sample_weights = claimed if group[0].summed else capped(group, claimed, spec.max_share, self.distinct_addresses)
        try:
            if any(p.summed for p in group):  # the total over the weight of every result behind the sums
                combined = divided(sum_in_order(read_sums())[0], float(sum(sample_weights)))
            elif isinstance(strategy, RunningSum):
                combined = strategy.mean(zip(read(), sample_weights))
            else:
                combined = strategy.aggregate(read())
        except Spoiled as err:
            return self._drop_spoiled(meta, list(err.pending))
        weights, state = self.versions.read(meta.job_id, meta.version, spec)
        new_weights, new_state = apply_update(spec.build_optimizer(), spec.weight_specs, weights, combined, state)
        self.versions.write(meta.job_id, meta.version + 1, spec, new_weights, new_state)

        after = replace(
            meta,
            version=meta.version + 1,
            pending=meta.pending[len(group) :],
            folded_total=meta.folded_total + len(group),
            folded_samples=meta.folded_samples + sum(p.samples for p in group),
            folded=mark_folded(meta.folded, (p.batch for p in group)),
        )
        if after.folded_in_epoch >= spec.tasks_per_epoch:
            epoch = meta.epoch + 1
            after = replace(
                after,
                folded=b"",
                epoch=epoch,
                queue_cursor=0,
                status="finished" if epoch >= spec.epochs else meta.status,
            )
        shares = [w / c if c else 1.0 for w, c in zip(sample_weights, claimed)]  # credit follows the weight
        committed = self.committer.commit(meta, after, group, earned(group, shares) if spec.credit else ())
        self.notices.committed(committed, spec)  # a tally of the credit the commit recorded (fold/credit.py)
        evaluation = spec.evaluation
        if evaluation is not None and spec.evaluates(committed.version, committed.status == "finished"):
            # after the commit: a fold retried after it finds its batches folded and queues nothing
            # again, so an evaluation is queued at most once (and lost if this send fails)
            self.epochs.tasks.enqueue_evaluation(meta.job_id, committed.version, evaluation.copies)
        return committed

    @staticmethod
    def _next_group(pending: tuple[Pending, ...], k: int) -> tuple[Pending, ...]:
        """The first K pending results; in a multi-level fold, every pending
        sum: K is then the least an update takes, so the job's one serial
        fold makes one version per invocation however many results it brings
        (fold/partials.py)."""
        return pending if pending and pending[0].summed else pending[:k]

    def _drop_spoiled(self, meta: JobMeta, spoiled: list[Pending]) -> JobMeta:
        """A pending gradient that is no longer the one accepted (overwritten
        through its still-valid upload form, or expired from S3) must not be
        folded, nor wedge the job: re-queue its batch, mark its lease
        discarded, then take it out of pending (re-queue first, see discards.py)."""
        self.discards.discard(meta.job_id, [(p.epoch, p.batch, [p.lease_id]) for p in spoiled], FoldOutcome.INVALID)
        return self.meta.save(meta, replace(meta, pending=tuple(p for p in meta.pending if p not in spoiled)))
