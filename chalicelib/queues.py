"""SQS behind two small classes: the task queue (a receive is a lease) and the
results FIFO queue (one message group per job serializes its folds)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from botocore.exceptions import ClientError


@dataclass(frozen=True)
class Task:
    job: str
    epoch: int
    batch: int
    receipt: str
    pin: int | None = None  # a replica check: compute on this version, not the newest


class TaskQueue:
    errors = ClientError  # what SQS raises, e.g. for a receipt handle that is no longer valid

    def __init__(self, sqs: Any, url: str):
        self._sqs = sqs
        self.url = url

    def enqueue(self, job: str, epoch: int, batches: Iterable[int], pin: int | None = None) -> int:
        """Queue one message per (epoch, batch), in the order given."""
        extra = {} if pin is None else {"pin": pin}
        entries = [{"Id": str(i), "MessageBody": json.dumps({"job": job, "epoch": epoch, "batch": b, **extra})}
                   for i, b in enumerate(batches)]
        for start in range(0, len(entries), 10):
            chunk = entries[start:start + 10]
            failed = self._sqs.send_message_batch(QueueUrl=self.url, Entries=chunk).get("Failed", [])
            if failed:
                raise RuntimeError(f"SQS refused {len(failed)} task messages: {failed[0].get('Message')}")
        return len(entries)

    def receive(self, visibility: int, wait: int) -> Task | None:
        """Take one task out of sight for `visibility` seconds, or None."""
        reply = self._sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=1,
                                          VisibilityTimeout=visibility, WaitTimeSeconds=wait)
        for message in reply.get("Messages", []):
            body = json.loads(message["Body"])
            pin = body.get("pin")
            return Task(body["job"], int(body["epoch"]), int(body["batch"]), message["ReceiptHandle"],
                        None if pin is None else int(pin))
        return None

    def hide(self, receipt: str, seconds: int) -> None:
        """Extend (or shorten) a lease: the task stays out of sight this long from now."""
        self._sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=receipt,
                                            VisibilityTimeout=seconds)

    def delete(self, receipt: str) -> None:
        self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)


class ResultQueue:
    def __init__(self, sqs: Any, url: str):
        self._sqs = sqs
        self.url = url

    def send(self, result: dict[str, Any]) -> None:
        """Hand a completed task to the fold. The lease id is the deduplication
        id, so a completion retried within SQS's 5-minute window is sent once."""
        self._sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps(result),
                               MessageGroupId=result["job"], MessageDeduplicationId=result["lease_id"])
