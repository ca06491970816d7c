"""`VOLUNTEER#<id>` / `SLOT#<i>`: the lease slots of one volunteer identity,
so that none holds more than the deployment's limit of leases at once; and
`ADDRESS#<source address>` / `SLOT#<i>` likewise for all the volunteers
behind one address (the same class, another key kind).

A slot is one item, claimed by a conditional write (free, or expired) and
freed by a conditional delete when its lease completes: one call each, and
no read. A lease claims its slot before it receives a task, so a volunteer
at its limit never takes a task out of the queue (a receive that counted
against the task's redrive limit). A slot is taken for as long as its lease
runs, so one left by a volunteer that vanished frees itself when the lease ends.
"""

from __future__ import annotations

import zlib
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr

from chalicelib.store.table import LEASE_TTL_SECONDS, Records


class VolunteerSlots(Records):
    def __init__(self, table: Any, kind: str = "VOLUNTEER"):
        super().__init__(table)
        self.kind = kind

    def claim(self, volunteer_id: str, holder: str, seconds: float, limit: int) -> int | None:
        """A free slot of the volunteer's `limit`, now held by `holder` for at
        most `seconds`; None when all are held. Tried from a slot that depends
        on the holder, so a volunteer with one lease usually needs one write."""
        now = self._clock()
        start = zlib.crc32(holder.encode()) % limit
        for n in range(limit):
            slot = (start + n) % limit
            try:
                self._table.put_item(
                    Item={
                        "pk": f"{self.kind}#{volunteer_id}",
                        "sk": f"SLOT#{slot}",
                        "holder": holder,
                        "expires": Decimal(str(now + seconds)),
                        "ttl": int(now + seconds) + LEASE_TTL_SECONDS,
                    },
                    ConditionExpression=Attr("pk").not_exists() | Attr("expires").lt(Decimal(str(now))),
                )
                return slot
            except self._condition_failed:
                continue
        return None

    def extend(self, volunteer_id: str, slot: int, holder: str, seconds: float) -> None:
        """Hold the slot `seconds` from now (its lease turned out longer or shorter)."""
        now = self._clock()
        try:
            self._table.update_item(
                Key={"pk": f"{self.kind}#{volunteer_id}", "sk": f"SLOT#{slot}"},
                UpdateExpression="SET expires = :e, #t = :t",
                ConditionExpression=Attr("holder").eq(holder),
                ExpressionAttributeNames={"#t": "ttl"},
                ExpressionAttributeValues={
                    ":e": Decimal(str(now + seconds)),
                    ":t": int(now + seconds) + LEASE_TTL_SECONDS,
                },
            )
        except self._condition_failed:
            pass

    def release(self, volunteer_id: str, slot: int, holder: str) -> None:
        """Free a slot if `holder` still holds it (best effort: an unreleased
        slot frees itself when it expires)."""
        try:
            self._table.delete_item(
                Key={"pk": f"{self.kind}#{volunteer_id}", "sk": f"SLOT#{slot}"},
                ConditionExpression=Attr("holder").eq(holder),
            )
        except self._condition_failed:
            pass
