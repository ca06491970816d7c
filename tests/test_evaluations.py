"""Held-out evaluations (tasks/evaluations.py): evaluation tasks leased like
training tasks, answered by several volunteers, accepted when enough agree,
published as the job's `held_out`; a forged answer neither stands nor blocks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chalicelib.domain.errors import Conflict
from chalicelib.domain.sections import Evaluation
from chalicelib.services import services
from chalicelib.store.evaluations import Claim
from chalicelib.tasks.evaluations import MAX_CLAIMS, agreement
from tests.harness import Dataset, softmax_loss_and_grad

TRAIN, HELD_OUT = 4, 2


def create(harness, **evaluation):
    ds = Dataset.generate(batches=TRAIN + HELD_OUT, batch_size=8, seed=3)
    files = [ds.batch_bytes(b) for b in range(TRAIN + HELD_OUT)]
    body = {"batches": HELD_OUT, "every": 2, "copies": 2, **evaluation}
    job = harness.create_job(Dataset(ds.x[:TRAIN], ds.y[:TRAIN]), files=files, evaluation=body)
    return job, ds


def held_out_truth(harness, job, ds, version):
    """The version's mean loss and accuracy over the held-out batches, in numpy."""
    weights = harness.weights(job, version)
    losses, right = [], 0
    for b in range(TRAIN, TRAIN + HELD_OUT):
        losses.append(softmax_loss_and_grad(weights, ds.x[b], ds.y[b])[0])
        right += int((np.argmax(ds.x[b] @ weights[0] + weights[1], axis=1) == ds.y[b]).sum())
    return float(np.mean(losses)), right / (HELD_OUT * ds.x.shape[1])


def answer(harness, task, loss, accuracy):
    return harness.call(
        "POST",
        "/tasks/complete",
        {"job_id": task["job_id"], "lease_token": task["lease_token"], "loss": loss, "accuracy": accuracy},
    )


def run(harness, job, ds, volunteers=("a", "b"), liar=None):
    """Every task to the end, round robin; evaluations answered truthfully (the liar: 0.0 and 1.0)."""
    evaluations = []
    for _ in range(200):
        progressed = False
        for volunteer in (*volunteers, *([liar] if liar else [])):
            task = harness.lease(volunteer)
            if task is None:
                continue
            progressed = True
            if task["kind"] == "evaluate":
                evaluations.append((volunteer, task))
                truth = held_out_truth(harness, job, ds, task["base_version"])
                reply = answer(harness, task, *((0.0, 1.0) if volunteer == liar else truth))
                assert reply.status_code == 200, reply.body
            else:
                assert harness.work(task).status_code == 200
            harness.deliver()
        if not progressed:
            return evaluations
    raise AssertionError("tasks never ran out")


def test_held_out_loss_is_published_once_two_volunteers_agree(harness):
    job, ds = create(harness)
    evaluations = run(harness, job, ds)
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == TRAIN
    # version 0 at start, then every 2 versions; the last one (4) is one of those
    assert [h["version"] for h in status["held_out"]] == [0, 2, 4]
    for h in status["held_out"]:
        loss, accuracy = held_out_truth(harness, job, ds, h["version"])
        assert h["loss"] == pytest.approx(loss, abs=1e-9) and h["accuracy"] == pytest.approx(accuracy)
        assert h["volunteers"] == 2
    # each evaluation task names the held-out batches and the version, and has nothing to upload
    for _, task in evaluations:
        assert "upload" not in task and task["task_id"] == f"evaluate-{task['base_version']}"
        assert [u.rsplit("-", 1)[-1] for u in task["batch_urls"]] == [
            f"{b:06d}.bin" for b in range(TRAIN, TRAIN + HELD_OUT)
        ]
    # two different volunteers answered each version
    for version in (0, 2, 4):
        assert sorted(v for v, t in evaluations if t["base_version"] == version) == ["a", "b"]
    # and the published document says it too
    published = json.loads(harness.fetch(status["model_url"].rsplit("/versions/", 1)[0] + "/status.json"))
    assert published["held_out"] == status["held_out"]


def test_a_forged_held_out_loss_neither_stands_nor_blocks(harness):
    job, ds = create(harness)
    run(harness, job, ds, volunteers=("a", "b"), liar="liar")
    status = harness.status(job)
    assert [h["version"] for h in status["held_out"]] == [0, 2, 4]
    for h in status["held_out"]:
        loss, accuracy = held_out_truth(harness, job, ds, h["version"])
        assert h["loss"] == pytest.approx(loss, abs=1e-9) and h["accuracy"] == pytest.approx(accuracy)


def test_a_volunteer_answers_a_version_once_and_its_copy_goes_to_another(harness):
    job, ds = create(harness, copies=2)
    first = harness.lease("a")
    assert first["kind"] == "evaluate" and first["base_version"] == 0
    assert answer(harness, first, *held_out_truth(harness, job, ds, 0)).status_code == 200
    # a's next lease skips the other copy of version 0 (it waits for someone else) and trains
    second = harness.lease("a")
    assert second is None or second["kind"] == "train"
    # a replayed answer is refused by the lease, a second claim by the records
    assert answer(harness, first, 0.0, 1.0).status_code == 409
    with pytest.raises(Conflict):
        services().evaluation_records.claim(job, 0, Claim(harness.volunteer_id("a"), 0.0, 1.0))
    assert harness.status(job)["held_out"] == []  # one answer is not enough


def test_claims_agree_within_the_tolerance_and_the_majority_settles():
    evaluation = Evaluation(batches=1, copies=2, tolerance=1e-3)
    honest = [Claim("a", 1.0, 0.5), Claim("b", 1.0005, 0.505)]
    assert agreement(3, honest, evaluation).volunteers == 2
    assert agreement(3, [honest[0], Claim("liar", 0.0, 1.0)], evaluation) is None
    settled = agreement(3, [honest[0], Claim("liar", 0.0, 1.0), honest[1]], evaluation)
    assert settled.loss == pytest.approx(1.00025) and settled.volunteers == 2
    assert agreement(3, [Claim("a", 1.0, 0.5), Claim("b", 1.0, 0.53)], evaluation) is None  # accuracy off
    assert agreement(3, [Claim("a", 1.0)], Evaluation(batches=1, copies=1)).loss == 1.0
    assert MAX_CLAIMS > 3


@pytest.mark.parametrize(
    "evaluation, message",
    [
        ({"batches": 0}, "evaluation.batches"),
        ({"batches": 2, "copies": 4}, "evaluation.copies"),
        ({"batches": 2, "every": 0}, "evaluation.every"),
        ({"batches": 2, "extra": 1}, "extra"),
        ({"batches": 2, "tolerance": 2}, "evaluation.tolerance"),
        ([], "evaluation"),
    ],
)
def test_bad_evaluation_settings_are_400(harness, evaluation, message):
    from tests.harness import job_body

    reply = harness.admin("POST", "/jobs", job_body(Dataset.generate(2, 4), evaluation=evaluation))
    assert reply.status_code == 400 and message in json.loads(reply.body)["Message"]


def test_missing_held_out_files_stop_the_start(harness):
    ds = Dataset.generate(batches=TRAIN, batch_size=8)
    job = harness.create_job(ds, start=False, evaluation={"batches": HELD_OUT})
    reply = harness.admin("POST", f"/jobs/{job}/start")
    assert reply.status_code == 400 and "2 of 6 batch files" in json.loads(reply.body)["Message"]


def test_accuracy_is_an_evaluation_answer_in_range(harness):
    job, ds = create(harness)
    evaluation = harness.lease("a")
    assert answer(harness, evaluation, 1.0, 1.5).status_code == 400
    assert answer(harness, evaluation, 1.0, float("nan")).status_code == 400
    train = next(t for t in iter(lambda: harness.lease("b"), None) if t["kind"] == "train")
    loss, data = harness.compute(train)
    harness.upload(train, data)
    reply = answer(harness, train, loss, 0.5)
    assert reply.status_code == 400 and "evaluation" in json.loads(reply.body)["Message"]


def test_an_accepted_evaluation_is_not_changed_by_later_answers(harness):
    job, ds = create(harness, copies=2)
    spec = services().jobs.spec(job)
    evaluations = services().evaluations
    assert evaluations.settle(job, spec, Claim("a", 1.0, 0.5), 7) == "waiting"
    assert evaluations.settle(job, spec, Claim("b", 1.0002, 0.5), 7) == "accepted"
    assert evaluations.settle(job, spec, Claim("c", 1.0009, 0.5), 7) == "accepted"  # agrees, but too late
    [held] = services().evaluation_records.accepted(job)
    assert (held.version, held.loss, held.volunteers) == (7, pytest.approx(1.0001), 2)


def test_disagreeing_answers_ask_for_more_copies_only_up_to_the_cap(harness):
    """A crowd that never agrees does not re-queue a version's evaluation without end."""
    job, ds = create(harness, copies=2)
    spec = services().jobs.spec(job)
    outcomes = [
        services().evaluations.settle(job, spec, Claim(f"v{i}", float(i + 1)), 9) for i in range(MAX_CLAIMS + 2)
    ]
    assert outcomes == ["waiting"] + ["disputed"] * (MAX_CLAIMS - 2) + ["unsettled"] * 3


def test_a_released_evaluation_is_leased_again_as_an_evaluation(harness):
    job, ds = create(harness, copies=1)
    task = harness.lease("a")
    assert task["kind"] == "evaluate"
    reply = harness.call(
        "POST", "/tasks/release", {"job_id": job, "lease_token": task["lease_token"], "reason": "compute_error"}
    )
    assert reply.status_code == 200
    leased = [harness.lease(f"b{i}") for i in range(TRAIN + 1)]
    again = [t for t in leased if t and t["kind"] == "evaluate"]
    assert [t["base_version"] for t in again] == [0]
    # heartbeats of an evaluation lease renew it, with no upload form
    beat = harness.call("POST", "/tasks/heartbeat", {"job_id": job, "lease_token": again[0]["lease_token"]})
    assert beat.status_code == 200 and "upload" not in json.loads(beat.body)
