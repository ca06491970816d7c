"""Synchronous rounds (`synchronous: true`): at most K tasks are leased on a
version; the next lease waits for the update, so every result is computed
on the version it updates, with nothing computed only to be discarded."""

import json
import time

import pytest

from chalicelib.services import services
from tests.harness import TASK_MAX_RECEIVES, Dataset, job_body

SYNCHRONOUS = {
    "synchronous": True,
    "gradients_per_update": 2,
    "staleness": 0,
    "optimizer": {"name": "sgd", "learning_rate": 0.1},
}


def finish(harness, task):
    assert harness.work(task).status_code == 200


def test_a_round_hands_out_k_tasks_then_waits_for_its_update(harness):
    job = harness.create_job(Dataset.generate(batches=6, batch_size=4), **SYNCHRONOUS)
    round_one = [harness.lease("a"), harness.lease("b")]
    assert [t["kind"] for t in round_one] == ["train", "train"]
    wait = harness.lease("c")
    assert wait["kind"] == "wait" and wait["job_id"] == job and wait["base_version"] == 0
    assert wait["retry_after"] == 1 and "version 1" in wait["reason"]
    assert "lease_token" not in wait  # nothing is held: the task went back to the queue
    for task in round_one:
        finish(harness, task)
    harness.deliver()
    assert harness.status(job)["version"] == 1
    round_two = [harness.lease("c"), harness.lease("a")]
    assert [(t["kind"], t["base_version"]) for t in round_two] == [("train", 1), ("train", 1)]
    assert harness.lease("b")["kind"] == "wait"
    for task in round_two:
        finish(harness, task)
    harness.deliver()
    while (task := harness.lease("a")) is not None:
        assert task["kind"] == "train" and task["base_version"] == 2
        finish(harness, task)
    harness.deliver()
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == 3 and status["discarded"] == {}
    assert sorted(b for _, b, _ in harness.folds(job)) == list(range(6))


def test_waiting_does_not_count_toward_the_dead_letter_queue(harness):
    """A full round's tasks go back as fresh copies: a volunteer asking again
    every second for a long round must not push them into the DLQ."""
    harness.create_job(Dataset.generate(batches=3, batch_size=4), **SYNCHRONOUS)
    held = [harness.lease("a"), harness.lease("b")]
    for _ in range(TASK_MAX_RECEIVES + 2):
        assert harness.lease("c")["kind"] == "wait"
    assert harness.waiting(harness.task_dlq_url) == 0
    for task in held:
        finish(harness, task)
    harness.deliver()
    last = harness.lease("c")
    assert (last["kind"], last["base_version"]) == ("train", 1)
    assert {last["batch"]} == {0, 1, 2} - {t["batch"] for t in held}


def test_a_task_handed_back_is_leased_again_in_its_round(harness):
    """The round holds task ids: the released task takes its old seat, not a new one."""
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4), epochs=2, **SYNCHRONOUS)
    first, second = harness.lease("a"), harness.lease("b")
    reply = harness.call(
        "POST", "/tasks/release", {"job_id": job, "lease_token": first["lease_token"], "reason": "stopped"}
    )
    assert reply.status_code == 200
    again = harness.lease("c")
    assert (again["kind"], again["batch"], again["base_version"]) == ("train", first["batch"], 0)
    finish(harness, again)
    finish(harness, second)
    harness.deliver()
    assert harness.status(job)["version"] == 1


def test_a_round_is_the_newest_versions_even_when_the_lease_read_meta_a_while_ago(harness):
    """An epoch's last round may be short of K: the next epoch's first task
    must sit in the round of the version that epoch made, not in the short
    round of the version this Lambda's cached META still shows (the fold
    runs in another Lambda)."""
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4), epochs=2, **SYNCHRONOUS)
    parts = services()
    before = parts.meta.get(job)
    finish(harness, harness.lease("a"))  # the epoch's one task: a round of one, folded at the epoch's end
    harness.deliver()
    assert harness.status(job)["version"] == 1
    parts.meta._seen[job] = (time.time(), before)
    task = harness.lease("a")
    assert (task["kind"], task["epoch"], task["base_version"]) == ("train", 1, 1)


def test_a_replica_check_is_leased_while_the_round_is_full(harness):
    """A check computes its first copy's batch on that copy's version,
    whose round holds the batch's seat: waiting behind the round would stall
    it for good. (A lease that meets a new task of the full round answers a
    wait and puts the task back: the next lease meets the next task.)"""
    job = harness.create_job(
        Dataset.generate(batches=4, batch_size=4),
        **{**SYNCHRONOUS, "staleness": 2, "replication": {"copies": 2, "tolerance": 1e-3}},
    )
    firsts = [harness.lease("a"), harness.lease("b")]
    for task in firsts:
        finish(harness, task)
    harness.deliver()
    assert harness.status(job)["awaiting_replica"] == 2
    checks = []
    for _ in range(4):
        if len(checks) < 2 and (task := harness.lease("cd"[len(checks)]))["kind"] == "train":
            checks.append(task)
    assert sorted((t["batch"], t["base_version"]) for t in checks) == sorted((t["batch"], 0) for t in firsts)
    for task in checks:
        finish(harness, task)
    harness.deliver()
    assert harness.status(job)["version"] == 1


def test_a_held_out_evaluation_takes_no_seat_in_the_round(harness):
    """Version 0's evaluation is queued with the first round's tasks: had it
    taken a seat, the round would be one short of K for good."""
    ds = Dataset.generate(batches=5, batch_size=4)  # 4 to train on, 1 held out
    harness.create_job(
        Dataset(ds.x[:4], ds.y[:4]),
        files=[ds.batch_bytes(b) for b in range(5)],
        **{**SYNCHRONOUS, "evaluation": {"batches": 1, "every": 1, "copies": 1}},
    )
    leases = [harness.lease(v) for v in "abc"]
    assert sorted((t["kind"], t["base_version"]) for t in leases) == [("evaluate", 0), ("train", 0), ("train", 0)]


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_synchronous_must_be_true_or_false(harness, value):
    reply = harness.admin("POST", "/jobs", job_body(Dataset.generate(batches=2, batch_size=4), synchronous=value))
    assert reply.status_code == 400 and "synchronous" in json.loads(reply.body)["Message"]
