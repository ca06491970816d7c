"""`STATS`: a job's counters (leases, completions, duplicates, discards by
reason ...), updated with atomic ADD: no revision, no contention."""
from __future__ import annotations

from chalicelib.store.table import Records, job_key


class Counters(Records):
    def add(self, job_id: str, **increments: int) -> None:
        names = {f"#c{i}": name for i, name in enumerate(increments)}
        values = {f":c{i}": value for i, value in enumerate(increments.values())}
        self._table.update_item(Key=job_key(job_id, "STATS"),
                                UpdateExpression="ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(increments))),
                                ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def read(self, job_id: str) -> dict[str, int]:
        item = self._table.get_item(Key=job_key(job_id, "STATS")).get("Item") or {}
        return {k: int(v) for k, v in item.items() if k not in ("pk", "sk")}
