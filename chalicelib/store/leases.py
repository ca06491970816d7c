"""`LEASE#<lease id>` in one of the job's lease shards (`JOB#<id>#L<n>`,
store/table.py): one item per lease. Its state moves leased -> completed,
and completed -> discarded where the fold drops the result, or leased ->
released where the volunteer hands the task back, each by a conditional
write, so a replayed completion or release finds the lease no longer leased."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable

from boto3.dynamodb.types import TypeDeserializer

from chalicelib.domain.records import Lease
from chalicelib.store.table import LEASE_TTL_SECONDS, Records, shard_key

_DESERIALIZE = TypeDeserializer()  # a failed condition's item comes back in DynamoDB's wire form


def lease_key(job_id: str, lease_id: str) -> dict[str, str]:
    """A lease's record, in one of the job's lease shards (store/table.py)."""
    return shard_key(job_id, "L", lease_id, f"LEASE#{lease_id}")


@dataclass(frozen=True)
class LeaseRecord:
    state: str  # leased | completed | discarded | released
    volunteer_id: str
    slot: int = 0  # the volunteer's slot it holds (store/volunteers.py)
    pin: int | None = None  # the task's pinned version (a replica check), to queue it again as it was
    receipt: str = ""  # the SQS receipt handle of the delivery leased: never in a token
    address: str = ""  # the source address it was leased from, and its slot there
    address_slot: int = 0

    @classmethod
    def of(cls, item: dict[str, Any]) -> "LeaseRecord":
        pin = item.get("pin")
        return cls(
            item["state"],
            item["volunteer_id"],
            int(item.get("slot", 0)),
            None if pin is None else int(pin),
            item.get("receipt", ""),
            item.get("address", ""),
            int(item.get("address_slot", 0)),
        )


class LeaseRecords(Records):
    def put(self, lease: Lease, record: LeaseRecord) -> None:
        """A new lease's item (`record`'s state: leased), once."""
        pin = {} if record.pin is None else {"pin": record.pin}
        self._table.put_item(
            Item={
                **lease_key(lease.job_id, lease.lease_id),
                "state": record.state,
                "epoch": lease.epoch,
                "batch": lease.batch,
                "expires": Decimal(str(lease.expires)),
                "volunteer_id": record.volunteer_id,
                "slot": record.slot,
                "receipt": record.receipt,
                "address": record.address,
                "address_slot": record.address_slot,
                "ttl": int(lease.expires) + LEASE_TTL_SECONDS,
                **pin,
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get(self, job_id: str, lease_id: str) -> LeaseRecord | None:
        item = self._table.get_item(Key=lease_key(job_id, lease_id), ConsistentRead=True).get("Item")
        return LeaseRecord.of(item) if item else None

    def state(self, job_id: str, lease_id: str) -> str | None:
        record = self.get(job_id, lease_id)
        return record.state if record else None

    def states(self, job_id: str, lease_ids: Iterable[str]) -> dict[str, str]:
        """The state of each of a job's leases that exists (BatchGetItem, 100 a call)."""
        keys = [lease_key(job_id, lease_id) for lease_id in dict.fromkeys(lease_ids)]
        return {item["sk"][len("LEASE#") :]: item["state"] for item in self._batch_get(keys, "sk, #s", {"#s": "state"})}

    def move(self, job_id: str, lease_id: str, source: str | tuple[str, ...], target: str, **fields: Any) -> bool:
        """Move a lease from state `source` (or one of them) to `target`; False if it was elsewhere."""
        return self.transition(job_id, lease_id, source, target, **fields)[0]

    def transition(
        self, job_id: str, lease_id: str, source: str | tuple[str, ...], target: str, **fields: Any
    ) -> tuple[bool, LeaseRecord | None]:
        """`move`, with the record as it was before (None: no such lease) in
        the same call, whether the move happened or not."""
        sources = (source,) if isinstance(source, str) else source
        names = {"#s": "state"}
        values: dict[str, Any] = {":to": target, **{f":from{i}": s for i, s in enumerate(sources)}}
        sets = ["#s = :to"]
        for i, (name, value) in enumerate(fields.items()):
            names[f"#f{i}"] = name
            values[f":v{i}"] = Decimal(str(value)) if isinstance(value, float) else value
            sets.append(f"#f{i} = :v{i}")
        try:
            reply = self._table.update_item(
                Key=lease_key(job_id, lease_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=f"#s IN ({', '.join(f':from{i}' for i in range(len(sources)))})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._condition_failed as err:
            item = err.response.get("Item")
            return False, LeaseRecord.of({k: _DESERIALIZE.deserialize(v) for k, v in item.items()}) if item else None
        return True, LeaseRecord.of(reply["Attributes"])
