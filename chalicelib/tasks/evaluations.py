"""Held-out evaluations that no single volunteer can forge.

The fold queues `evaluation.copies` evaluation tasks of a version every
`evaluation.every` versions and at the end (admin: version 0 at start). A
volunteer leases one like a training task, runs the version forward over
the job's held-out batches and completes with the mean loss (and accuracy,
for a classifier); no gradient is uploaded. Each volunteer's answer is a
claim on the version (store/evaluations.py, one per volunteer). Once
`copies` different volunteers' claims agree (losses within the job's
relative tolerance, accuracies within ACCURACY_TOLERANCE), their median is
accepted and published in the job's status document as `held_out`, beside
the training losses volunteers report about themselves. Where source
addresses tell clients apart, agreeing claims count once per address, so
that one client's identities cannot outvote anyone. Claims that do
not agree ask for one more copy, up to MAX_CLAIMS: the majority settles it,
so one hostile answer neither forges the figure nor blocks it.
"""

from __future__ import annotations

import statistics

from chalicelib.domain.sections import ACCURACY_TOLERANCE, Evaluation
from chalicelib.domain.spec import JobSpec
from chalicelib.publish.status import StatusBoard
from chalicelib.store.evaluations import Claim, EvaluationRecords, HeldOut
from chalicelib.store.meta import MetaStore
from chalicelib.store.queues import TaskQueue

MAX_CLAIMS = 5
# A volunteer that meets an evaluation it answered already puts it back out of its sight this long.
REQUEUE_DELAY_SECONDS = 30


def agree(a: Claim, b: Claim, tolerance: float) -> bool:
    if abs(a.loss - b.loss) > tolerance * max(1.0, abs(a.loss), abs(b.loss)):
        return False
    if (a.accuracy is None) != (b.accuracy is None):
        return False
    return a.accuracy is None or b.accuracy is None or abs(a.accuracy - b.accuracy) <= ACCURACY_TOLERANCE


def support(group: list[Claim], distinct_addresses: bool) -> int:
    """How many votes a group of agreeing claims is: one per address where addresses count."""
    return len({c.address or c.volunteer_id for c in group}) if distinct_addresses else len(group)


def agreement(
    version: int, claims: list[Claim], evaluation: Evaluation, distinct_addresses: bool = False
) -> HeldOut | None:
    """The accepted value: the median of the best-supported group of claims
    that all agree with one claim, once its support is `copies`; None before."""
    best: list[Claim] = []
    for claim in claims:
        group = [other for other in claims if agree(claim, other, evaluation.tolerance)]
        if support(group, distinct_addresses) > support(best, distinct_addresses):
            best = group
    if support(best, distinct_addresses) < evaluation.copies:
        return None
    accuracies = [c.accuracy for c in best if c.accuracy is not None]
    return HeldOut(
        version,
        statistics.median(c.loss for c in best),
        statistics.median(accuracies) if accuracies else None,
        len(best),
    )


class Evaluations:
    def __init__(
        self,
        records: EvaluationRecords,
        tasks: TaskQueue,
        meta: MetaStore,
        board: StatusBoard,
        distinct_addresses: bool = True,
    ):
        self.records, self.tasks, self.meta, self.board = records, tasks, meta, board
        self.distinct_addresses = distinct_addresses  # off where every volunteer shares one address (local stack)

    def settle(self, job_id: str, spec: JobSpec, claim: Claim, version: int) -> str:
        """Record a volunteer's claim on `version`: accepted (and published)
        once enough agree, a further copy queued where they do not."""
        claims = self.records.claim(job_id, version, claim)
        evaluation = spec.evaluation
        # evaluation tasks are queued only for a job with an evaluation (jobs/admin.py, fold/updates.py)
        assert evaluation is not None, "only a job with held-out batches has evaluation tasks"
        held = agreement(version, claims, evaluation, self.distinct_addresses)
        if held is not None:
            if self.records.accept(job_id, version, held):
                self.board.publish(self.meta.get(job_id), spec, force=True)
            return "accepted"
        if len(claims) >= evaluation.copies:
            if len(claims) < MAX_CLAIMS:
                self.tasks.enqueue_evaluation(job_id, version, 1)
                return "disputed"
            return "unsettled"
        return "waiting"

    def answered(self, job_id: str, version: int, volunteer_id: str) -> bool:
        return self.records.claimed_by(job_id, version, volunteer_id)
