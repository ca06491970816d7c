"""`VOLUNTEER#<id>` (or `ADDRESS#<network>`) / `RELEASES#<window>`: how many
tasks an identity, or every identity behind one address, handed back in one
window of time. A release adds one by a write conditional on the count being
under the limit: one call, no read, and the item expires with its window.
Without it, leasing and releasing at once is free, and a client can cycle
through the queue until the task it wants comes up."""

from __future__ import annotations

from typing import Any

from chalicelib.store.table import LEASE_TTL_SECONDS, Records


class ReleaseBudgets(Records):
    def __init__(self, table: Any, kind: str = "VOLUNTEER"):
        super().__init__(table)
        self.kind = kind

    def spend(self, owner: str, limit: int, window_seconds: int) -> bool:
        """Count one release of `owner` in the current window; False (and nothing counted) at `limit`."""
        now = self._clock()
        window = int(now // window_seconds)
        try:
            self._table.update_item(
                Key={"pk": f"{self.kind}#{owner}", "sk": f"RELEASES#{window}"},
                UpdateExpression="ADD n :one SET #t = :ttl",
                ConditionExpression="attribute_not_exists(n) OR n < :limit",
                ExpressionAttributeNames={"#t": "ttl"},
                ExpressionAttributeValues={
                    ":one": 1,
                    ":limit": limit,
                    ":ttl": (window + 1) * window_seconds + LEASE_TTL_SECONDS,
                },
            )
            return True
        except self._condition_failed:
            return False
