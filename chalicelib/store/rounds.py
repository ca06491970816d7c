"""`ROUND`: the tasks a synchronous job has handed out on its current
version, at most one update's worth (K). Once they are out, the next task
waits for the update, so that every result of a round is computed on the
version the round updates, as a synchronous optimizer's would be. The item
holds task ids, not a count, so that a task handed back, expired or
discarded can be leased again on the same version without taking a second
seat."""

from __future__ import annotations

from chalicelib.store.table import Records, job_key

ROUND = "ROUND"


class RoundSeats(Records):
    def claim(self, job_id: str, version: int, task_id: str, seats: int) -> bool:
        """Seat `task_id` in the round on `version`: true if it holds one
        (it did, or one of `seats` was free), false if the round is full or
        the job's round has moved past `version`."""
        return (
            self._seat(job_id, version, task_id, seats)
            or self._open(job_id, version, task_id)
            or self._seat(job_id, version, task_id, seats)
        )  # a concurrent lease may have just opened it

    def _seat(self, job_id: str, version: int, task_id: str, seats: int) -> bool:
        """The round on `version`: the task is seated already, or a seat is free."""
        try:
            self._table.update_item(
                Key=job_key(job_id, ROUND),
                UpdateExpression="ADD tasks :task",
                ConditionExpression="version = :v AND (contains(tasks, :id) OR size(tasks) < :seats)",
                ExpressionAttributeValues={":task": {task_id}, ":id": task_id, ":v": version, ":seats": seats},
            )
            return True
        except self._condition_failed:
            return False

    def _open(self, job_id: str, version: int, task_id: str) -> bool:
        """The first task on a newer version than the round's opens the round on it."""
        try:
            self._table.update_item(
                Key=job_key(job_id, ROUND),
                UpdateExpression="SET version = :v, tasks = :task",
                ConditionExpression="attribute_not_exists(version) OR version < :v",
                ExpressionAttributeValues={":task": {task_id}, ":v": version},
            )
            return True
        except self._condition_failed:
            return False
