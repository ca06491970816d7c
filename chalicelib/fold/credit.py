"""Credit for validated work: each identity earns, for every result of its
folded into a version, the result's samples times the model's parameters
(over a million). Nothing else earns credit: not a completion, not a
discarded or stale result, not a replica's check. Granted after the
version is committed, so a crash in between loses that update's credit
(never counts it twice: a retried fold finds the batches folded)."""

from __future__ import annotations

from typing import Sequence

from chalicelib.domain.spec import JobSpec
from chalicelib.store.credits import Credit, Credits
from chalicelib.store.meta import Pending


class CreditLedger:
    def __init__(self, credits: Credits):
        self.credits = credits

    def grant(self, job_id: str, spec: JobSpec, folded: Sequence[Pending]) -> None:
        """Credit the identities behind one update's results, and rank them."""
        if not spec.credit:
            return
        per_sample = spec.parameters / 1e6
        earned: dict[str, Credit] = {}
        for p in folded:
            c = earned.get(p.volunteer_id, Credit(p.volunteer_id))
            earned[p.volunteer_id] = Credit(
                p.volunteer_id, c.credit + p.samples * per_sample, c.results + 1, c.samples + p.samples
            )
        self.credits.rank(job_id, self.credits.add(job_id, earned))
