"""What a volunteer's page says with a completion besides its loss: the TF.js
backend that computed the result and the bytes the page used since its last
completion. The fold sums them per job, once per result; the dashboard shows
data per task and per volunteer from these counters."""

import pytest

from tests.harness import Dataset


def complete(harness, task, **extra):
    loss, data = harness.compute(task)
    assert harness.upload(task, data).status_code in (200, 204)
    return harness.call(
        "POST", "/tasks/complete", {"job_id": task["job_id"], "lease_token": task["lease_token"], "loss": loss, **extra}
    )


def test_data_and_backends_are_summed_per_job_and_each_volunteer_counted_once(harness):
    job = harness.create_job(Dataset.generate(batches=4, batch_size=4))
    said = [
        ("a", {"bytes_down": 1000, "bytes_up": 10, "backend": "wasm"}),
        ("a", {"bytes_down": 300, "bytes_up": 20, "backend": "wasm"}),
        ("b", {"bytes_down": 5, "backend": "cpu"}),
        ("c", {}),
    ]  # a page that says nothing (a Node volunteer) is not counted
    for volunteer, extra in said:
        assert complete(harness, harness.lease(volunteer), **extra).status_code == 200
    harness.deliver()
    counters = harness.status(job)["counters"]
    assert (counters["bytes_down"], counters["bytes_up"], counters["data_reports"]) == (1305, 30, 3)
    assert counters["volunteers_data"] == 2
    assert (counters["backend_wasm"], counters["backend_cpu"]) == (2, 1)


@pytest.mark.parametrize(
    "extra",
    [
        {"bytes_down": -1},
        {"bytes_up": 1.5},
        {"bytes_down": "12"},
        {"bytes_down": 10**13},
        {"bytes_up": 10**400},
        {"bytes_down": True},
        {"bytes_down": None},
    ],
)
def test_bad_data_figures_are_400_and_the_lease_stays_live(harness, extra):
    harness.create_job(Dataset.generate(batches=1, batch_size=4))
    task = harness.lease("v")
    reply = complete(harness, task, **extra)
    assert reply.status_code == 400, reply.body
    assert "bytes_" in reply.body.decode()
    assert complete(harness, task, bytes_down=1, bytes_up=1).status_code == 200
