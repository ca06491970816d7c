"""`VOLUNTEER#<id>` / `PACE#<job id>`: the server's own timing of an
identity's last task in a job with a range of local steps, in seconds per
step (from its lease to its completion), so that the next lease's step
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
        item = self._table.get_item(Key=_key(job_id, volunteer_id)).get("Item")
        return float(item["seconds"]) if item else None

    def put(self, job_id: str, volunteer_id: str, seconds_per_step: float) -> None:
        self._table.put_item(
            Item={
                **_key(job_id, volunteer_id),
                "seconds": Decimal(str(round(seconds_per_step, 4))),
                "ttl": int(self._clock()) + LEASE_TTL_SECONDS,
            }
        )
