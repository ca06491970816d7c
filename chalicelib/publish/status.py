"""The public status documents: what volunteer pages and dashboards poll.

`jobs/<id>/status.json` (one per started job) and `jobs/index.json` (the
started jobs) sit in the data bucket and are served through CloudFront with a
short max-age, so however many pages poll, none of them reaches DynamoDB.
The fold publishes a job's document at most every few seconds (and at once
when the job's status changes), and one it skips is written when the
interval ends (store/due.py); admin actions publish at once. Activity is
counted from the fold's own records (store/stats.py), never from lease
records.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable

from chalicelib.domain.errors import NotFound
from chalicelib.domain.keys import INDEX_KEY, model_key, status_key
from chalicelib.domain.spec import JobSpec
from chalicelib.store.credits import Credits
from chalicelib.store.due import DuePublishes
from chalicelib.store.evaluations import EvaluationRecords
from chalicelib.store.foldlog import FoldLogStore
from chalicelib.store.jobs import JobRecords
from chalicelib.store.meta import JobMeta, MetaStore
from chalicelib.store.objects import ObjectStore
from chalicelib.store.stats import Counters

HISTORY_POINTS = 500
MAX_AGE_SECONDS = 5
SHORT_CACHE = f"public, max-age={MAX_AGE_SECONDS}"


@dataclass(frozen=True)
class Sources:
    """What a job's status document is made of besides its META and spec."""

    counters: Counters
    fold_log: FoldLogStore
    evaluations: EvaluationRecords
    credits: Credits


class StatusBoard:
    def __init__(
        self,
        jobs: JobRecords,
        meta: MetaStore,
        objects: ObjectStore,
        sources: Sources,
        due: DuePublishes | None = None,
        clock: Callable[[], float] = time.time,
        interval: float = MAX_AGE_SECONDS,
    ):
        self.jobs, self.meta, self.objects, self.due = jobs, meta, objects, due
        s = sources
        self.counters, self.fold_log, self.evaluations, self.credits = s.counters, s.fold_log, s.evaluations, s.credits
        self.clock, self.interval = clock, interval
        self._published: dict[str, float] = {}
        self._trailing: dict[str, float] = {}  # when the document skipped last is due, per job

    def document(self, meta: JobMeta, spec: JobSpec) -> dict[str, Any]:
        """A job's progress; none of it is secret."""
        counters = self.counters.read(meta.job_id)
        volunteers, per_minute = self.counters.activity(meta.job_id)
        return {
            **meta.public(),
            "spec": spec.public(),
            "model_url": self.objects.public_url(model_key(meta.job_id, meta.version))
            if meta.status != "uploading"
            else None,
            "samples": meta.folded_samples,
            "active_volunteers": len(volunteers),  # whose results the fold took in, last 5 minutes
            "results_per_minute": per_minute,
            "discarded": {k[len("discarded_") :]: v for k, v in counters.items() if k.startswith("discarded_")},
            "counters": counters,
            # the training loss volunteers report about their own tasks
            "history": self.fold_log.history(meta, HISTORY_POINTS),
            # held-out loss (and accuracy) that enough volunteers agreed on (tasks/evaluations.py)
            "held_out": [h.to_json() for h in self.evaluations.accepted(meta.job_id)] if spec.evaluation else [],
            # the identities with the most credit for folded work (fold/credit.py); empty without points
            "leaderboard": [c.public() for c in self.credits.leaders(meta.job_id)] if spec.credit else [],
            "published": self.clock(),
        }

    def publish(self, meta: JobMeta, spec: JobSpec, force: bool = False) -> None:
        """Write the job's document, unless one was written in the last few
        seconds (`force`: a status change, written at once); a document
        skipped is sent on to be written when the interval ends (once per interval)."""
        if meta.status == "uploading":
            return
        now = self.clock()
        due = self._published.get(meta.job_id, float("-inf")) + self.interval
        if not force and now < due:
            if self.due is not None and self._trailing.get(meta.job_id) != due:
                self.due.send(meta.job_id, due - now)
                self._trailing[meta.job_id] = due
            return
        self._published[meta.job_id] = now
        self.objects.put(
            status_key(meta.job_id), json.dumps(self.document(meta, spec)).encode(), "application/json", SHORT_CACHE
        )

    def publish_due(self, job_ids: list[str]) -> None:
        """The documents a fold skipped, now that they are due: as META is now (a deleted job's: none)."""
        for job_id in job_ids:
            try:
                meta = self.meta.get(job_id)
            except NotFound:
                continue
            if meta.status != "deleting":  # a job being deleted has its files removed
                self.publish(meta, self.jobs.spec(job_id), force=True)

    def publish_index(self) -> None:
        """The started jobs, for the pages' job list."""
        jobs = []
        for job_id in self.jobs.ids():
            try:
                meta = self.meta.get(job_id)
            except NotFound:
                continue  # deleted meanwhile
            if meta.status not in ("uploading", "deleting"):
                jobs.append({**meta.public(), "name": self.jobs.spec(job_id).name})
        self.objects.put(INDEX_KEY, json.dumps({"jobs": jobs}).encode(), "application/json", SHORT_CACHE)

    def read(self, key: str) -> dict[str, Any]:
        """A published document (the progress routes serve it as it is)."""
        return json.loads(self.objects.get(key))
