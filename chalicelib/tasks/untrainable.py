"""A job that cannot train pauses itself. When its tasks come back as compute
errors from `SOURCES` different volunteers (source addresses, where addresses
count) before any result of it was folded or accepted, the model is one the browsers
cannot train (a layer TF.js lacks, where `create`'s check was skipped), and
every volunteer's time on it is wasted. Only before any progress, and only
once: a hand-back is a volunteer's claim, so a job that trained is never
paused by claims, and the operator's resume overrides the pause for good."""

from __future__ import annotations

from dataclasses import replace

from chalicelib.domain.addresses import client
from chalicelib.publish.status import StatusBoard
from chalicelib.store.jobs import JobRecords
from chalicelib.store.meta import MetaStore, StaleState
from chalicelib.store.stats import Counters

SOURCES = 3
COUNTER = "compute_error_sources"  # its `volunteers_` count: the different sources of compute errors


class Untrainable:
    def __init__(
        self, meta: MetaStore, jobs: JobRecords, counters: Counters, board: StatusBoard, distinct_addresses: bool
    ):
        self.meta, self.jobs, self.counters, self.board = meta, jobs, counters, board
        self.distinct_addresses = distinct_addresses  # off where every volunteer shares one address (local stack)

    def compute_error(self, job_id: str, volunteer_id: str, address: str) -> None:
        """A task of the job came back because the volunteer's browser could not compute it."""
        self.counters.first_time(job_id, COUNTER, client(volunteer_id, address, self.distinct_addresses))
        meta = self.meta.get(job_id)
        if meta.status != "running" or meta.folded_total or meta.pending or meta.auto_paused:
            return
        sources = self.counters.read(job_id).get(f"volunteers_{COUNTER}", 0)
        if sources < SOURCES:
            return
        reason = (
            f"its tasks failed to compute in {sources} volunteers' browsers before any result was folded "
            "(a model the page cannot train?); `crowdtrain resume` overrides this"
        )
        try:
            meta = self.meta.save(meta, replace(meta, status="paused", paused_reason=reason, auto_paused=True))
        except StaleState:
            return  # the fold or the operator moved META meanwhile: the next compute error looks again
        self.board.publish(meta, self.jobs.spec(job_id), force=True)
        self.board.publish_index()
