"""Handing a task back (POST /tasks/release): a volunteer that cannot compute
its task gives it back at once instead of hoarding it for the lease's time;
the task is leased again now, its receives start over (a broken browser does
not push it towards the dead-letter queue), and the job counts the reasons
and the volunteers who gave them."""

import json
import time
from types import SimpleNamespace

import pytest

from chalicelib.tasks import source as source_module
from tests.harness import Dataset


def release(harness, task, reason="compute_error", token=None):
    return harness.call(
        "POST",
        "/tasks/release",
        {"job_id": task["job_id"], "reason": reason, "lease_token": token or task["lease_token"]},
    )


def one_window(monkeypatch) -> None:
    """A release window (RELEASE_WINDOW_SECONDS, aligned to the clock) years long, so that a budget
    test does not straddle two windows and count in both; the budget's rule is the same."""
    from chalicelib import services as services_module

    monkeypatch.setenv("RELEASE_WINDOW_SECONDS", str(10**8))
    services_module.reset()


def receive_count(harness, job: str) -> list[int]:
    """Each visible task message's receive count so far, looked at without leasing (hidden a moment)."""
    reply = harness.sqs.receive_message(
        QueueUrl=harness.job_queue(job),
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        AttributeNames=["ApproximateReceiveCount"],
    )
    return [int(m["Attributes"]["ApproximateReceiveCount"]) for m in reply.get("Messages", [])]


def test_a_released_task_is_leased_again_at_once_and_the_job_finishes(harness):
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4), lease_seconds=600)
    task = harness.lease("broken")
    assert harness.lease("other") is None  # hidden while leased
    reply = release(harness, task)
    assert reply.status_code == 200 and json.loads(reply.body)["released"] is True
    again = harness.lease("other")
    assert again is not None and (again["epoch"], again["batch"]) == (task["epoch"], task["batch"])
    assert harness.work(again).status_code == 200
    harness.deliver()
    status = harness.status(job)
    assert status["status"] == "finished"
    assert status["counters"]["released_compute_error"] == 1
    assert status["counters"]["volunteers_released_compute_error"] == 1


def test_a_released_task_starts_its_receives_over(harness):
    """Queued again as a fresh message: released 5 times (by 5 volunteers), it has been received once."""
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4))
    for n in range(5):
        assert release(harness, harness.lease(f"broken-{n}"), "download_error").status_code == 200
    assert receive_count(harness, job) == [1]


@pytest.mark.parametrize("reason", ["no_backend", "download_error"])
def test_the_reasons_count_each_volunteer_once(harness, reason):
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4))
    for volunteer in ("a", "a", "b"):
        assert release(harness, harness.lease(volunteer), reason).status_code == 200
    counters = harness.status(job)["counters"]
    assert counters[f"released_{reason}"] == 3 and counters[f"volunteers_released_{reason}"] == 2


def test_a_released_lease_can_be_neither_completed_nor_released_again(harness):
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4))
    task = harness.lease("v")
    loss, data = harness.compute(task)
    assert harness.upload(task, data).status_code in (200, 204)
    assert release(harness, task).status_code == 200
    assert harness.complete(task, loss).status_code == 409
    assert release(harness, task).status_code == 409
    assert len(receive_count(harness, job)) == 1  # one copy of the task, not two


def test_a_completed_lease_cannot_be_released(harness):
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4))
    task = harness.lease("v")
    assert harness.work(task).status_code == 200
    assert release(harness, task).status_code == 409
    assert receive_count(harness, job) == [1]  # only the other batch's task


def test_a_release_frees_the_volunteers_slot(harness):
    harness.create_job(Dataset.generate(batches=8, batch_size=4))
    held = [harness.lease("v") for _ in range(4)]
    assert harness.lease_reply("v").status_code == 429
    assert release(harness, held[0]).status_code == 200
    assert harness.lease("v") is not None


def test_a_pinned_task_goes_back_pinned(harness):
    """A replica check computes on the version of the copy it checks; released
    after the model has moved on, it still does."""
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4), replication={"copies": 2})
    for volunteer in ("a", "b"):  # both batches' first copies, on version 0
        assert harness.work(harness.lease(volunteer)).status_code == 200
    harness.deliver()
    checks = [harness.lease("c"), harness.lease("d")]
    assert [t["base_version"] for t in checks] == [0, 0]
    assert harness.work(checks[0]).status_code == 200
    harness.deliver()
    assert harness.status(job)["version"] == 1  # one pair agreed
    assert release(harness, checks[1]).status_code == 200
    again = harness.lease("e")
    assert again["batch"] == checks[1]["batch"] and again["base_version"] == 0


@pytest.mark.parametrize(
    "body, status",
    [
        ({"job_id": "j-1", "lease_token": "x", "reason": "bored"}, 400),
        ({"job_id": "j-1", "lease_token": "x", "reason": ["compute_error"]}, 400),
        ({"job_id": "j-1", "lease_token": "x"}, 400),
        ({"job_id": "j-1", "lease_token": "x", "reason": "compute_error", "extra": 1}, 400),
        ({"job_id": "j-1", "lease_token": "forged", "reason": "compute_error"}, 401),
        ("not json", 400),
        ([], 400),
    ],
)
def test_bad_releases_are_4xx(harness, body, status):
    harness.create_job(Dataset.generate(batches=1, batch_size=4))
    reply = harness.call("POST", "/tasks/release", body)
    assert reply.status_code == status, reply.body


def test_a_token_of_another_job_does_not_release(harness):
    jobs = {harness.create_job(Dataset.generate(batches=1, batch_size=4)) for _ in range(2)}
    task = harness.lease("v")
    other = next(j for j in jobs if j != task["job_id"])
    reply = harness.call(
        "POST", "/tasks/release", {"job_id": other, "lease_token": task["lease_token"], "reason": "compute_error"}
    )
    assert reply.status_code == 403
    assert release(harness, task).status_code == 200  # its own job's release still works


def test_an_identity_cycling_lease_and_release_is_refused_once_its_budget_is_spent(harness, monkeypatch):
    """Leasing and handing back at once is how a client would pick the task it wants: an identity
    hands back at most RELEASES_PER_VOLUNTEER (30) tasks in ten minutes, then finishes them or
    lets their leases run out."""
    one_window(monkeypatch)
    job = harness.create_job(Dataset.generate(batches=40, batch_size=4), lease_seconds=600)
    replies = [release(harness, harness.lease("cycler")).status_code for _ in range(31)]
    assert replies == [200] * 30 + [429]
    refused = release(harness, harness.lease("cycler"))
    assert refused.status_code == 429 and b"handed back 30 tasks" in refused.body
    assert harness.status(job)["counters"]["released_compute_error"] == 30
    assert release(harness, harness.lease("another")).status_code == 200  # its own budget


def test_a_task_handed_back_is_not_offered_to_the_identity_that_handed_it_back(harness, monkeypatch):
    """A client cannot cycle lease -> release to pick the task it wants: what
    it hands back goes to someone else (the last identity to hand it back is
    remembered with it; the release budget bounds the rest) until its lease
    would have ended, so handing back gains nothing over letting it run out."""
    harness.create_job(Dataset.generate(batches=1, batch_size=4), lease_seconds=600)
    task = harness.lease("picky")
    assert release(harness, task).status_code == 200
    assert harness.lease("picky") is None  # the only task is not for it
    other = harness.lease("other")
    assert other is not None and (other["epoch"], other["batch"]) == (task["epoch"], task["batch"])
    assert release(harness, other).status_code == 200
    assert harness.lease("other") is None  # nor for the next to hand it back
    # once its lease would have ended, a lone volunteer that stopped and started again gets it back
    later = time.time() + 601
    monkeypatch.setattr(source_module, "time", SimpleNamespace(time=lambda: later))
    again = harness.lease("other")
    assert again is not None and (again["epoch"], again["batch"]) == (task["epoch"], task["batch"])


def test_the_identities_behind_one_address_share_a_release_budget(harness, monkeypatch):

    monkeypatch.setenv("RELEASES_PER_ADDRESS", "3")
    one_window(monkeypatch)
    harness.create_job(Dataset.generate(batches=2, batch_size=4), lease_seconds=600)
    replies = [release(harness, harness.lease(name), "download_error").status_code for name in ("a", "b", "c", "d")]
    assert replies == [200, 200, 200, 429]


def test_a_job_whose_tasks_fail_in_three_browsers_before_any_fold_pauses_itself_with_why(harness):
    """issue 41: a model the browsers cannot train (create's check skipped) pauses its job, with the
    reason in its status, instead of burning every volunteer's time; two failures are not enough."""
    job = harness.create_job(Dataset.generate(batches=4, batch_size=4))
    for volunteer in ("a", "b"):
        assert release(harness, harness.lease(volunteer)).status_code == 200
    assert harness.status(job)["status"] == "running"
    assert release(harness, harness.lease("c")).status_code == 200
    status = harness.status(job)
    assert status["status"] == "paused" and "failed to compute in 3 volunteers' browsers" in status["paused_reason"]
    assert harness.lease("d") is None  # a paused job hands out nothing
    # the operator's resume overrides it for good: more failures do not pause it again
    assert harness.admin("POST", f"/jobs/{job}/resume").status_code == 200
    assert "paused_reason" not in harness.status(job)
    for volunteer in ("e", "f", "g"):
        assert release(harness, harness.lease(volunteer)).status_code == 200
    assert harness.status(job)["status"] == "running"


def test_compute_errors_never_pause_a_job_that_has_trained(harness):
    """A hand-back is a volunteer's claim: once a result of the job folded, no number of them pauses it."""
    job = harness.create_job(Dataset.generate(batches=5, batch_size=4))
    assert harness.work(harness.lease("honest")).status_code == 200
    harness.deliver()
    for volunteer in ("x", "y", "z", "w"):
        assert release(harness, harness.lease(volunteer)).status_code == 200
    assert harness.status(job)["status"] == "running"


def test_compute_errors_never_pause_a_job_with_a_result_waiting_for_its_update(harness):
    """K = 3: one honest result accepted and pending (nothing folded yet) is progress enough."""
    job = harness.create_job(Dataset.generate(batches=6, batch_size=4), gradients_per_update=3)
    assert harness.work(harness.lease("honest")).status_code == 200
    harness.deliver()
    assert harness.status(job)["pending_gradients"] == 1
    for volunteer in ("x", "y", "z"):
        assert release(harness, harness.lease(volunteer)).status_code == 200
    assert harness.status(job)["status"] == "running"


def test_compute_errors_from_one_address_count_once_toward_pausing(harness, monkeypatch):
    """Where addresses count, three identities of one client are one source: the job keeps running."""
    from chalice.local import LambdaEventConverter

    from chalicelib import services as services_module

    monkeypatch.setenv("DISTINCT_ADDRESSES", "1")
    services_module.reset()
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "192.0.2.33")
    job = harness.create_job(Dataset.generate(batches=4, batch_size=4))
    for volunteer in ("s1", "s2", "s3"):
        assert release(harness, harness.lease(volunteer)).status_code == 200
    assert harness.status(job)["status"] == "running"
