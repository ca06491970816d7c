"""The one DynamoDB table that every record class is handed.

Items are grouped under `pk = JOB#<id>`, one sort key per record kind (each
kind has its own small class in this package); `pk = JOBS` lists the jobs and
`pk = VOLUNTEER#<id>` holds a volunteer's lease slots.
"""
from __future__ import annotations

import time
from typing import Any, Callable

LEASE_TTL_SECONDS = 7 * 24 * 3600


def job_key(job_id: str, sort: str) -> dict[str, str]:
    return {"pk": f"JOB#{job_id}", "sk": sort}


class Records:
    """Base of the record classes: the table, its client and a clock."""

    def __init__(self, table: Any, clock: Callable[[], float] = time.time):
        self._table = table
        self._client = table.meta.client
        self._clock = clock

    @property
    def _condition_failed(self) -> type[Exception]:
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
