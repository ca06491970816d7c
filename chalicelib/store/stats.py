"""A job's counters, spread so that no item is hot.

- `STATS#<shard>`: counters (duplicates, discards by reason, rejected
  uploads, ...) added with atomic ADD to one of `SHARDS` items picked at
  random, and summed on read (one BatchGetItem).
- `FIRST#<counter>#<volunteer>`: that this volunteer has added to that
  counter before, so `volunteers_<counter>` counts each volunteer once.
- `ACTIVITY#<minute>`: which volunteers' results the fold saw in that minute,
  and how many; written once per fold invocation (a job's fold runs one
  invocation at a time, so a few writes a second at most) and kept an hour.
Nothing here is written per lease or per completion.
"""

from __future__ import annotations

import random
from typing import Iterable

from chalicelib.store.table import Records, job_key

SHARDS = 10
ACTIVITY_TTL_SECONDS = 3600


class Counters(Records):
    def add(self, job_id: str, **increments: int) -> None:
        names = {f"#c{i}": name for i, name in enumerate(increments)}
        values = {f":c{i}": value for i, value in enumerate(increments.values())}
        self._table.update_item(
            Key=job_key(job_id, f"STATS#{random.randrange(SHARDS)}"),
            UpdateExpression="ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(increments))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def read(self, job_id: str) -> dict[str, int]:
        totals: dict[str, int] = {}
        for item in self._batch_get([job_key(job_id, f"STATS#{shard}") for shard in range(SHARDS)]):
            for name, value in item.items():
                if name not in ("pk", "sk"):
                    totals[name] = totals.get(name, 0) + int(value)
        return totals

    def first_time(self, job_id: str, counter: str, volunteer_id: str) -> None:
        """Count `volunteer_id` in `volunteers_<counter>` unless it is there already."""
        try:
            self._table.put_item(
                Item=job_key(job_id, f"FIRST#{counter}#{volunteer_id}"), ConditionExpression="attribute_not_exists(pk)"
            )
        except self._condition_failed:
            return
        self.add(job_id, **{f"volunteers_{counter}": 1})

    def seen(self, job_id: str, volunteer_ids: Iterable[str], results: int) -> None:
        """Record the volunteers whose results the fold just took in."""
        minute = int(self._clock() // 60)
        ids = set(volunteer_ids)
        self._table.update_item(
            Key=job_key(job_id, f"ACTIVITY#{minute}"),
            UpdateExpression="ADD results :n" + (", volunteers :v" if ids else "") + " SET #t = :t",
            ExpressionAttributeNames={"#t": "ttl"},
            ExpressionAttributeValues={
                ":n": results,
                ":t": int(self._clock()) + ACTIVITY_TTL_SECONDS,
                **({":v": ids} if ids else {}),
            },
        )

    def activity(self, job_id: str, minutes: int = 5) -> tuple[set[str], list[int]]:
        """The volunteers seen in the last `minutes`, and results per minute, oldest first."""
        now = int(self._clock() // 60)
        keys = [job_key(job_id, f"ACTIVITY#{m}") for m in range(now - minutes + 1, now + 1)]
        items = {item["sk"]: item for item in self._batch_get(keys)}
        volunteers: set[str] = set()
        per_minute = []
        for key in keys:
            item = items.get(key["sk"], {})
            volunteers |= set(item.get("volunteers", ()))
            per_minute.append(int(item.get("results", 0)))
        return volunteers, per_minute
