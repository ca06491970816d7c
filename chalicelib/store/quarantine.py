"""`QUARANTINE#<queue>#<message id>` in a job's partition: a dead letter the
redrive gave up on (tasks/redrive.py), kept with why until its operator
retries it (`crowdtrain redrive JOB --quarantined`) or deletes the job."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key

from chalicelib.store.table import Records, job_key

NO_JOB = "-"  # where a message that names no job is kept


@dataclass(frozen=True)
class Quarantined:
    queue: str  # "tasks" or "results"
    message_id: str
    body: str
    group: str  # its FIFO message group ("" on the task queue)
    redrives: int  # how often it was sent back and dead-lettered again
    reason: str
    time: float

    def public(self) -> dict[str, Any]:
        """What its operator sees: the message and why it is here."""
        try:
            message: Any = json.loads(self.body)
        except ValueError:
            message = self.body
        return {**{k: v for k, v in asdict(self).items() if k != "body"}, "message": message}


def job_of(body: str) -> str:
    try:
        raw = json.loads(body)
    except ValueError:
        return NO_JOB
    job = raw.get("job_id") if isinstance(raw, dict) else None
    return job if isinstance(job, str) and job else NO_JOB


class QuarantineRecords(Records):
    def put(self, q: Quarantined) -> None:
        self._table.put_item(
            Item={
                **job_key(job_of(q.body), f"QUARANTINE#{q.queue}#{q.message_id}"),
                **{k: v for k, v in asdict(q).items() if k != "time"},
                "time": Decimal(str(q.time)),
            }
        )

    def all(self, job_id: str) -> list[Quarantined]:
        items = self._query(Key("pk").eq(f"JOB#{job_id}") & Key("sk").begins_with("QUARANTINE#"))
        return [
            Quarantined(
                i["queue"], i["message_id"], i["body"], i["group"], int(i["redrives"]), i["reason"], float(i["time"])
            )
            for i in items
        ]

    def remove(self, q: Quarantined) -> None:
        self._table.delete_item(Key=job_key(job_of(q.body), f"QUARANTINE#{q.queue}#{q.message_id}"))
