"""SQS behind two small classes: the task queues (a receive is a lease) and
the results FIFO queue (one message group per job serializes its folds; a job
with `fold_groups` G > 1 spreads its results over G more groups, by batch,
their partial sums over a tenth as many middle groups, and the middle sums
go to the job's own group: fold/partials.py)."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from botocore.exceptions import ClientError

from chalicelib.domain.records import CreditDue, PartialSum, Result, Task

# What SQS answers for a queue that does not exist (the JSON and the query protocols).
NO_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
# A queue is usable a second after it is created (SQS's CreateQueue reference): sends to a
# job's new queue are tried this often, this far apart, before it is QueueGone.
NEW_QUEUE_TRIES, NEW_QUEUE_PAUSE = 6, 0.5
# What a job's queue takes from the stage's queue (the stack sets them: infra/template.yaml).
INHERITED = ("VisibilityTimeout", "MessageRetentionPeriod", "RedrivePolicy")


class QueueGone(RuntimeError):
    """A job's queue that is not there (its job was deleted, or it was never made: a job older than job queues)."""


def missing(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") in NO_QUEUE


class TaskQueue:
    """The tasks, in one SQS queue per job (created when the job starts,
    deleted with it) so that a lease chooses the job first (tasks/picker.py)
    and no job's backlog stands in front of another's; and the stage's own
    queue, which holds the held-out checks that every lease tries first. A
    job's queue is the stage's queue's URL and `-<job id>`, so no lookup is
    needed, and it takes the stage queue's dead-letter queue and timeouts."""

    errors = ClientError  # what SQS raises, e.g. for a receipt handle that is no longer valid

    def __init__(self, sqs: Any, url: str, sleep: Callable[[float], None] = time.sleep):
        self._sqs = sqs
        self.url = url
        self._sleep = sleep

    def job_url(self, job_id: str) -> str:
        return f"{self.url}-{job_id}"

    def url_of(self, task: Task) -> str:
        """Where a task lives: a check in the stage's queue, a training task in its job's."""
        return self.url if task.evaluates is not None else self.job_url(task.job_id)

    def open(self, job_id: str) -> bool:
        """Create the job's queue; false if it was there already (with its tasks)."""
        name = self.job_url(job_id).rsplit("/", 1)[-1]
        try:
            self._sqs.get_queue_url(QueueName=name)
            return False
        except ClientError as err:
            if not missing(err):
                raise
        inherited = self._sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=list(INHERITED))["Attributes"]
        self._sqs.create_queue(QueueName=name, Attributes={k: inherited[k] for k in INHERITED if k in inherited})
        return True

    def close(self, job_id: str) -> None:
        """Delete the job's queue with every task in it (it may be gone already)."""
        try:
            self._sqs.delete_queue(QueueUrl=self.job_url(job_id))
        except ClientError as err:
            if not missing(err):
                raise

    def enqueue(self, job_id: str, epoch: int, batches: Iterable[int], pin: int | None = None) -> int:
        """Queue one message per (epoch, batch), in the order given."""
        return self.enqueue_tasks([Task(job_id, epoch, b, pin=pin) for b in batches])

    def enqueue_tasks(self, tasks: list[Task]) -> int:
        """Queue these tasks as they are, in the order given, each in its job's queue."""
        by_url: dict[str, list[Task]] = {}
        for task in tasks:
            by_url.setdefault(self.url_of(task), []).append(task)
        for url, queued in by_url.items():
            entries = [{"Id": str(i), "MessageBody": task.message()} for i, task in enumerate(queued)]
            for start in range(0, len(entries), 10):
                self._send(url, entries[start : start + 10])
        return len(tasks)

    def enqueue_evaluation(self, job_id: str, version: int, copies: int, delay: int = 0) -> None:
        """Queue `copies` evaluation tasks of one version (each for a different
        volunteer); `delay` keeps them out of sight that long first."""
        entries = [
            {"Id": str(i), "MessageBody": Task.evaluation(job_id, version).message(), "DelaySeconds": delay}
            for i in range(copies)
        ]
        self._send(self.url, entries)

    def _send(self, url: str, entries: list[dict[str, Any]]) -> None:
        """One SendMessageBatch; a job's queue created less than a second ago
        is waited for (2.5 s), and one that stays missing is QueueGone: the
        caller knows whether that is its job's deletion (tasks dropped) or an
        error (the fold's invocation fails and SQS retries it)."""
        for attempt in range(NEW_QUEUE_TRIES):
            try:
                failed = self._sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed", [])
                break
            except ClientError as err:
                if not missing(err) or url == self.url:
                    raise
                if attempt == NEW_QUEUE_TRIES - 1:
                    raise QueueGone(f"no queue {url}") from err
                self._sleep(NEW_QUEUE_PAUSE)
        if failed:
            raise RuntimeError(f"SQS refused {len(failed)} task messages: {failed[0].get('Message')}")

    def receive(self, job_id: str | None, visibility: int, wait: int) -> Task | None:
        """Take one task of the job (None: a held-out check) out of sight for
        `visibility` seconds, or None (a job whose queue is gone has none)."""
        url = self.url if job_id is None else self.job_url(job_id)
        try:
            reply = self._sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=visibility, WaitTimeSeconds=wait
            )
        except ClientError as err:
            if job_id is None or not missing(err):
                raise
            return None
        for message in reply.get("Messages", []):
            return Task.from_message(message["Body"], message["ReceiptHandle"])
        return None

    def hide(self, task: Task, seconds: int) -> None:
        """Extend (or shorten) a lease: the task stays out of sight this long from now."""
        self._sqs.change_message_visibility(
            QueueUrl=self.url_of(task), ReceiptHandle=task.receipt, VisibilityTimeout=seconds
        )

    def delete(self, task: Task) -> None:
        self._sqs.delete_message(QueueUrl=self.url_of(task), ReceiptHandle=task.receipt)

    def route(self, body: str) -> str:
        """The queue a dead-lettered task message goes back to (tasks/redrive.py)."""
        return self.url_of(Task.from_message(body, ""))

    def depth(self, job_id: str) -> dict[str, int]:
        """The job's tasks waiting and in flight (leased, or held back for a
        round), as SQS counts them (approximately): one call, however many leases."""
        try:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self.job_url(job_id),
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
        except ClientError as err:
            if not missing(err):
                raise
            attributes = {}
        return {
            "waiting": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
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
