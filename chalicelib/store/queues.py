"""SQS behind two small classes: the task queue (a receive is a lease) and the
results FIFO queue (one message group per job serializes its folds; a job
with `fold_groups` G > 1 spreads its results over G more groups, by batch,
their partial sums over a tenth as many middle groups, and the middle sums
go to the job's own group: fold/partials.py)."""

from __future__ import annotations

from typing import Any, Iterable

from botocore.exceptions import ClientError

from chalicelib.domain.records import CreditDue, PartialSum, Result, Task


class TaskQueue:
    errors = ClientError  # what SQS raises, e.g. for a receipt handle that is no longer valid

    def __init__(self, sqs: Any, url: str):
        self._sqs = sqs
        self.url = url

    def enqueue(self, job_id: str, epoch: int, batches: Iterable[int], pin: int | None = None) -> int:
        """Queue one message per (epoch, batch), in the order given."""
        return self.enqueue_tasks([Task(job_id, epoch, b, pin=pin) for b in batches])

    def enqueue_tasks(self, tasks: list[Task]) -> int:
        """Queue these tasks as they are, in the order given."""
        entries = [{"Id": str(i), "MessageBody": task.message()} for i, task in enumerate(tasks)]
        for start in range(0, len(entries), 10):
            chunk = entries[start : start + 10]
            failed = self._sqs.send_message_batch(QueueUrl=self.url, Entries=chunk).get("Failed", [])
            if failed:
                raise RuntimeError(f"SQS refused {len(failed)} task messages: {failed[0].get('Message')}")
        return len(entries)

    def enqueue_evaluation(self, job_id: str, version: int, copies: int, delay: int = 0) -> None:
        """Queue `copies` evaluation tasks of one version (each for a different
        volunteer); `delay` keeps them out of sight that long first."""
        entries = [
            {"Id": str(i), "MessageBody": Task.evaluation(job_id, version).message(), "DelaySeconds": delay}
            for i in range(copies)
        ]
        failed = self._sqs.send_message_batch(QueueUrl=self.url, Entries=entries).get("Failed", [])
        if failed:
            raise RuntimeError(f"SQS refused {len(failed)} evaluation messages: {failed[0].get('Message')}")

    def receive(self, visibility: int, wait: int) -> Task | None:
        """Take one task out of sight for `visibility` seconds, or None."""
        reply = self._sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=1, VisibilityTimeout=visibility, WaitTimeSeconds=wait
        )
        for message in reply.get("Messages", []):
            return Task.from_message(message["Body"], message["ReceiptHandle"])
        return None

    def hide(self, receipt: str, seconds: int) -> None:
        """Extend (or shorten) a lease: the task stays out of sight this long from now."""
        self._sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=seconds)

    def delete(self, receipt: str) -> None:
        self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)

    def depth(self) -> dict[str, int]:
        """The stage's tasks waiting and in flight (leased, or held back for a
        round), as SQS counts them (approximately): one call, however many leases."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return {
            "waiting": int(attributes["ApproximateNumberOfMessages"]),
            "in_flight": int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        }


class ResultQueue:
    def __init__(self, sqs: Any, url: str):
        self._sqs = sqs
        self.url = url

    def send(self, result: Result, groups: int = 1) -> None:
        """Hand a completed task to the fold. The lease id is the deduplication
        id, so a completion retried within SQS's 5-minute window is sent once.
        Every copy of one batch goes to the same group."""
        group = result.job_id if groups == 1 else f"{result.job_id}#{result.batch % groups}"
        self._sqs.send_message(
            QueueUrl=self.url,
            MessageBody=result.message(),
            MessageGroupId=group,
            MessageDeduplicationId=result.lease_id,
        )

    def send_credit_due(self, due: CreditDue, window: str) -> None:
        """Ask for a tally of the job's credit, in its own group. `window` is
        part of the deduplication id: SQS sends one per window however many
        folds ask within 5 minutes."""
        self._sqs.send_message(
            QueueUrl=self.url,
            MessageBody=due.message(),
            MessageGroupId=f"{due.job_id}#credit",
            MessageDeduplicationId=f"credit-{window}",
        )

    def send_sum(self, partial: PartialSum, middle: int | None = None) -> None:
        """Hand a partial sum on: to middle group `middle`, or (None) to the
        job's own group, its top-level fold. Its level and digest are the
        deduplication id: the same sum sent again by a retried fold within
        5 minutes is sent once."""
        group = partial.job_id if middle is None else f"{partial.job_id}#s{middle}"
        self._sqs.send_message(
            QueueUrl=self.url,
            MessageBody=partial.message(),
            MessageGroupId=group,
            MessageDeduplicationId=f"{partial.level}-{partial.digest}",
        )
