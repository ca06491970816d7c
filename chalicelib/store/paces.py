"""`VOLUNTEER#<id>` / `PACE#<job id>`: the server's own timing of an
identity's last task in a job with a range of local steps, in seconds per
step (from its lease, or its previous completion if that came later: a
pipelined page leases its next task while one computes, to this
completion), and when that completion was, so that the next lease's step
budget comes from what the server saw rather than from what the volunteer
says. One item per identity and job, in the identity's partition (no job's
key takes these writes), kept a week."""

from __future__ import annotations

from decimal import Decimal

from chalicelib.store.table import LEASE_TTL_SECONDS, Records


def _key(job_id: str, volunteer_id: str) -> dict[str, str]:
    return {"pk": f"VOLUNTEER#{volunteer_id}", "sk": f"PACE#{job_id}"}


class Paces(Records):
    def get(self, job_id: str, volunteer_id: str) -> float | None:
        """Seconds per step of the identity's last timed task, if any."""
        item = self._item(job_id, volunteer_id)
        return float(item["seconds"]) if item else None

    def timed(self, job_id: str, volunteer_id: str, leased: float, steps: int) -> None:
        """A task leased at `leased` completed now with `steps` steps."""
        now = self._clock()
        last = self._item(job_id, volunteer_id)
        began = max(leased, float(last["at"])) if last and "at" in last else leased
        self._table.put_item(
            Item={
                **_key(job_id, volunteer_id),
                "seconds": Decimal(str(round(max(now - began, 0.0) / steps, 4))),
                "at": Decimal(str(round(now, 3))),
                "ttl": int(now) + LEASE_TTL_SECONDS,
            }
        )

    def _item(self, job_id: str, volunteer_id: str) -> dict | None:
        return self._table.get_item(Key=_key(job_id, volunteer_id)).get("Item")
