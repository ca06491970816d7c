"""`AWAIT#<epoch>#<batch>`: a replicated job's first copy of a batch, waiting
for the check a second volunteer computes. One item per batch instead of a
list in META, so META stays the same size however many checks are out."""
from __future__ import annotations

import json
from dataclasses import astuple

from boto3.dynamodb.conditions import Attr, Key

from chalicelib.model.keys import gradient_key
from chalicelib.store.meta import Pending
from chalicelib.store.table import LEASE_TTL_SECONDS, Records, job_key


def _sort_key(epoch: int, batch: int) -> str:
    return f"AWAIT#{epoch:06d}#{batch:06d}"


class AwaitingCopies(Records):
    def get(self, job_id: str, epoch: int, batch: int) -> Pending | None:
        item = self._table.get_item(Key=job_key(job_id, _sort_key(epoch, batch)), ConsistentRead=True).get("Item")
        if not item:
            return None
        lease_id, base, loss, samples, volunteer, digest, *address = json.loads(item["copy"])
        return Pending(job_id, epoch, batch, lease_id, base, gradient_key(job_id, epoch, batch, lease_id), loss,
                       samples, volunteer, digest=digest, address=address[0] if address else "")

    def put(self, copy: Pending) -> None:
        fields = [copy.lease_id, copy.base_version, copy.loss, copy.samples, copy.volunteer_id, copy.digest,
                  copy.address]
        self._table.put_item(Item={**job_key(copy.job_id, _sort_key(copy.epoch, copy.batch)),
                                   "copy": json.dumps(fields, separators=(",", ":")), "lease_id": copy.lease_id,
                                   "ttl": int(self._clock()) + LEASE_TTL_SECONDS})

    def drop(self, copy: Pending) -> None:
        """Remove the first copy, if it is still this one."""
        try:
            self._table.delete_item(Key=job_key(copy.job_id, _sort_key(copy.epoch, copy.batch)),
                                    ConditionExpression=Attr("lease_id").eq(copy.lease_id))
        except self._condition_failed:
            pass

    def count(self, job_id: str) -> int:
        """How many first copies wait (a query: for the admin status only)."""
        return len(self._query(Key("pk").eq(f"JOB#{job_id}") & Key("sk").begins_with("AWAIT#")))
