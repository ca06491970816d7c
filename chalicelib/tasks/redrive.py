"""Bringing dead letters back: no task or result is lost in a dead-letter queue.

A task lands in the task DLQ after too many receives (a volunteer's
browser dying on it again and again); a result lands in the results DLQ after
five failed folds (a timeout, throttling). Redriving sends each back to its
queue and only then deletes it from the DLQ (a crash in between sends it
twice; the copy is a duplicate the lease or the fold drops,
docs/architecture.md#exactly-once). A scheduled Lambda redrives everything
every few minutes; `crowdtrain redrive JOB` does one job's at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeadLetters:
    """A dead-letter queue and the queue its messages go back to."""

    name: str  # "tasks" or "results"
    url: str
    source_url: str
    fifo: bool


class Redrive:
    def __init__(self, sqs: Any, queues: list[DeadLetters], batch: int = 10):
        self._sqs, self.queues, self.batch = sqs, [q for q in queues if q.url], batch

    def redrive(self, job_id: str | None = None, limit: int = 10_000) -> dict[str, int]:
        """Send dead letters (of one job, or all) back; how many, per queue."""
        moved = {q.name: 0 for q in self.queues}
        for queue in self.queues:
            while moved[queue.name] < limit:
                reply = self._sqs.receive_message(
                    QueueUrl=queue.url,
                    MaxNumberOfMessages=self.batch,
                    VisibilityTimeout=30,
                    WaitTimeSeconds=0,
                    AttributeNames=["MessageGroupId"],
                )
                messages = reply.get("Messages", [])
                if not messages:
                    break
                for message in messages:
                    if job_id is not None and json.loads(message["Body"]).get("job_id") != job_id:
                        continue  # another job's: out of sight for 30 s, then back for the schedule
                    self._send_back(queue, message)
                    self._sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])
                    moved[queue.name] += 1
        return moved

    def _send_back(self, queue: DeadLetters, message: dict[str, Any]) -> None:
        body = message["Body"]
        if not queue.fifo:
            self._sqs.send_message(QueueUrl=queue.source_url, MessageBody=body)
            return
        # A new deduplication id: the original one (the lease id) may still be
        # in SQS's 5-minute window, which would swallow the redriven copy.
        group = message.get("Attributes", {}).get("MessageGroupId") or json.loads(body)["job_id"]
        self._sqs.send_message(
            QueueUrl=queue.source_url,
            MessageBody=body,
            MessageGroupId=group,
            MessageDeduplicationId=f"redrive-{message['MessageId']}",
        )
