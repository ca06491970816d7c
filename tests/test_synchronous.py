"""Synchronous rounds (`synchronous: true`): at most K tasks are leased on a
version; the next lease waits for the update, so every result is computed
on the version it updates, with nothing computed only to be discarded."""

import json
import time
from dataclasses import replace

import pytest
from chalice.local import LambdaEventConverter

from chalicelib.domain.records import Lease
from chalicelib.services import reset, services
from tests.harness import TASK_MAX_RECEIVES, Dataset, job_body, lease_items, token_payload

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


def lapse(harness, job):
    """Every lease of the job runs out now, as far as SQS is concerned: its tasks are visible again."""
    for item in lease_items(services().slots._table, job):
        harness.sqs.change_message_visibility(
            QueueUrl=harness.job_queue(job), ReceiptHandle=item["receipt"], VisibilityTimeout=0
        )


def test_a_rounds_seat_is_not_extended_by_heartbeats(harness):
    """A seat lasts one lease (issue 39): heartbeats renew the token but not its end, so a client
    that heartbeats and never completes gives the round's seat up after lease_seconds."""
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4), lease_seconds=60, **SYNCHRONOUS)
    task = harness.lease("a")
    lease = Lease.from_json(token_payload(task))
    aged = replace(lease, received=lease.received - 30, expires=lease.expires - 30)  # as if leased 30 s ago
    reply = harness.call("POST", "/tasks/heartbeat", {"job_id": job, "lease_token": services().signer.sign(aged)})
    assert reply.status_code == 200
    assert json.loads(reply.body)["lease_expires"] == pytest.approx(aged.expires, abs=1)  # not now + 55 s
    finish(harness, {**task, "lease_token": json.loads(reply.body)["lease_token"]})  # the renewed token completes


def test_a_seat_that_lapsed_is_not_leased_again_by_its_holder_in_the_round(harness):
    """The squat of issue 39: one identity takes every seat of a round and leases each task again
    as its lease runs out. A seat let go goes to someone else for a lease after it would have ended."""
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4), lease_seconds=60, **SYNCHRONOUS)
    held = [harness.lease("squatter"), harness.lease("squatter")]
    assert [t["kind"] for t in held] == ["train", "train"]
    lapse(harness, job)
    assert harness.lease("squatter")["kind"] == "wait"  # both tasks came up; neither is its again
    honest = harness.lease("honest")
    assert (honest["kind"], honest["base_version"]) == ("train", 0)
    assert honest["batch"] in {t["batch"] for t in held}
    finish(harness, honest)


def test_a_seat_let_go_is_not_taken_by_another_identity_at_its_address(harness, monkeypatch):
    """Where addresses count (a deploy), the bar is the holder's address too: a client's second
    identity cannot take the seat its first let go."""
    monkeypatch.setenv("DISTINCT_ADDRESSES", "1")
    reset()
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "192.0.2.7")
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4), **SYNCHRONOUS)
    first, second = harness.lease("sybil-1"), harness.lease("sybil-2")
    reply = harness.call(
        "POST", "/tasks/release", {"job_id": job, "lease_token": first["lease_token"], "reason": "stopped"}
    )
    assert reply.status_code == 200
    assert harness.lease("sybil-2")["kind"] == "wait"  # the released task is its address's no more
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "198.51.100.9")
    honest = harness.lease("honest")
    assert (honest["kind"], honest["batch"]) == ("train", first["batch"])
    finish(harness, honest)
    finish(harness, second)
    harness.deliver()
    assert harness.status(job)["version"] == 1


def test_two_clients_taking_turns_on_a_rounds_seats_do_not_squat_it(harness, monkeypatch):
    """The squat of issue 39 with two clients at two addresses taking turns: each seat a client let
    go stays barred to it after the other took it (a holder's bar is its own entry, never
    replaced), so when the second's leases lapse too, neither may take the seats again; an honest
    volunteer at a third address is seated."""
    monkeypatch.setenv("DISTINCT_ADDRESSES", "1")
    reset()
    at = lambda address: monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", address)  # noqa: E731
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4), lease_seconds=60, **SYNCHRONOUS)
    at("192.0.2.1")
    assert [harness.lease("turn-a")["kind"] for _ in range(2)] == ["train", "train"]
    lapse(harness, job)
    at("192.0.2.2")
    assert [harness.lease("turn-b")["kind"] for _ in range(2)] == ["train", "train"]
    lapse(harness, job)
    at("192.0.2.1")
    assert harness.lease("turn-a")["kind"] == "wait"
    at("192.0.2.2")
    assert harness.lease("turn-b")["kind"] == "wait"
    at("198.51.100.3")
    assert harness.lease("honest")["kind"] == "train"


ROBUST_ROUNDS = {**SYNCHRONOUS, "gradients_per_update": 5, "aggregation": "median", "max_share": 0.4}


def test_one_client_sits_in_at_most_its_share_of_a_rounds_seats(harness):
    """Under a robust rule the fold takes at most max_share of an update from one client (here two
    of five): a client leasing as fast as it can holds no more seats than that, so the rest of
    each round goes to others and no result is computed only to be refused; its share starts over
    with the next round, which it opens."""
    job = harness.create_job(Dataset.generate(batches=15, batch_size=4), **ROBUST_ROUNDS)
    for version in (0, 1):
        greedy = [harness.lease("greedy") for _ in range(3)]
        assert [t["kind"] for t in greedy] == ["train", "train", "wait"], version
        honest = [harness.lease(f"honest-{name}") for name in "abc"]
        assert [(t["kind"], t["base_version"]) for t in honest] == [("train", version)] * 3
        assert harness.lease("honest-d")["kind"] == "wait"  # the round is full
        for task in greedy[:2] + honest:
            finish(harness, task)
        harness.deliver()
        status = harness.status(job)
        assert (status["version"], status["discarded"]) == (version + 1, {})


def test_the_identities_at_one_address_share_a_share_of_a_rounds_seats(harness, monkeypatch):
    """Where addresses count, the seats' share is the address's too: a client's second identity
    does not add to its first's."""
    monkeypatch.setenv("DISTINCT_ADDRESSES", "1")
    reset()
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "192.0.2.7")
    harness.create_job(Dataset.generate(batches=5, batch_size=4), **ROBUST_ROUNDS)
    sybils = [harness.lease(name) for name in ("sybil-1", "sybil-2", "sybil-3")]
    assert [t["kind"] for t in sybils] == ["train", "train", "wait"]
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "198.51.100.9")
    assert harness.lease("honest")["kind"] == "train"


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_synchronous_must_be_true_or_false(harness, value):
    reply = harness.admin("POST", "/jobs", job_body(Dataset.generate(batches=2, batch_size=4), synchronous=value))
    assert reply.status_code == 400 and "synchronous" in json.loads(reply.body)["Message"]
