"""`ROUND`: the tasks a synchronous job has handed out on its current
version, at most one update's worth (K). Once they are out, the next task
waits for the update, so that every result of a round is computed on the
version the round updates, as a synchronous optimizer's would be. The item
holds task ids, not a count, so that a task handed back, expired or
discarded can be leased again on the same version without taking a second
seat; `held` names, per task and holder (`<task>|<identity or @address>`),
until when that holder is barred from the task's seat, so that a seat let
go or lapsed is not taken again by the same client for a while; and a set
per holder (`seats|<holder>`, top-level: DynamoDB's ADD takes no nested
path) names the tasks it sat in, at most the job's share of an update, as
the fold takes at most that many of one client's results into one update
(fold/shares.py): a client fast enough to lease every task of a round would
otherwise hold the seats whose results the fold refuses, and keep the
round from the rest of the crowd."""

from __future__ import annotations

from decimal import Decimal
from typing import Sequence

from chalicelib.store.table import Records, job_key

ROUND = "ROUND"


class RoundSeats(Records):
    def claim(
        self,
        job_id: str,
        version: int,
        task_id: str,
        seats: int,
        holders: Sequence[str] = (),
        bar: float = 0.0,
        share: int | None = None,
    ) -> bool:
        """Seat `task_id` in the round on `version` for the client named by
        `holders` (its identity, and its address where addresses count): true
        if it holds one (it did, or one of `seats` was free), false if the
        round is full, the job's round has moved past `version`, one of
        `holders` held this task's seat in this round less than `bar` seconds
        ago (a seat let go or lapsed goes to someone else: one client, or a
        few taking turns, cannot squat a round by leasing its tasks again as
        their leases run out), or one of `holders` sat in `share` other
        tasks of this round already (None: as many as there are seats)."""
        until, cap = self._clock() + bar, seats if share is None else min(share, seats)
        return (
            self._seat(job_id, version, task_id, seats, holders, until, cap)
            or self._open(job_id, version, task_id, holders, until)
            or self._seat(job_id, version, task_id, seats, holders, until, cap, mend=False)
        )  # a concurrent lease may have just opened it

    def _seat(
        self,
        job_id: str,
        version: int,
        task_id: str,
        seats: int,
        holders: Sequence[str],
        until: float,
        cap: int,
        mend=True,
    ) -> bool:
        """The round on `version`: the task is seated already, or a seat is
        free; no holder is barred from this task's seat, and none sat in
        `cap` other tasks of the round. Each holder's bar is its own entry
        (`task|holder`): a later holder's never replaces it."""
        names = {f"#h{i}": _entry(task_id, h) for i, h in enumerate(holders)}
        barred = "".join(f" AND (attribute_not_exists(held.#h{i}) OR held.#h{i} < :now)" for i in range(len(holders)))
        bars = ", ".join(f"held.#h{i} = :until" for i in range(len(holders)))
        capped = holders if cap < seats else ()  # every holder fits under a cap of every seat
        names |= {f"#s{i}": _seats(h) for i, h in enumerate(capped)}
        shares = "".join(
            f" AND (attribute_not_exists(#s{i}) OR contains(#s{i}, :id) OR size(#s{i}) < :cap)"
            for i in range(len(capped))
        )
        try:
            self._table.update_item(
                Key=job_key(job_id, ROUND),
                UpdateExpression="ADD "
                + ", ".join(["tasks :task", *(f"#s{i} :task" for i in range(len(capped)))])
                + (f" SET {bars}" if holders else ""),
                ConditionExpression="version = :v AND (contains(tasks, :id) OR size(tasks) < :seats)" + barred + shares,
                **({"ExpressionAttributeNames": names} if holders else {}),
                ExpressionAttributeValues={
                    ":task": {task_id},
                    ":id": task_id,
                    ":v": version,
                    ":seats": seats,
                    **({":now": _decimal(self._clock()), ":until": _decimal(until)} if holders else {}),
                    **({":cap": cap} if capped else {}),
                },
            )
            return True
        except self._condition_failed:
            return False
        except self._client.exceptions.ClientError as err:
            if err.response["Error"]["Code"] != "ValidationException" or not mend:
                raise
            # a round opened before seats named their holders has no `held` map to add to
            self._table.update_item(
                Key=job_key(job_id, ROUND),
                UpdateExpression="SET held = if_not_exists(held, :none)",
                ExpressionAttributeValues={":none": {}},
            )
            return self._seat(job_id, version, task_id, seats, holders, until, cap, mend=False)

    def _open(self, job_id: str, version: int, task_id: str, holders: Sequence[str], until: float) -> bool:
        """The first task on a newer version than the round's opens the round
        on it: the item written whole, so its bars and its holders' seats start over."""
        try:
            self._table.put_item(
                Item={
                    **job_key(job_id, ROUND),
                    "version": version,
                    "tasks": {task_id},
                    "held": {_entry(task_id, h): _decimal(until) for h in holders},
                    **{_seats(h): {task_id} for h in holders},
                },
                ConditionExpression="attribute_not_exists(version) OR version < :v",
                ExpressionAttributeValues={":v": version},
            )
            return True
        except self._condition_failed:
            return False


def _entry(task_id: str, holder: str) -> str:
    return f"{task_id}|{holder}"


def _seats(holder: str) -> str:
    return f"seats|{holder}"


def _decimal(seconds: float) -> Decimal:
    return Decimal(str(round(seconds, 3)))
