"""`ADDRESS#<source address>` / `ISSUED#<hour>`: how many volunteer
identities one source address was issued in an hour, counted by an atomic
ADD conditional on the count being under the limit (so concurrent requests
cannot pass it together); kept two days."""

from __future__ import annotations

from chalicelib.store.table import Records

KEEP_SECONDS = 2 * 24 * 3600


class IssuedIdentities(Records):
    def take(self, address: str, limit: int) -> bool:
        """Count one more identity for `address` this hour; False at the limit."""
        now = self._clock()
        try:
            self._table.update_item(
                Key={"pk": f"ADDRESS#{address}", "sk": f"ISSUED#{int(now // 3600)}"},
                UpdateExpression="ADD issued :one SET #t = :t",
                ConditionExpression="attribute_not_exists(issued) OR issued < :limit",
                ExpressionAttributeNames={"#t": "ttl"},
                ExpressionAttributeValues={":one": 1, ":limit": limit, ":t": int(now) + KEEP_SECONDS},
            )
            return True
        except self._condition_failed:
            return False
