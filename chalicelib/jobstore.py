"""DynamoDB behind one class: job records, leases, folded batches, versions.

One table, items grouped under `pk = JOB#<id>`:
- `SPEC`: the immutable job spec.
- `META`: the mutable progress (status, version, epoch, which batches of the
  epoch are folded, pending results, for replicated jobs the results awaiting
  their second copy, and the latest fold's log entry). Every write to it is
  conditional on its revision `rev`, so two writers can never both succeed
  from the same state; the version only ever moves N -> N+1, and a batch
  becomes folded in the same single-item write that advances the version.
  Single-item: no transaction, which costs twice the writes on DynamoDB.
- `FOLD#<epoch>#<batch>` and `VER#<version>`: the fold log (which version
  folded each batch; loss, samples and gradients of each version), written
  after META advances. A crash can cut the latest entry short, so META keeps
  it, readers merge it in, and the next fold rewrites it before committing.
- `LEASE#<lease id>`: one per lease; its state moves leased -> completed, and
  completed -> discarded where the fold drops the result, each by a
  conditional write: a replayed completion finds the lease no longer leased.
- `STATS`: counters updated with atomic ADD (no revision, no contention).
A `pk = JOBS` item per job lets jobs be listed without a scan.
"""
from __future__ import annotations

import base64
import json
import time
import zlib
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Iterable

from boto3.dynamodb.conditions import Attr, Key

from chalicelib.errors import Conflict, NotFound
from chalicelib.spec import JobSpec

LEASE_TTL_SECONDS = 7 * 24 * 3600


class StaleState(Exception):
    """META changed since it was read; re-read and try again."""


@dataclass(frozen=True)
class Pending:
    """A validated result waiting in META for the rest of its update."""

    epoch: int
    batch: int
    lease_id: str
    key: str
    base_version: int
    loss: float
    samples: int
    volunteer: str = ""
    digest: str = ""  # sha256 of the bytes the fold accepted; folded only if unchanged


@dataclass(frozen=True)
class FoldLog:
    """What one fold did: the log entry for its version."""

    version: int
    loss: float
    samples: int
    time: float
    batches: tuple[tuple[int, int, str], ...]  # (epoch, batch, lease id)

    def point(self) -> dict[str, float]:
        return {"version": self.version, "loss": self.loss, "samples": self.samples,
                "gradients": len(self.batches), "time": self.time}


def mark_folded(bitmap: bytes, batches: Iterable[int]) -> bytes:
    """`bitmap` with the bits of `batches` set (it grows as needed)."""
    bits = bytearray(bitmap)
    for b in batches:
        if b // 8 >= len(bits):
            bits.extend(bytes(b // 8 + 1 - len(bits)))
        bits[b // 8] |= 1 << (b % 8)
    return bytes(bits)


@dataclass(frozen=True)
class JobMeta:
    job_id: str
    status: str  # uploading | running | paused | finished
    version: int = 0
    epoch: int = 0
    folded: bytes = b""  # bitmap of the batches of `epoch` already folded
    folded_total: int = 0
    queued_epoch: int = -1
    pending: tuple[Pending, ...] = ()
    awaiting: tuple[Pending, ...] = ()  # replicated jobs: first copies waiting for their check
    last_fold: FoldLog | None = None
    rev: int = 0
    created: float = 0.0
    updated: float = 0.0

    @property
    def folded_in_epoch(self) -> int:
        return int.from_bytes(self.folded, "little").bit_count()

    def is_folded(self, epoch: int, batch: int) -> bool:
        """Every batch of an earlier epoch was folded before the epoch advanced."""
        if epoch != self.epoch:
            return epoch < self.epoch
        return batch // 8 < len(self.folded) and bool(self.folded[batch // 8] >> (batch % 8) & 1)

    def pending_pairs(self) -> set[tuple[int, int]]:
        return {(p.epoch, p.batch) for p in self.pending}

    def public(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "status": self.status, "version": self.version, "epoch": self.epoch,
            "batches_done_in_epoch": self.folded_in_epoch, "batches_done": self.folded_total,
            "pending_gradients": len(self.pending), "awaiting_replica": len(self.awaiting),
            "created": self.created, "updated": self.updated,
        }


def _key(job: str, sort: str) -> dict[str, str]:
    return {"pk": f"JOB#{job}", "sk": sort}


def fold_sort_key(epoch: int, batch: int) -> str:
    return f"FOLD#{epoch:06d}#{batch:06d}"


def _version_sort_key(version: int) -> str:
    return f"VER#{version:010d}"


def _meta_item(meta: JobMeta) -> dict[str, Any]:
    # The bitmap is compressed: zeros early in an epoch and runs later shrink well.
    return {
        **_key(meta.job_id, "META"), "status": meta.status, "version": meta.version, "epoch": meta.epoch,
        "folded": base64.b64encode(zlib.compress(meta.folded)).decode(), "folded_total": meta.folded_total,
        "queued_epoch": meta.queued_epoch, "rev": meta.rev,
        "pending": json.dumps([p.__dict__ for p in meta.pending]),
        "awaiting": json.dumps([p.__dict__ for p in meta.awaiting]),
        "last_fold": json.dumps(meta.last_fold.__dict__ if meta.last_fold else None),
        "created": Decimal(str(meta.created)), "updated": Decimal(str(meta.updated)),
    }


def _meta_from(item: dict[str, Any]) -> JobMeta:
    last_fold = json.loads(item["last_fold"])
    if last_fold:
        last_fold = FoldLog(**{**last_fold, "batches": tuple(tuple(b) for b in last_fold["batches"])})
    return JobMeta(
        job_id=item["pk"][4:], status=item["status"], version=int(item["version"]), epoch=int(item["epoch"]),
        folded=zlib.decompress(base64.b64decode(item["folded"])), folded_total=int(item["folded_total"]),
        queued_epoch=int(item["queued_epoch"]),
        pending=tuple(Pending(**p) for p in json.loads(item["pending"])),
        awaiting=tuple(Pending(**p) for p in json.loads(item["awaiting"])),
        last_fold=last_fold, rev=int(item["rev"]),
        created=float(item["created"]), updated=float(item["updated"]),
    )


class JobStore:
    def __init__(self, table: Any, clock=time.time):
        self._table = table
        self._client = table.meta.client
        self._clock = clock
        self._specs: dict[str, JobSpec] = {}

    # -- jobs ---------------------------------------------------------------
    def create(self, job_id: str, spec: JobSpec) -> JobMeta:
        now = self._clock()
        meta = JobMeta(job_id=job_id, status="uploading", created=now, updated=now)
        self._transact([
            {"Put": {"Item": {**_key(job_id, "SPEC"), "spec": spec.to_json()},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"Item": _meta_item(meta), "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"Item": {"pk": "JOBS", "sk": job_id, "name": spec.name, "created": Decimal(str(now))}}},
        ], conflict=f"job {job_id} already exists")
        return meta

    def spec(self, job_id: str) -> JobSpec:
        """The job's spec; cached for the life of the process since it never changes."""
        if job_id not in self._specs:
            item = self._table.get_item(Key=_key(job_id, "SPEC"), ConsistentRead=True).get("Item")
            if not item:
                raise NotFound(f"no job {job_id}")
            self._specs[job_id] = JobSpec.from_json(item["spec"])
        return self._specs[job_id]

    def meta(self, job_id: str) -> JobMeta:
        item = self._table.get_item(Key=_key(job_id, "META"), ConsistentRead=True).get("Item")
        if not item:
            raise NotFound(f"no job {job_id}")
        return _meta_from(item)

    def job_ids(self) -> list[str]:
        return [item["sk"] for item in self._query(Key("pk").eq("JOBS"))]

    def save(self, before: JobMeta, after: JobMeta) -> JobMeta:
        """Write `after` if META is still at `before`'s revision; StaleState if not."""
        after = replace(after, rev=before.rev + 1, updated=self._clock())
        self._put_meta(before.rev, after)
        return after

    def _put_meta(self, rev: int, meta: JobMeta) -> None:
        try:
            self._table.put_item(Item=_meta_item(meta), ConditionExpression=Attr("rev").eq(rev))
        except self._client.exceptions.ConditionalCheckFailedException:
            raise StaleState(meta.job_id)

    def delete(self, job_id: str) -> int:
        """Remove every item of the job; returns how many."""
        keys = [{"pk": i["pk"], "sk": i["sk"]} for i in self._query(Key("pk").eq(f"JOB#{job_id}"))]
        keys.append({"pk": "JOBS", "sk": job_id})
        with self._table.batch_writer() as batch:
            for key in keys:
                batch.delete_item(Key=key)
        self._specs.pop(job_id, None)
        return len(keys)

    # -- folding -------------------------------------------------------------
    def commit_fold(self, before: JobMeta, after: JobMeta, loss: float) -> JobMeta:
        """Advance META from `before` to `after`, which folded `before.pending`,
        by one write conditional on META's revision; then write the fold log.
        The previous version's log is made whole first, so only the latest
        entry can ever be missing from the table, and META holds that one."""
        now = self._clock()
        entry = FoldLog(after.version, loss, sum(p.samples for p in before.pending), now,
                        tuple((p.epoch, p.batch, p.lease_id) for p in before.pending))
        after = replace(after, rev=before.rev + 1, updated=now, last_fold=entry)
        if before.last_fold and "Item" not in self._table.get_item(
                Key=_key(before.job_id, _version_sort_key(before.last_fold.version)), ConsistentRead=True):
            self._log_fold(before.job_id, before.last_fold)
        self._put_meta(before.rev, after)
        self._log_fold(after.job_id, entry)
        return after

    def _log_fold(self, job_id: str, entry: FoldLog) -> None:
        """Write one fold's log records; the version record last, so that its
        presence means the whole entry is there. Rewriting is harmless."""
        with self._table.batch_writer() as batch:
            for epoch, b, lease_id in entry.batches:
                batch.put_item(Item={**_key(job_id, fold_sort_key(epoch, b)), "version": entry.version,
                                     "lease_id": lease_id})
        self._table.put_item(Item={**_key(job_id, _version_sort_key(entry.version)), "version": entry.version,
                                   "loss": Decimal(repr(entry.loss)), "samples": entry.samples,
                                   "gradients": len(entry.batches), "time": Decimal(str(entry.time))})

    def folds(self, job_id: str) -> list[tuple[int, int, int]]:
        """(epoch, batch, version) of every folded batch."""
        items = self._query(Key("pk").eq(f"JOB#{job_id}") & Key("sk").begins_with("FOLD#"))
        logged = {(int(i["sk"][5:11]), int(i["sk"][12:])): int(i["version"]) for i in items}
        last = self.meta(job_id).last_fold
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

    # -- leases --------------------------------------------------------------
    def put_lease(self, job_id: str, lease_id: str, epoch: int, batch: int, expires: float,
                  volunteer: str) -> None:
        self._table.put_item(Item={
            **_key(job_id, f"LEASE#{lease_id}"), "state": "leased", "epoch": epoch, "batch": batch,
            "expires": Decimal(str(expires)), "volunteer": volunteer,
            "ttl": int(expires) + LEASE_TTL_SECONDS,
        }, ConditionExpression="attribute_not_exists(pk)")

    def lease_record(self, job_id: str, lease_id: str) -> dict[str, Any] | None:
        return self._table.get_item(Key=_key(job_id, f"LEASE#{lease_id}"), ConsistentRead=True).get("Item")

    def lease_state(self, job_id: str, lease_id: str) -> str | None:
        item = self.lease_record(job_id, lease_id)
        return item["state"] if item else None

    # -- per-volunteer lease slots ---------------------------------------------------
    def claim_slot(self, volunteer: str, lease_id: str, expires: float, limit: int) -> bool:
        """Record a lease against its volunteer unless they already hold `limit`
        unexpired ones. Conditional on the record's revision, so two concurrent
        leases cannot both take the last slot."""
        key = {"pk": f"VOLUNTEER#{volunteer}", "sk": "LEASES"}
        for _ in range(5):
            item = self._table.get_item(Key=key, ConsistentRead=True).get("Item") or {}
            now = self._clock()
            held = {k: v for k, v in json.loads(item.get("leases", "{}")).items() if v > now}
            if len(held) >= limit:
                return False
            held[lease_id] = expires
            condition = Attr("rev").eq(item["rev"]) if item else Attr("pk").not_exists()
            try:
                self._table.put_item(Item={**key, "leases": json.dumps(held), "rev": int(item.get("rev", 0)) + 1,
                                           "ttl": int(max(held.values())) + LEASE_TTL_SECONDS},
                                     ConditionExpression=condition)
                return True
            except self._client.exceptions.ConditionalCheckFailedException:
                continue
        return False

    def release_slot(self, volunteer: str, lease_id: str) -> None:
        """Best effort: an unreleased slot frees itself when the lease expires."""
        key = {"pk": f"VOLUNTEER#{volunteer}", "sk": "LEASES"}
        item = self._table.get_item(Key=key, ConsistentRead=True).get("Item")
        if not item:
            return
        held = json.loads(item["leases"])
        if held.pop(lease_id, None) is not None:
            try:
                self._table.put_item(Item={**item, "leases": json.dumps(held), "rev": int(item["rev"]) + 1},
                                     ConditionExpression=Attr("rev").eq(item["rev"]))
            except self._client.exceptions.ConditionalCheckFailedException:
                pass

    def move_lease(self, job_id: str, lease_id: str, source: str | tuple[str, ...], target: str,
                   **fields: Any) -> bool:
        """Move a lease from state `source` (or one of them) to `target`; False if it was elsewhere."""
        sources = (source,) if isinstance(source, str) else source
        names = {"#s": "state"}
        values: dict[str, Any] = {":to": target, **{f":from{i}": s for i, s in enumerate(sources)}}
        sets = ["#s = :to"]
        for i, (name, value) in enumerate(fields.items()):
            names[f"#f{i}"] = name
            values[f":v{i}"] = Decimal(str(value)) if isinstance(value, float) else value
            sets.append(f"#f{i} = :v{i}")
        try:
            self._table.update_item(Key=_key(job_id, f"LEASE#{lease_id}"), UpdateExpression="SET " + ", ".join(sets),
                                    ConditionExpression=f"#s IN ({', '.join(f':from{i}' for i in range(len(sources)))})",
                                    ExpressionAttributeNames=names,
                                    ExpressionAttributeValues=values)
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def active_leases(self, job_id: str) -> list[str]:
        """The volunteer id of every lease still running."""
        now = Decimal(str(self._clock()))
        items = self._query(Key("pk").eq(f"JOB#{job_id}") & Key("sk").begins_with("LEASE#"),
                            Attr("state").eq("leased") & Attr("expires").gt(now))
        return [item["volunteer"] for item in items]

    # -- counters --------------------------------------------------------------
    def count(self, job_id: str, **increments: int) -> None:
        names = {f"#c{i}": name for i, name in enumerate(increments)}
        values = {f":c{i}": value for i, value in enumerate(increments.values())}
        self._table.update_item(Key=_key(job_id, "STATS"),
                                UpdateExpression="ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(increments))),
                                ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def counters(self, job_id: str) -> dict[str, int]:
        item = self._table.get_item(Key=_key(job_id, "STATS")).get("Item") or {}
        return {k: int(v) for k, v in item.items() if k not in ("pk", "sk")}

    # -- plumbing --------------------------------------------------------------
    def _query(self, condition: Any, filter_expression: Any = None) -> list[dict[str, Any]]:
        args: dict[str, Any] = {"KeyConditionExpression": condition, "ConsistentRead": True}
        if filter_expression is not None:
            args["FilterExpression"] = filter_expression
        items: list[dict[str, Any]] = []
        while True:
            reply = self._table.query(**args)
            items.extend(reply["Items"])
            if "LastEvaluatedKey" not in reply:
                return items
            args["ExclusiveStartKey"] = reply["LastEvaluatedKey"]

    def _transact(self, items: list[dict[str, Any]], conflict: str) -> None:
        # The resource's client serializes plain Python values itself.
        named = [{kind: dict(body, TableName=self._table.name)} for entry in items for kind, body in entry.items()]
        try:
            self._client.transact_write_items(TransactItems=named)
        except self._client.exceptions.TransactionCanceledException:
            raise Conflict(conflict)
