"""The first level of a two-level fold: one message group's results, summed.

One job's fold runs one invocation at a time (its results share a FIFO
message group), which caps a job at what one invocation handles per second.
A job with `fold_groups` G > 1 spreads its results over G more groups, by
batch (tasks/queues.py). Each group's fold, in parallel with the others,
checks its results as the one-level fold does (duplicates, staleness, the
gradient check), discards those it cannot use, and sums the rest with the
job's running-sum rule into one partial sum: stored in S3 under its digest,
then sent to the job's own group. There the job's top-level fold
(Fold.apply_sums) takes whole sums into META's pending list with the same
conditional write that takes single results, so a batch is still claimed
exactly once (docs/architecture.md#exactly-once); a sum it cannot take whole
is not taken, and its batches that nothing else holds are re-queued.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from chalicelib.fold.claims import Claims
from chalicelib.fold.discards import Discards
from chalicelib.fold.outcomes import FoldOutcome
from chalicelib.fold.strategies import RunningSum
from chalicelib.fold.vetting import GradientVetting, Screened, digest
from chalicelib.jobs.spec import JobSpec
from chalicelib.model.keys import partial_sum_key
from chalicelib.model.weights import encode_tensors
from chalicelib.store.leases import LeaseRecords
from chalicelib.store.meta import JobMeta
from chalicelib.store.objects import ObjectStore
from chalicelib.tasks.queues import ResultQueue
from chalicelib.tasks.records import PartialSum, Result


class PartialSums:
    def __init__(self, leases: LeaseRecords, vetting: GradientVetting, discards: Discards, objects: ObjectStore,
                 results: ResultQueue):
        self.leases, self.vetting, self.discards, self.objects, self.results = leases, vetting, discards, objects, results

    def gather(self, meta: JobMeta, spec: JobSpec, results: list[Result]) -> list[FoldOutcome]:
        """Check one group's results against META as read now and send the
        accepted ones' sum to the job's top-level fold. The gradients are
        summed as each chunk (as many as fit the memory share) is checked."""
        claims = Claims.read(meta, self.leases, results)
        strategy = spec.build_strategy()
        assert isinstance(strategy, RunningSum), "jobs/schema.py allows fold_groups > 1 only for running sums"
        outcomes: list[FoldOutcome] = []
        accepted: list[Result] = []

        def gradients() -> Iterator[list[np.ndarray]]:
            step = self.vetting.parallelism(spec)
            for start in range(0, len(results), step):
                screened: Screened = self.vetting.screen(results[start:start + step], meta, spec, claims)
                self.discards.drop(meta.job_id, screened)
                outcomes.extend(screened.outcomes)
                for _, r, _, tensors in screened.accepted:
                    accepted.append(r)
                    yield tensors
        total, count = strategy.sum(gradients())
        if count:
            # Stored first, then sent: a crash in between leaves the results to
            # come back, and the same sum is stored again under the same key.
            data = encode_tensors(spec.weight_specs, total)
            partial = PartialSum(meta.job_id, meta.epoch, digest(data), tuple(accepted))
            self.objects.put(partial_sum_key(meta.job_id, meta.epoch, partial.digest), data)
            self.results.send_sum(partial)
        return [FoldOutcome.SUMMED if o is FoldOutcome.PENDING else o for o in outcomes]
