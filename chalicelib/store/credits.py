"""`CREDIT#<volunteer id>` and `LEADERS` in a job's partition: each
identity's credit for its folded work (store: atomic ADDs by the job's fold),
and the job's top identities, which the public status document shows
without a query over every volunteer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from decimal import Decimal

from boto3.dynamodb.conditions import Key

from chalicelib.store.table import Records, job_key

LEADERS = 20


def display_name(volunteer_id: str) -> str:
    """What a leaderboard shows for an identity: the display name it chose
    and the start of its random part (names need not be unique); an
    identity that chose none is shown as anonymous."""
    name, _, tag = volunteer_id.rpartition(".")
    return f"{'anonymous' if name in ('', 'v') else name} ({tag[:4]})"


@dataclass(frozen=True)
class Credit:
    volunteer_id: str
    credit: float = 0.0  # samples x parameters / 1e6 over its folded results
    results: int = 0
    samples: int = 0

    def public(self) -> dict:
        return {
            "name": display_name(self.volunteer_id),
            "credit": round(self.credit, 6),
            "results": self.results,
            "samples": self.samples,
        }


def _credit(volunteer_id: str, item: dict) -> Credit:
    return Credit(volunteer_id, float(item.get("credit", 0)), int(item.get("results", 0)), int(item.get("samples", 0)))


class Credits(Records):
    def add(self, job_id: str, earned: dict[str, Credit]) -> list[Credit]:
        """Add each identity's newly earned credit; its new totals."""
        totals = []
        for volunteer_id, c in earned.items():
            reply = self._table.update_item(
                Key=job_key(job_id, f"CREDIT#{volunteer_id}"),
                UpdateExpression="ADD credit :c, results :r, samples :s",
                ExpressionAttributeValues={":c": Decimal(repr(round(c.credit, 9))), ":r": c.results, ":s": c.samples},
                ReturnValues="ALL_NEW",
            )
            totals.append(_credit(volunteer_id, reply["Attributes"]))
        return totals

    def of(self, job_id: str, volunteer_id: str) -> Credit:
        item = self._table.get_item(Key=job_key(job_id, f"CREDIT#{volunteer_id}")).get("Item") or {}
        return _credit(volunteer_id, item)

    def all(self, job_id: str) -> list[Credit]:
        """Every identity's credit, most first (a query: for the admin export)."""
        items = self._query(Key("pk").eq(f"JOB#{job_id}") & Key("sk").begins_with("CREDIT#"))
        return sorted((_credit(i["sk"][len("CREDIT#") :], i) for i in items), key=lambda c: (-c.credit, c.volunteer_id))

    def leaders(self, job_id: str) -> list[Credit]:
        item = self._table.get_item(Key=job_key(job_id, "LEADERS")).get("Item")
        return [Credit(**c) for c in json.loads(item["leaders"])] if item else []

    def rank(self, job_id: str, totals: list[Credit]) -> None:
        """Merge new totals into the job's top LEADERS. Only the job's fold,
        which runs one invocation at a time, writes it."""
        merged = {c.volunteer_id: c for c in self.leaders(job_id)}
        merged.update({c.volunteer_id: c for c in totals})
        top = sorted(merged.values(), key=lambda c: (-c.credit, c.volunteer_id))[:LEADERS]
        self._table.put_item(
            Item={**job_key(job_id, "LEADERS"), "leaders": json.dumps([asdict(c) for c in top], separators=(",", ":"))}
        )
