"""Credit for validated work: each identity earns, for every result of its
folded into a version, the result's samples times the model's parameters
(over a million). Nothing else earns credit: not a completion, not a
discarded or stale result, not a replica's check.

The fold writes no credit: what each identity earned rides in the version's
fold log entry, which META's commit carries (fold/commit.py), so it is
recorded exactly when the version is. A tally then sums the entries since the
last one into each identity's credit item and the leaderboard: one write per
identity per tally, however many of its results were folded meanwhile, in a
message group of its own beside the job's fold. It runs after a commit at
most once a `credit_tally_seconds` window (SQS drops the window's repeats) and
after the job's last version, so credit shows within about a window; the
credit of a job paused mid-window is tallied when it folds again.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from chalicelib.domain.errors import NotFound
from chalicelib.domain.records import CreditDue
from chalicelib.domain.spec import JobSpec
from chalicelib.publish.status import StatusBoard
from chalicelib.store.credits import Credit, Credits, CreditTallies
from chalicelib.store.foldlog import FoldLogStore
from chalicelib.store.jobs import JobRecords
from chalicelib.store.meta import JobMeta, MetaStore, Pending
from chalicelib.store.queues import ResultQueue

MAX_VERSIONS = 1_000  # tallied in one pass; the next notice takes the rest


def earned(folded: Sequence[Pending], shares: Sequence[float] | None = None) -> tuple[tuple[str, int, int], ...]:
    """(volunteer id, results, samples) of each identity behind an update's
    results; `shares`: the part of each result's weight the update kept
    (fold/shares.py), which its samples earn."""
    per: dict[str, tuple[int, int]] = {}
    for i, p in enumerate(folded):
        results, samples = per.get(p.volunteer_id, (0, 0))
        kept = p.samples if shares is None else round(p.samples * shares[i])
        per[p.volunteer_id] = (results + 1, samples + kept)
    return tuple((volunteer_id, r, s) for volunteer_id, (r, s) in sorted(per.items()))


class CreditNotices:
    """The fold's side: after a commit, ask for a tally once per window (and
    after the job's last version, or after every version with a window of 0)."""

    def __init__(self, results: ResultQueue, seconds: int, clock: Callable[[], float] = time.time):
        self.results, self.seconds, self.clock = results, seconds, clock

    def committed(self, meta: JobMeta, spec: JobSpec) -> None:
        if not spec.credit:
            return
        if self.seconds <= 0 or meta.status == "finished":
            window = f"{meta.job_id}-v{meta.version}"
        else:
            window = f"{meta.job_id}-t{int(self.clock() // self.seconds)}"
        self.results.send_credit_due(CreditDue(meta.job_id), window)


class CreditTally:
    """Sums fold log entries into credit items, each version exactly once:
    the range a pass takes is recorded before it writes, a retried pass takes
    the same range, and an identity whose item already counts it is skipped."""

    def __init__(
        self,
        meta: MetaStore,
        jobs: JobRecords,
        fold_log: FoldLogStore,
        credits: Credits,
        tallies: CreditTallies,
        board: StatusBoard,
    ):
        self.meta, self.jobs, self.fold_log = meta, jobs, fold_log
        self.credits, self.tallies, self.board = credits, tallies, board

    def handle(self, dues: Sequence[CreditDue]) -> None:
        for job_id in dict.fromkeys(d.job_id for d in dues):
            self.tally(job_id)

    def tally(self, job_id: str) -> int:
        """Tally a job's versions since the last pass (at most MAX_VERSIONS); how many."""
        try:
            meta, spec = self.meta.get(job_id), self.jobs.spec(job_id)
        except NotFound:
            return 0  # deleted meanwhile
        if meta.status == "deleting":
            return 0
        # (a job without points asks for no tally: CreditNotices)
        through, end = self.tallies.begin(job_id, self.tallies.read(job_id), meta.version, MAX_VERSIONS)
        if end <= through:
            return 0
        per_sample = spec.parameters / 1e6
        sums: dict[str, Credit] = {}
        for entry in self.fold_log.entries(meta, through + 1, end):
            for volunteer_id, results, samples in entry.earned:
                c = sums.get(volunteer_id, Credit(volunteer_id))
                sums[volunteer_id] = Credit(
                    volunteer_id, c.credit + samples * per_sample, c.results + results, c.samples + samples
                )
        if sums:
            self.credits.rank(job_id, self.credits.add(job_id, sums, end))
        self.tallies.finish(job_id, end)
        if sums:  # the leaderboard: at most every few seconds, as the fold publishes, and at once at the end
            meta = self.meta.get(job_id)
            self.board.publish(meta, spec, force=meta.status == "finished")
        return end - through
