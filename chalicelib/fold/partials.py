"""The lower levels of a multi-level fold: results summed in parts.

One job's fold runs one invocation at a time (its messages share a FIFO
message group) and an invocation gets at most 10 messages, which caps a job
at what one invocation handles per second. A job with `fold_groups` G > 1
spreads the work over three levels, each a set of message groups whose folds
run in parallel:

1. G result groups (by batch, tasks/queues.py): each fold checks its results
   as the one-level fold does (duplicates, staleness, the gradient check),
   discards those it cannot use and sums the rest with the job's running-sum
   rule: a level-1 sum of up to 10 results.
2. ceil(G / 10) middle groups: each fold adds up to 10 level-1 sums into a
   level-2 sum of up to 100 results.
3. the job's own group: its top-level fold (Fold.apply_sums) takes level-2
   sums into META's pending list, up to 1,000 results an invocation.

A sum is stored in S3 under its digest, then sent on; it is used only with
those bytes. Levels 2 and 3 take a sum whole or not at all: one holding a
batch that is already taken (a lower fold ran again after a crash) or a
result now too stale is not taken, and its other batches are discarded, so
re-queued. A batch is still claimed only by the top level's write
conditional on META's revision (docs/architecture.md#exactly-once).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from chalicelib.domain.gradients import digest
from chalicelib.domain.records import PartialSum, Result
from chalicelib.domain.spec import JobSpec
from chalicelib.domain.strategies import RunningSum, Weighted, sum_in_order
from chalicelib.domain.weights import encode_tensors
from chalicelib.fold.claims import Claims
from chalicelib.fold.discards import Discards
from chalicelib.fold.outcomes import FoldOutcome
from chalicelib.fold.vetting import GradientVetting, Screened, SpoiledSum
from chalicelib.store.leases import LeaseRecords
from chalicelib.store.meta import JobMeta
from chalicelib.store.objects import ObjectStore
from chalicelib.store.queues import ResultQueue
from chalicelib.store.stats import Counters

FAN_IN = 10  # messages in one Lambda invocation from a FIFO queue


def middle_groups(fold_groups: int) -> int:
    return math.ceil(fold_groups / FAN_IN)


class PartialSums:
    def __init__(
        self,
        leases: LeaseRecords,
        vetting: GradientVetting,
        discards: Discards,
        objects: ObjectStore,
        results: ResultQueue,
        counters: Counters,
    ):
        self.leases, self.vetting, self.discards, self.objects = leases, vetting, discards, objects
        self.results, self.counters = results, counters

    def gather(self, meta: JobMeta, spec: JobSpec, results: list[Result]) -> list[FoldOutcome]:
        """Level 1: check a result group's results against META as read now
        and send the accepted ones' sum to a middle group. The gradients are
        summed as each chunk (as many as fit the memory share) is checked."""
        claims = Claims.read(meta, self.leases, results)
        strategy = spec.build_strategy()
        assert isinstance(strategy, RunningSum), "jobs/schema.py allows fold_groups > 1 only for running sums"
        outcomes: list[FoldOutcome] = []
        accepted: list[Result] = []

        def gradients() -> Iterator[Weighted]:
            step = self.vetting.parallelism(spec)
            for start in range(0, len(results), step):
                screened: Screened = self.vetting.screen(results[start : start + step], meta, spec, claims)
                self.discards.drop(meta.job_id, screened)
                outcomes.extend(screened.outcomes)
                for _, r, _, tensors in screened.accepted:
                    accepted.append(r)
                    yield tensors, spec.weight(r.samples)

        total, weight = strategy.sum(gradients())
        if weight:
            middle = accepted[0].batch % spec.fold_groups % middle_groups(spec.fold_groups)
            self._send(meta, spec, 1, total, accepted, middle)
        return [FoldOutcome.SUMMED if o is FoldOutcome.PENDING else o for o in outcomes]

    def combine(self, meta: JobMeta, spec: JobSpec, sums: list[PartialSum]) -> list[FoldOutcome]:
        """Level 2: add the level-1 sums that can still be taken whole into one
        level-2 sum for the job's top-level fold."""
        claims = Claims.read(meta, self.leases, [r for s in sums for r in s.results])
        outcomes = self.screen(meta, spec, sums, claims)
        while taken := [s for s, o in zip(sums, outcomes) if o is FoldOutcome.PENDING]:
            try:
                total, _ = sum_in_order(
                    (t, 1) for t in self.vetting.load_sums(spec, [(s.key, s.digest) for s in taken])
                )
            except SpoiledSum as err:  # not the bytes its fold stored: its batches go back, the rest go on
                i = next(i for i, s in enumerate(sums) if s.key == err.key and outcomes[i] is FoldOutcome.PENDING)
                self.discards.discard(
                    meta.job_id, [(r.epoch, r.batch, [r.lease_id]) for r in sums[i].results], FoldOutcome.INVALID
                )
                outcomes[i] = FoldOutcome.INVALID
                continue
            self._send(meta, spec, 2, total, [r for s in taken for r in s.results], None)
            break
        return [FoldOutcome.SUMMED if o is FoldOutcome.PENDING else o for o in outcomes]

    def _send(
        self,
        meta: JobMeta,
        spec: JobSpec,
        level: int,
        total: list[np.ndarray],
        results: list[Result],
        middle: int | None,
    ) -> None:
        # Stored first, then sent: a crash in between leaves the messages to
        # come back, and the same sum is stored again under the same key.
        data = encode_tensors(spec.weight_specs, total)
        partial = PartialSum(meta.job_id, meta.epoch, level, digest(data), tuple(results))
        self.objects.put(partial.key, data)
        self.results.send_sum(partial, middle)

    def screen(self, meta: JobMeta, spec: JobSpec, sums: list[PartialSum], claims: Claims) -> list[FoldOutcome]:
        """PENDING for each sum that may be taken whole (its batches are then
        claimed in `claims`); for the others, why not, after discarding
        their batches that nothing else holds."""
        outcomes: list[FoldOutcome] = []
        for s in sums:
            pairs: set[tuple[int, int]] = set()
            taken: list[Result] = []
            rest: list[Result] = []
            for r in s.results:  # a batch named twice is taken by its first mention
                (taken if claims.taken(r) or (r.epoch, r.batch) in pairs else rest).append(r)
                pairs.add((r.epoch, r.batch))
            if not taken and all(meta.version - r.base_version <= spec.staleness for r in s.results):
                for r in s.results:
                    claims.take(r)
                outcomes.append(FoldOutcome.PENDING)
                continue
            outcomes.append(
                FoldOutcome.SPLIT_SUM if taken and rest else FoldOutcome.DUPLICATE if taken else FoldOutcome.STALE
            )
            if rest:
                self.discards.discard(meta.job_id, [(r.epoch, r.batch, [r.lease_id]) for r in rest], outcomes[-1])
                claims.drop(rest)
            if taken:
                self.counters.add(meta.job_id, duplicates=len(taken))
        return outcomes
