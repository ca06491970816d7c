"""Bringing dead letters back: no task or result is lost in a dead-letter queue.

A task lands in the task DLQ after too many receives (a volunteer's
browser dying on it again and again); a result lands in the results DLQ after
five failed folds (a timeout, throttling). Redriving sends each back to its
queue and only then deletes it from the DLQ (a crash in between sends it
twice; the copy is a duplicate the lease or the fold drops,
docs/architecture.md#exactly-once). A scheduled Lambda redrives everything
every few minutes; `crowdtrain redrive JOB` does one job's at once.

A poison message (one that fails every fold, or that every browser dies on)
would go round for ever, blocking its message group for half an hour each
time: each send carries how often it was redriven, and one dead-lettered
again after MAX_REDRIVES is quarantined with why instead (store/quarantine.py)
until its operator retries it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from botocore.exceptions import ClientError

from chalicelib.store.quarantine import Quarantined, QuarantineRecords, job_of
from chalicelib.store.queues import missing

log = logging.getLogger(__name__)

MAX_REDRIVES = 3
REDRIVES = "redrives"  # the message attribute that counts them


@dataclass(frozen=True)
class DeadLetters:
    """A dead-letter queue and the queue its messages go back to."""

    name: str  # "tasks" or "results"
    url: str
    source_url: str
    fifo: bool
    # the queue a message goes back to, from its body, where it is not source_url (a task: its job's)
    route: Callable[[str], str] | None = None


@dataclass
class Redriven:
    """What a redrive did, per queue: sent back, and quarantined."""

    moved: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)


class Redrive:
    def __init__(
        self,
        sqs: Any,
        queues: list[DeadLetters],
        quarantine: QuarantineRecords,
        batch: int = 10,
        clock: Callable[[], float] = time.time,
    ):
        self._sqs, self.queues, self.batch = sqs, [q for q in queues if q.url], batch
        self.quarantine, self.clock = quarantine, clock

    def redrive(self, job_id: str | None = None, limit: int = 10_000) -> Redriven:
        """Send dead letters (of one job, or all) back, or quarantine those
        redriven MAX_REDRIVES times already; how many, per queue."""
        done = Redriven({q.name: 0 for q in self.queues}, {q.name: 0 for q in self.queues})
        for queue in self.queues:
            while done.moved[queue.name] + done.quarantined[queue.name] < limit:
                reply = self._sqs.receive_message(
                    QueueUrl=queue.url,
                    MaxNumberOfMessages=self.batch,
                    VisibilityTimeout=30,
                    WaitTimeSeconds=0,
                    AttributeNames=["MessageGroupId", "ApproximateReceiveCount"],
                    MessageAttributeNames=[REDRIVES],
                )
                messages = reply.get("Messages", [])
                if not messages:
                    break
                for message in messages:
                    if job_id is not None and job_of(message["Body"]) != job_id:
                        continue  # another job's: out of sight for 30 s, then back for the schedule
                    redrives = int(message.get("MessageAttributes", {}).get(REDRIVES, {}).get("StringValue", 0))
                    if redrives >= MAX_REDRIVES:
                        self.quarantine.put(self._quarantined(queue, message, redrives))
                        done.quarantined[queue.name] += 1
                    else:
                        self._send_back(queue, message["Body"], _group(message), redrives + 1, message["MessageId"])
                        done.moved[queue.name] += 1
                    self._sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])
        return done

    def retry_quarantined(self, job_id: str) -> list[Quarantined]:
        """Every quarantined message of the job back to its queue, counted afresh."""
        by_name = {q.name: q for q in self.queues}
        retried = []
        for q in self.quarantine.all(job_id):
            if q.queue in by_name:
                self._send_back(by_name[q.queue], q.body, q.group, 0, f"retry-{q.message_id}-{self.clock():.0f}")
                self.quarantine.remove(q)
                retried.append(q)
        return retried

    def _quarantined(self, queue: DeadLetters, message: dict[str, Any], redrives: int) -> Quarantined:
        receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
        return Quarantined(
            queue.name,
            message["MessageId"],
            message["Body"],
            _group(message),
            redrives,
            f"dead-lettered again after {redrives} redrives (each after its queue's maximum receives; "
            f"{receives} receives in the dead-letter queue)",
            self.clock(),
        )

    def _send_back(self, queue: DeadLetters, body: str, group: str, redrives: int, dedup: str) -> None:
        attributes = {REDRIVES: {"DataType": "Number", "StringValue": str(redrives)}}
        if not queue.fifo:
            url = queue.route(body) if queue.route else queue.source_url
            try:
                self._sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)
            except ClientError as err:
                if not missing(err):
                    raise
                log.info("dropped a dead letter of a deleted job (no queue %s)", url)
            return
        # A new deduplication id: the original one (the lease id) may still be
        # in SQS's 5-minute window, which would swallow the redriven copy.
        self._sqs.send_message(
            QueueUrl=queue.source_url,
            MessageBody=body,
            MessageGroupId=group or job_of(body),
            MessageDeduplicationId=f"redrive-{dedup}",
            MessageAttributes=attributes,
        )


def _group(message: dict[str, Any]) -> str:
    return str(message.get("Attributes", {}).get("MessageGroupId", ""))
