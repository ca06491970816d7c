"""The one DynamoDB table that every record class is handed.

Items are grouped under `pk = JOB#<id>`, one sort key per record kind (each
kind has its own small class in this package); `pk = JOBS` lists the jobs and
`pk = VOLUNTEER#<id>` holds a volunteer's lease slots. The kinds written once
or more per task are spread over shard partitions of the job, `JOB#<id>#L<n>`
(leases) and `JOB#<id>#C<n>` (credit), by a hash of the lease or volunteer
id, as DynamoDB's write-sharding guidance describes: a partition key takes
at most 1,000 write units a second, and 10,000 volunteers write about twice
that in leases alone (tests/test_scale_paths.py counts it).
"""

from __future__ import annotations

import time
import zlib
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

LEASE_TTL_SECONDS = 7 * 24 * 3600


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it against its 400 KB limit: names
    plus values (UTF-8 text, raw binary, about one byte per two digits of a
    number, nested values alike)."""

    def size(value: Any) -> int:
        if isinstance(value, (bytes, bytearray)):
            return len(value)
        if hasattr(value, "value") and isinstance(value.value, bytes):  # boto3's Binary
            return len(value.value)
        if isinstance(value, str):
            return len(value.encode())
        if isinstance(value, bool) or value is None:
            return 1
        if isinstance(value, (int, float, Decimal)):
            return 1 + (len(str(value).replace("-", "").replace(".", "")) + 1) // 2
        if isinstance(value, dict):
            return 3 + sum(len(k.encode()) + 1 + size(v) for k, v in value.items())
        return 3 + sum(1 + size(v) for v in value)  # list or set

    return sum(len(name.encode()) + size(value) for name, value in item.items())


def job_key(job_id: str, sort: str) -> dict[str, str]:
    return {"pk": f"JOB#{job_id}", "sk": sort}


# The job's sharded record kinds: partition key suffix, and shards.
SHARDS = {"L": 32, "C": 16}


def shard_key(job_id: str, kind: str, id_: str, sort: str) -> dict[str, str]:
    """The key of a sharded record (`kind` "L" or "C"), in the shard its id hashes to."""
    return {"pk": f"JOB#{job_id}#{kind}{zlib.crc32(id_.encode()) % SHARDS[kind]}", "sk": sort}


def job_partitions(job_id: str, kind: str | None = None) -> list[str]:
    """The partition keys of a job's records: all of them, or one sharded kind's."""
    shards = [f"JOB#{job_id}#{k}{n}" for k, count in SHARDS.items() if kind in (None, k) for n in range(count)]
    return shards if kind else [f"JOB#{job_id}", *shards]


class Records:
    """Base of the record classes: the table, its client and a clock."""

    def __init__(self, table: Any, clock: Callable[[], float] = time.time):
        self._table = table
        self._client = table.meta.client
        self._clock = clock

    @property
    def _condition_failed(self) -> type[ClientError]:
        return self._client.exceptions.ConditionalCheckFailedException

    def _query(self, condition: Any, filter_expression: Any = None) -> list[dict[str, Any]]:
        """Every item a query matches, page after page, read consistently."""
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

    def _batch_get(
        self, keys: list[dict[str, str]], projection: str | None = None, names: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The items of `keys` that exist, read consistently, 100 keys a call."""
        items: list[dict[str, Any]] = []
        for start in range(0, len(keys), 100):
            request: dict[str, Any] | None = {
                self._table.name: {
                    "Keys": keys[start : start + 100],
                    "ConsistentRead": True,
                    **({"ProjectionExpression": projection} if projection else {}),
                    **({"ExpressionAttributeNames": names} if names else {}),
                }
            }
            while request:
                reply = self._client.batch_get_item(RequestItems=request)
                items.extend(reply["Responses"].get(self._table.name, []))
                request = reply.get("UnprocessedKeys") or None
        return items
