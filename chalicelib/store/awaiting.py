"""`AWAIT#<epoch>#<batch>`: a replicated job's first copy of a batch, waiting
for the check a second volunteer computes, and once the two disagree the
check's copy too, both waiting for a third volunteer's copy to settle it by
majority. One item per batch instead of a list in META, so META stays the
same size however many checks are out."""

from __future__ import annotations

import json
from dataclasses import dataclass

from boto3.dynamodb.conditions import Attr, Key

from chalicelib.domain.keys import gradient_key
from chalicelib.store.meta import Pending
from chalicelib.store.table import LEASE_TTL_SECONDS, Records, job_key


def _sort_key(epoch: int, batch: int) -> str:
    return f"AWAIT#{epoch:06d}#{batch:06d}"


@dataclass(frozen=True)
class Awaiting:
    """A batch's copies so far: the first, and the disputing check's once they disagreed."""

    first: Pending
    disputed: Pending | None = None

    def holds(self, lease_id: str) -> bool:
        return lease_id in (self.first.lease_id, self.disputed.lease_id if self.disputed else None)


def _fields(copy: Pending) -> str:
    return json.dumps(
        [copy.lease_id, copy.base_version, copy.loss, copy.samples, copy.volunteer_id, copy.digest, copy.address],
        separators=(",", ":"),
    )


def _copy(job_id: str, epoch: int, batch: int, text: str) -> Pending:
    lease_id, base, loss, samples, volunteer, digest, *address = json.loads(text)
    return Pending(
        job_id,
        epoch,
        batch,
        lease_id,
        base,
        gradient_key(job_id, epoch, batch, lease_id),
        loss,
        samples,
        volunteer,
        digest=digest,
        address=address[0] if address else "",
    )


class AwaitingCopies(Records):
    def get(self, job_id: str, epoch: int, batch: int) -> Awaiting | None:
        item = self._table.get_item(Key=job_key(job_id, _sort_key(epoch, batch)), ConsistentRead=True).get("Item")
        if not item:
            return None
        disputed = item.get("disputed")
        return Awaiting(
            _copy(job_id, epoch, batch, item["copy"]), _copy(job_id, epoch, batch, disputed) if disputed else None
        )

    def put(self, copy: Pending) -> None:
        self._table.put_item(
            Item={
                **job_key(copy.job_id, _sort_key(copy.epoch, copy.batch)),
                "copy": _fields(copy),
                "lease_id": copy.lease_id,
                "ttl": int(self._clock()) + LEASE_TTL_SECONDS,
            }
        )

    def dispute(self, first: Pending, check: Pending) -> None:
        """Keep a check that disagreed with the first copy beside it, if the
        first is still this one (a redelivered check writes the same again)."""
        try:
            self._table.update_item(
                Key=job_key(first.job_id, _sort_key(first.epoch, first.batch)),
                UpdateExpression="SET disputed = :d",
                ConditionExpression=Attr("lease_id").eq(first.lease_id),
                ExpressionAttributeValues={":d": _fields(check)},
            )
        except self._condition_failed:
            pass

    def drop(self, copy: Pending) -> None:
        """Remove the first copy, if it is still this one."""
        try:
            self._table.delete_item(
                Key=job_key(copy.job_id, _sort_key(copy.epoch, copy.batch)),
                ConditionExpression=Attr("lease_id").eq(copy.lease_id),
            )
        except self._condition_failed:
            pass

    def count(self, job_id: str) -> int:
        """How many first copies wait (a query: for the admin status only)."""
        return len(self._query(Key("pk").eq(f"JOB#{job_id}") & Key("sk").begins_with("AWAIT#")))
