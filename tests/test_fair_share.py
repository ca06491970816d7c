"""Jobs share the crowd (issue 40): each job has its own task queue, the
running ones share leases by priority, a new job is served within a few
leases however long another's backlog, a paused job's tasks cost nothing and
stay for its resume, and a held-out check that falls due goes out first."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from dataclasses import replace

import pytest
from botocore.exceptions import ClientError

from chalicelib.domain.records import Task
from chalicelib.services import services
from chalicelib.store.meta import MetaStore
from chalicelib.store.queues import NEW_QUEUE_TRIES, QueueGone, TaskQueue
from tests.harness import LEASE_META_MAX_AGE, Dataset, direct_job


def running_job(job_id: str, batches: int, **options) -> str:
    """A running job of `batches` tasks, all queued (tests/harness.py direct_job)."""
    services().epochs.queue(*direct_job(job_id, batches, **options))
    return job_id


LEASES = itertools.count()


def leases(harness, count: int) -> list[str]:
    """The job of each of `count` leases, by volunteers holding four each (the default limit)."""
    jobs = []
    for n in range(count):
        task = harness.lease(f"crowd-{next(LEASES) // 4}")
        assert task is not None, f"lease {n} found no task"
        jobs.append(task["job_id"])
    return jobs


def test_a_job_behind_anothers_backlog_gets_one_of_its_next_six_leases(harness):
    running_job("j-backlog", 300)
    assert leases(harness, 3) == ["j-backlog"] * 3
    running_job("j-new", 4)
    assert "j-new" in leases(harness, 6)


def test_three_running_jobs_of_equal_priority_share_120_leases(harness):
    for job in ("j-a", "j-b", "j-c"):
        running_job(job, 60)
    shares = Counter(leases(harness, 120))
    assert set(shares) == {"j-a", "j-b", "j-c"}
    assert all(0.25 * 120 <= n <= 0.42 * 120 for n in shares.values()), shares


def test_a_job_of_priority_two_gets_twice_the_leases(harness):
    running_job("j-one", 60)
    running_job("j-two", 60, priority=2)
    shares = Counter(leases(harness, 60))
    assert (shares["j-two"], shares["j-one"]) == (40, 20), shares


def test_a_job_that_had_no_task_for_a_while_does_not_take_a_run_of_leases(harness):
    """A job asked while it had none (its round full, its epoch out) is at
    most one turn ahead when it has tasks again."""
    running_job("j-busy", 200)
    running_job("j-dry", 11)
    url, held_back = harness.job_queue("j-dry"), []
    while len(held_back) < 10:  # j-dry keeps one task for now
        for message in harness.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10 - len(held_back))["Messages"]:
            held_back.append(json.loads(message["Body"])["batch"])
            harness.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    leases(harness, 41)  # j-dry's one task, then 40 turns it had nothing for
    services().tasks.enqueue("j-dry", 0, held_back)  # its other ten come (as the next epoch's would)
    assert Counter(leases(harness, 10))["j-dry"] <= 6


def test_a_paused_job_is_never_asked_and_keeps_its_tasks_for_the_resume(harness):
    running_job("j-paused", 5)
    running_job("j-other", 20)
    leases(harness, 2)  # this Lambda's list of running jobs, read now: j-paused is on it
    # another Lambda pauses it: this one's list stays a second old, its META is read afresh when it meets a task
    parts, elsewhere = services(), MetaStore(services()._table)
    before = elsewhere.get("j-paused")
    elsewhere.save(before, replace(before, status="paused"))
    parts.meta.forget("j-paused")
    assert set(leases(harness, 10)) == {"j-other"}
    assert harness.waiting(harness.job_queue("j-paused")) == 4  # a task met on the stale list went back
    time.sleep(LEASE_META_MAX_AGE + 0.1)  # the list read again: j-paused is not asked at all
    assert set(leases(harness, 4)) == {"j-other"} and harness.waiting(harness.job_queue("j-paused")) == 4
    harness.admin("POST", "/jobs/j-paused/resume")
    assert harness.waiting(harness.job_queue("j-paused")) == 4  # nothing queued twice
    assert Counter(leases(harness, 8))["j-paused"] == 4


def checked_job(harness, batches: int) -> str:
    """A job of `batches` to train on and one held out, checked at every version."""
    ds = Dataset.generate(batches=batches + 1, batch_size=4)
    return harness.create_job(
        Dataset(ds.x[:batches], ds.y[:batches]),
        files=[ds.batch_bytes(b) for b in range(batches + 1)],
        evaluation={"batches": 1, "every": 1, "copies": 1},
    )


def test_a_held_out_check_that_falls_due_goes_out_before_the_backlog(harness):
    job = checked_job(harness, 40)
    first = harness.lease("a")
    assert (first["kind"], first["base_version"]) == ("evaluate", 0)  # version 0's check, queued at start
    task = harness.lease("b")
    assert harness.work(task).status_code == 200
    harness.deliver()
    assert harness.status(job)["version"] == 1
    second = harness.lease("c")  # 38 training tasks wait in the job's queue
    assert (second["kind"], second["base_version"]) == ("evaluate", 1)


class NewQueue:
    """SQS as it answers for a queue created less than a second ago: not there yet, `misses` times."""

    def __init__(self, misses: int):
        self.misses, self.sent = misses, []

    def send_message_batch(self, QueueUrl, Entries):
        if self.misses:
            self.misses -= 1
            raise ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue"}}, "SendMessageBatch")
        self.sent += [json.loads(e["MessageBody"])["batch"] for e in Entries]
        return {}


def test_tasks_sent_to_a_queue_created_a_moment_ago_wait_for_it():
    sqs = NewQueue(misses=3)  # SQS's "at least one second" after CreateQueue, at NEW_QUEUE_PAUSE a try
    queue = TaskQueue(sqs, "https://sqs.example/1/crowdtrain-test-tasks", sleep=lambda s: None)
    assert queue.enqueue("j-new", 0, range(3)) == 3 and sqs.sent == [0, 1, 2]


def test_a_job_queue_that_stays_missing_is_queue_gone_and_a_missing_stage_queue_an_error():
    sqs = NewQueue(misses=NEW_QUEUE_TRIES)
    queue = TaskQueue(sqs, "https://sqs.example/1/crowdtrain-test-tasks", sleep=lambda s: None)
    with pytest.raises(QueueGone):  # a hand-back drops the task; a fold's invocation fails and is retried
        queue.enqueue_tasks([Task("j-gone", 0, 0)])
    assert sqs.sent == []
    sqs.misses = 1
    with pytest.raises(ClientError):
        queue.enqueue_evaluation("j-gone", 3, 1)  # the stage's own queue is never missing: that is an error


def test_a_job_resumed_after_its_queue_was_deleted_gets_its_tasks_again(harness):
    """A teardown deletes the jobs' queues (the table and the data stay): the resume refills one from META."""
    running_job("j-kept", 5)
    harness.admin("POST", "/jobs/j-kept/pause")
    harness.sqs.delete_queue(QueueUrl=harness.job_queue("j-kept"))
    assert harness.admin("POST", "/jobs/j-kept/resume").status_code == 200
    assert harness.waiting(harness.job_queue("j-kept")) == 5


def test_a_paused_jobs_held_out_check_waits_in_the_checks_queue(harness):
    """Every lease asks the checks' queue first: a paused job's check goes back there, out of sight a while."""
    job = checked_job(harness, 2)
    harness.admin("POST", f"/jobs/{job}/pause")
    assert harness.lease() is None
    counts = harness.sqs.get_queue_attributes(QueueUrl=harness.tasks_url, AttributeNames=["All"])["Attributes"]
    assert (counts["ApproximateNumberOfMessagesDelayed"], counts["ApproximateNumberOfMessages"]) == ("1", "0")
