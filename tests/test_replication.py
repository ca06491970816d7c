"""BOINC-style replication: with `replication.copies = 2` an accepted gradient
is folded only after a second volunteer, computing the same batch on the same
version, agrees with it."""
import json

import numpy as np
import pytest

from tests.conftest import Crash
from tests.harness import Dataset

REPLICATED = {"replication": {"copies": 2, "tolerance": 1e-3}, "gradients_per_update": 1, "staleness": 8}


def folds(harness, job):
    return sorted((e, b) for e, b, _ in harness.folds(job))


def step(harness, volunteer, data=None):
    """Lease as `volunteer`, upload its honest gradient (or `data`), complete, run the fold."""
    task = harness.lease(volunteer)
    assert task is not None
    loss, honest = harness.compute(task)
    assert harness.upload(task, honest if data is None else data(honest)).status_code in (200, 204)
    assert harness.complete(task, loss).status_code == 200
    harness.deliver()
    return task


def sign_flipped(data: bytes) -> bytes:
    return (-np.frombuffer(data, "<f4")).astype("<f4").tobytes()


def test_agreeing_copies_are_folded_once_on_the_pinned_version(harness):
    ds = Dataset.generate(batches=3, batch_size=4)
    job = harness.create_job(ds, **REPLICATED)
    firsts = [step(harness, v) for v in ("a", "b", "c")]
    status = harness.status(job)
    assert status["version"] == 0 and status["awaiting_replica"] == 3
    checks = [step(harness, v) for v in ("b", "c", "a")]
    # each check computed its batch on the version its first copy used, even
    # though the model had moved on by the time it was leased
    assert [(t["batch"], t["base_version"]) for t in checks] == [(t["batch"], 0) for t in firsts]
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == 3 and status["discarded"] == {}
    assert status["counters"]["replicas_agreed"] == 3
    assert folds(harness, job) == [(0, 0), (0, 1), (0, 2)]


@pytest.mark.parametrize("second, reason", [("b", "disagreement"), ("a", "same_volunteer")])
def test_rejected_copies_are_both_discarded_and_the_batch_requeued(harness, second, reason):
    ds = Dataset.generate(batches=1, batch_size=4)
    job = harness.create_job(ds, **REPLICATED)
    step(harness, "a")
    step(harness, second, sign_flipped if reason == "disagreement" else None)
    status = harness.status(job)
    assert status["version"] == 0 and status["awaiting_replica"] == 0
    assert status["discarded"] == {reason: 2}
    step(harness, "c")  # the re-queued batch, from scratch
    step(harness, "d")  # and its check
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == 1 and status["discarded"] == {reason: 2}
    assert folds(harness, job) == [(0, 0)]


def test_crash_between_dropping_the_first_copy_and_requeuing_loses_nothing(harness, crashes):
    ds = Dataset.generate(batches=1, batch_size=4)
    job = harness.create_job(ds, **REPLICATED)
    step(harness, "a")
    crashes.before("discards", "discard", "after dropping the first copy")
    task = harness.lease("b")
    assert harness.upload(task, sign_flipped(harness.compute(task)[1])).status_code in (200, 204)
    assert harness.complete(task).status_code == 200
    messages = harness.result_messages(visibility=0)
    with pytest.raises(Crash):
        harness.invoke_fold([m["Body"] for m in messages])
    crashes.heal()
    # the message comes back; its result starts the batch over as a first copy
    harness.deliver()
    status = harness.status(job)
    assert status["awaiting_replica"] == 1 and status["version"] == 0
    step(harness, "c")  # checks b's copy: b was hostile, so they disagree
    assert harness.status(job)["discarded"] == {"disagreement": 2}
    step(harness, "d")
    step(harness, "e")
    status = harness.status(job)
    assert status["status"] == "finished" and folds(harness, job) == [(0, 0)]


@pytest.mark.parametrize("replication, field", [({"copies": 3}, "copies"), ({"tolerance": 0}, "tolerance"),
                                                 ({"copies": 2, "quorum": 2}, "quorum"), ("two", "replication")])
def test_bad_replication_settings_are_refused(harness, replication, field):
    from tests.harness import job_body
    reply = harness.admin("POST", "/jobs", job_body(Dataset.generate(batches=1, batch_size=4), replication=replication))
    assert reply.status_code == 400 and field in json.loads(reply.body)["Message"], reply.body
