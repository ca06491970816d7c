"""`VOLUNTEER#<id>` / `LEASES`: the leases one volunteer id holds, so that no
id holds more than the deployment's limit at once."""
from __future__ import annotations

import json

from boto3.dynamodb.conditions import Attr

from chalicelib.store.table import LEASE_TTL_SECONDS, Records


class VolunteerSlots(Records):
    def claim(self, volunteer_id: str, lease_id: str, expires: float, limit: int) -> bool:
        """Record a lease against its volunteer unless they already hold `limit`
        unexpired ones. Conditional on the record's revision, so two concurrent
        leases cannot both take the last slot."""
        key = {"pk": f"VOLUNTEER#{volunteer_id}", "sk": "LEASES"}
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
            except self._condition_failed:
                continue
        return False

    def release(self, volunteer_id: str, lease_id: str) -> None:
        """Best effort: an unreleased slot frees itself when the lease expires."""
        key = {"pk": f"VOLUNTEER#{volunteer_id}", "sk": "LEASES"}
        item = self._table.get_item(Key=key, ConsistentRead=True).get("Item")
        if not item:
            return
        held = json.loads(item["leases"])
        if held.pop(lease_id, None) is not None:
            try:
                self._table.put_item(Item={**item, "leases": json.dumps(held), "rev": int(item["rev"]) + 1},
                                     ConditionExpression=Attr("rev").eq(item["rev"]))
            except self._condition_failed:
                pass
