"""The fold log: one `VER#<version>` item per version, with its loss, samples,
time, the (epoch, batch, lease id) of every gradient folded into it and, in a
job with points, what each identity behind them earned.

Written after META advances, so a crash can cut the latest entry short: META
keeps that entry (`last_fold`), readers merge it in, and the next fold
rewrites it before committing its own (see fold/commit.py).
"""

from __future__ import annotations

import json
from decimal import Decimal

from boto3.dynamodb.conditions import Key

from chalicelib.store.meta import FoldLog, JobMeta
from chalicelib.store.table import Records, job_key


def _version_sort_key(version: int) -> str:
    return f"VER#{version:010d}"


class FoldLogStore(Records):
    def is_logged(self, job_id: str, version: int) -> bool:
        """Whether a version's entry is there."""
        return "Item" in self._table.get_item(Key=job_key(job_id, _version_sort_key(version)), ConsistentRead=True)

    def write(self, job_id: str, entry: FoldLog) -> None:
        """Write one fold's log entry, in one item (K is at most 64, so a few
        KB). Rewriting it is harmless."""
        self._table.put_item(
            Item={
                **job_key(job_id, _version_sort_key(entry.version)),
                "version": entry.version,
                "loss": Decimal(repr(entry.loss)),
                "samples": entry.samples,
                "gradients": len(entry.batches),
                "time": Decimal(str(entry.time)),
                "batches": json.dumps(entry.batches, separators=(",", ":")),
                **({"earned": json.dumps(entry.earned, separators=(",", ":"))} if entry.earned else {}),
            }
        )

    def entries(self, meta: JobMeta, first: int, last: int) -> list[FoldLog]:
        """The entries of versions `first` to `last` (at most META's), oldest
        first. Takes the META its caller read: the latest entry may be there only."""
        items = self._query(
            Key("pk").eq(f"JOB#{meta.job_id}") & Key("sk").between(_version_sort_key(first), _version_sort_key(last))
        )
        logged = {
            int(i["version"]): FoldLog(
                int(i["version"]),
                float(i["loss"]),
                int(i["samples"]),
                float(i["time"]),
                tuple(tuple(b) for b in json.loads(i["batches"])),
                tuple(tuple(e) for e in json.loads(i.get("earned", "[]"))),
            )
            for i in items
        }
        if meta.last_fold and first <= meta.last_fold.version <= last:
            logged[meta.last_fold.version] = meta.last_fold
        return [logged[v] for v in sorted(logged)]

    def folds(self, meta: JobMeta) -> list[tuple[int, int, int]]:
        """(epoch, batch, version) of every folded batch of META's job."""
        items = self._query(Key("pk").eq(f"JOB#{meta.job_id}") & Key("sk").begins_with("VER#"))
        logged = {(e, b): int(i["version"]) for i in items for e, b, _ in json.loads(i["batches"])}
        last = meta.last_fold
        logged.update({(e, b): last.version for e, b, _ in last.batches} if last else {})
        return sorted((e, b, v) for (e, b), v in logged.items())

    def history(self, meta: JobMeta, limit: int = 500) -> list[dict[str, float]]:
        """The newest `limit` versions, oldest first: version, loss, samples, gradients, time.
        Takes the META its caller already read, whose last fold may not be logged yet."""
        reply = self._table.query(
            KeyConditionExpression=Key("pk").eq(f"JOB#{meta.job_id}") & Key("sk").begins_with("VER#"),
            ScanIndexForward=False,
            Limit=limit,
        )
        points = [
            {
                "version": int(i["version"]),
                "loss": float(i["loss"]),
                "samples": int(i["samples"]),
                "gradients": int(i["gradients"]),
                "time": float(i["time"]),
            }
            for i in reversed(reply["Items"])
        ]
        last = meta.last_fold
        if last and (not points or points[-1]["version"] < last.version):
            points = (points + [last.point()])[-limit:]
        return points
