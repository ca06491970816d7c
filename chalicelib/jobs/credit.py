"""Reading credit (earned in the fold, fold/credit.py): a volunteer's own,
with its identity token, and a job's whole ledger for its operator."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.errors import NotFound
from chalicelib.store.credits import Credits
from chalicelib.store.jobs import JobRecords
from chalicelib.tasks.identities import Identities

UNIT = "samples x parameters / 1e6, over results folded into a version"


class CreditView:
    def __init__(self, jobs: JobRecords, credits: Credits, identities: Identities):
        self.jobs, self.credits, self.identities = jobs, credits, identities

    def _points(self, job_id: str) -> None:
        if not self.jobs.spec(job_id).credit:  # NotFound for an unknown job
            raise NotFound(f"job {job_id} keeps no credit")

    def volunteer(self, job_id: str, volunteer_token: Any) -> dict[str, Any]:
        """The credit of the identity presenting its token, in one job."""
        volunteer_id = self.identities.verify(volunteer_token)
        self._points(job_id)
        return {
            "job_id": job_id,
            "volunteer_id": volunteer_id,
            "unit": UNIT,
            **self.credits.of(job_id, volunteer_id).public(),
        }

    def ledger(self, job_id: str) -> dict[str, Any]:
        """Every identity's credit in a job, most first (admin: `crowdtrain credit JOB`)."""
        self._points(job_id)
        return {
            "job_id": job_id,
            "unit": UNIT,
            "volunteers": [{"volunteer_id": c.volunteer_id, **c.public()} for c in self.credits.all(job_id)],
        }
