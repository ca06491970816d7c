"""META: a job's mutable progress, one item per job.

It holds the status, version, epoch, a bitmap of the epoch's folded batches,
the results pending for the next update, and the latest fold's log entry. Every write is
conditional on its revision `rev`, so two writers can never both succeed from
the same state. Why that makes folding exactly-once is argued in one place:
chalicelib/fold/fold.py.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from typing import Any, Iterable

from boto3.dynamodb.conditions import Attr

from chalicelib.domain.errors import NotFound
from chalicelib.domain.keys import gradient_key, partial_sum_key
from chalicelib.domain.records import PartialSum, Result
from chalicelib.store.table import Records, job_key


class StaleState(Exception):
    """META changed since it was read; re-read and try again."""


@dataclass(frozen=True)
class Pending(Result):
    """A validated result waiting in META for the rest of its update;
    `digest` (Result's) is that of the bytes accepted: folded only if unchanged."""

    # In a partial sum (a fold in parts): `key` and `digest` are the sum's,
    # shared by every result summed in it, which are folded together.
    summed: bool = False

    # override: a pending result is made of a Result (Result.of makes one of a lease), by design
    @classmethod
    def of(cls, result: Result, digest: str) -> "Pending":  # type: ignore[override]
        return cls(**{**result.__dict__, "digest": digest})

    @classmethod
    def in_sum(cls, result: Result, partial: PartialSum) -> "Pending":
        return cls(**{**result.__dict__, "key": partial.key, "digest": partial.digest, "summed": True})


@dataclass(frozen=True)
class FoldLog:
    """What one fold did: the log entry for its version."""

    version: int
    loss: float
    samples: int
    time: float
    batches: tuple[tuple[int, int, str], ...]  # (epoch, batch, lease id)
    # (volunteer id, results, samples) per identity behind them, in a job with
    # points: what the credit tally (fold/credit.py) sums, so the fold writes no credit
    earned: tuple[tuple[str, int, int], ...] = ()

    def point(self) -> dict[str, float]:
        return {
            "version": self.version,
            "loss": self.loss,
            "samples": self.samples,
            "gradients": len(self.batches),
            "time": self.time,
        }


def fold_log_entry(raw: dict[str, Any]) -> FoldLog:
    """A FoldLog from its JSON form (lists where the record has tuples)."""
    return FoldLog(
        **{
            **raw,
            "batches": tuple(tuple(b) for b in raw["batches"]),
            "earned": tuple(tuple(e) for e in raw.get("earned", ())),
        }
    )


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
    status: str  # uploading | running | paused | finished | deleting
    version: int = 0
    epoch: int = 0
    folded: bytes = b""  # bitmap of the batches of `epoch` already folded
    folded_total: int = 0
    folded_samples: int = 0  # training samples behind the folded results (local steps vary per result)
    queued_epoch: int = -1  # the last epoch whose tasks were all queued
    queue_cursor: int = 0  # how far the queueing of `epoch` got along its batch order
    pending: tuple[Pending, ...] = ()
    last_fold: FoldLog | None = None
    rev: int = 0
    created: float = 0.0
    updated: float = 0.0
    paused_reason: str = ""  # why the job paused itself (tasks/releases.py), shown with its status
    auto_paused: bool = False  # it did once: the operator's resume overrides it for good

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
            "job_id": self.job_id,
            "status": self.status,
            "version": self.version,
            "epoch": self.epoch,
            "batches_done_in_epoch": self.folded_in_epoch,
            "batches_done": self.folded_total,
            "pending_gradients": len(self.pending),
            "created": self.created,
            "updated": self.updated,
            **({"paused_reason": self.paused_reason} if self.paused_reason else {}),
        }


def _compact(results: tuple[Pending, ...]) -> str:
    """Pending results as short lists: the job id and S3 key follow from META's
    job and the lease (or, for a result in a partial sum, from the sum's digest);
    the source address (which caps one client's share of an update) and the
    partial-sum flag trail, left off when there is none."""
    return json.dumps(
        [
            [p.epoch, p.batch, p.lease_id, p.base_version, p.loss, p.samples, p.volunteer_id, p.digest]
            + ([int(p.summed), p.address] if p.address else [1] if p.summed else [])
            for p in results
        ],
        separators=(",", ":"),
    )


def _expand(job_id: str, text: str) -> tuple[Pending, ...]:
    def pending(e, b, lease_id, base, loss, samples, volunteer, digest, summed=0, address="") -> Pending:
        key = partial_sum_key(job_id, e, digest) if summed else gradient_key(job_id, e, b, lease_id)
        return Pending(
            job_id,
            e,
            b,
            lease_id,
            base,
            key,
            loss,
            samples,
            volunteer,
            digest=digest,
            address=address,
            summed=bool(summed),
        )

    return tuple(pending(*entry) for entry in json.loads(text))


def meta_item(meta: JobMeta) -> dict[str, Any]:
    # Sized for 100,000 batches an epoch (tests/test_scale_paths.py): the bitmap
    # is compressed and stored as binary (zeros early in an epoch and runs later
    # shrink well), pending results as short lists.
    return {
        **job_key(meta.job_id, "META"),
        "status": meta.status,
        "version": meta.version,
        "epoch": meta.epoch,
        "folded": zlib.compress(meta.folded),
        "folded_total": meta.folded_total,
        "folded_samples": meta.folded_samples,
        "queued_epoch": meta.queued_epoch,
        "queue_cursor": meta.queue_cursor,
        "rev": meta.rev,
        "pending": _compact(meta.pending),
        "last_fold": json.dumps(asdict(meta.last_fold) if meta.last_fold else None),
        "created": Decimal(str(meta.created)),
        "updated": Decimal(str(meta.updated)),
        **({"paused_reason": meta.paused_reason} if meta.paused_reason else {}),
        **({"auto_paused": True} if meta.auto_paused else {}),
    }


def _meta_from(item: dict[str, Any]) -> JobMeta:
    last_fold = json.loads(item["last_fold"])
    if last_fold:
        last_fold = fold_log_entry(last_fold)
    return JobMeta(
        job_id=item["pk"][4:],
        status=item["status"],
        version=int(item["version"]),
        epoch=int(item["epoch"]),
        folded=zlib.decompress(bytes(item["folded"])),
        folded_total=int(item["folded_total"]),
        folded_samples=int(item.get("folded_samples", 0)),
        queued_epoch=int(item["queued_epoch"]),
        queue_cursor=int(item.get("queue_cursor", 0)),
        pending=_expand(item["pk"][4:], item["pending"]),
        last_fold=last_fold,
        rev=int(item["rev"]),
        created=float(item["created"]),
        updated=float(item["updated"]),
        paused_reason=str(item.get("paused_reason", "")),
        auto_paused=bool(item.get("auto_paused", False)),
    )


class MetaStore(Records):
    """META reads and writes. What this process last read or wrote is kept:
    a lease may take it if it is at most `max_age` seconds old (each lease
    would otherwise read META), while the fold and admin always read afresh."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._seen: dict[str, tuple[float, JobMeta]] = {}
        # how many job statuses this process changed (a start, a pause, a resume, a job finished):
        # tasks/picker.py reads the running jobs again after one, not a second later
        self.status_changes = 0

    def get(self, job_id: str, max_age: float = 0.0) -> JobMeta:
        if max_age > 0 and job_id in self._seen:
            when, meta = self._seen[job_id]
            if self._clock() - when <= max_age:
                return meta
        item = self._table.get_item(Key=job_key(job_id, "META"), ConsistentRead=True).get("Item")
        if not item:
            self._seen.pop(job_id, None)
            raise NotFound(f"no job {job_id}")
        return self._remember(_meta_from(item))

    def forget(self, job_id: str) -> None:
        """Drop what this process saw of a job (it was deleted)."""
        self._seen.pop(job_id, None)

    def _remember(self, meta: JobMeta) -> JobMeta:
        self._seen[meta.job_id] = (self._clock(), meta)
        return meta

    def save(self, before: JobMeta, after: JobMeta) -> JobMeta:
        """Write `after` if META is still at `before`'s revision; StaleState if not."""
        after = replace(after, rev=before.rev + 1, updated=self._clock())
        self.put(before.rev, after)
        if after.status != before.status:
            self.status_changes += 1
        return after

    def put(self, rev: int, meta: JobMeta) -> None:
        """Write `meta` as it is if the stored revision is `rev`; StaleState if not."""
        try:
            self._table.put_item(Item=meta_item(meta), ConditionExpression=Attr("rev").eq(rev))
        except self._condition_failed:
            self._seen.pop(meta.job_id, None)
            raise StaleState(meta.job_id)
        self._remember(meta)
