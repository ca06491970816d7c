"""The fold log: `FOLD#<epoch>#<batch>` (which version folded the batch) and
`VER#<version>` (loss, samples, gradients and time of each version).

Written after META advances, so a crash can cut the latest entry short: META
keeps that entry (`last_fold`), readers merge it in, and the next fold
rewrites it before committing its own (see fold/commit.py).
"""
from __future__ import annotations

from decimal import Decimal

from boto3.dynamodb.conditions import Key

from chalicelib.store.meta import FoldLog, JobMeta
from chalicelib.store.table import Records, job_key


def fold_sort_key(epoch: int, batch: int) -> str:
    return f"FOLD#{epoch:06d}#{batch:06d}"


def _version_sort_key(version: int) -> str:
    return f"VER#{version:010d}"


class FoldLogStore(Records):
    def is_logged(self, job_id: str, version: int) -> bool:
        """Whether a version's entry is whole: its VER record is written last."""
        return "Item" in self._table.get_item(Key=job_key(job_id, _version_sort_key(version)), ConsistentRead=True)

    def write(self, job_id: str, entry: FoldLog) -> None:
        """Write one fold's log records; the version record last, so that its
        presence means the whole entry is there. Rewriting is harmless."""
        with self._table.batch_writer() as batch:
            for epoch, b, lease_id in entry.batches:
                batch.put_item(Item={**job_key(job_id, fold_sort_key(epoch, b)), "version": entry.version,
                                     "lease_id": lease_id})
        self._table.put_item(Item={**job_key(job_id, _version_sort_key(entry.version)), "version": entry.version,
                                   "loss": Decimal(repr(entry.loss)), "samples": entry.samples,
                                   "gradients": len(entry.batches), "time": Decimal(str(entry.time))})

    def folds(self, meta: JobMeta) -> list[tuple[int, int, int]]:
        """(epoch, batch, version) of every folded batch of META's job."""
        items = self._query(Key("pk").eq(f"JOB#{meta.job_id}") & Key("sk").begins_with("FOLD#"))
        logged = {(int(i["sk"][5:11]), int(i["sk"][12:])): int(i["version"]) for i in items}
        last = meta.last_fold
        logged.update({(e, b): last.version for e, b, _ in last.batches} if last else {})
        return sorted((e, b, v) for (e, b), v in logged.items())

    def history(self, meta: JobMeta, limit: int = 500) -> list[dict[str, float]]:
        """The newest `limit` versions, oldest first: version, loss, samples, gradients, time.
        Takes the META its caller already read, whose last fold may not be logged yet."""
        reply = self._table.query(
            KeyConditionExpression=Key("pk").eq(f"JOB#{meta.job_id}") & Key("sk").begins_with("VER#"),
            ScanIndexForward=False, Limit=limit)
        points = [{"version": int(i["version"]), "loss": float(i["loss"]), "samples": int(i["samples"]),
                   "gradients": int(i["gradients"]), "time": float(i["time"])} for i in reversed(reply["Items"])]
        last = meta.last_fold
        if last and (not points or points[-1]["version"] < last.version):
            points = (points + [last.point()])[-limit:]
        return points
