"""Local steps: a task covers H consecutive batches; the volunteer runs H
steps of its own optimizer from the version it leased and uploads the
pseudo-gradient θ_leased − θ_after; the fold applies the outer optimizer."""
import json

import numpy as np
import pytest

from chalicelib.model.codecs import get_codec
from tests.harness import Dataset, job_body, softmax_loss_and_grad


def local_steps(harness, task, learning_rate: float):
    """What a volunteer computes: H plain SGD steps, then θ_leased − θ_after."""
    start = [w.copy() for w in harness.load_model(task["model_url"])]
    weights, losses = [w.copy() for w in start], []
    bsz, feats = task["spec"]["dataset"]["x"]["shape"]
    for url in task["batch_urls"]:
        raw = harness.fetch(url)
        x = np.frombuffer(raw, "<f4", count=bsz * feats).reshape(bsz, feats)
        y = np.frombuffer(raw, "<i4", offset=4 * bsz * feats)
        loss, grads = softmax_loss_and_grad(weights, x, y)
        weights = [(w - np.float32(learning_rate) * g).astype(np.float32) for w, g in zip(weights, grads)]
        losses.append(loss)
    delta = [a - b for a, b in zip(start, weights)]
    return float(np.mean(losses)), get_codec(task["spec"]["codec"]).encode(delta), weights


def test_a_task_of_local_steps_moves_the_model_to_where_the_volunteer_got(harness):
    ds = Dataset.generate(batches=7, batch_size=4)
    job = harness.create_job(ds, local_steps={"steps": 3, "optimizer": {"name": "sgd", "learning_rate": 0.5}},
                             optimizer={"name": "sgd", "learning_rate": 1.0}, staleness=0)
    sizes, samples = [], []
    while (task := harness.lease()) is not None:
        assert task["spec"]["local_steps"] == {"steps": 3, "optimizer": {"name": "sgd", "learning_rate": 0.5}}
        first = task["batch"] * 3
        assert task["batch_urls"][0] == task["batch_url"] and task["batch_urls"][0].endswith(f"{first:06d}.bin")
        sizes.append(len(task["batch_urls"]))
        loss, data, after = local_steps(harness, task, 0.5)
        assert harness.upload(task, data).status_code in (200, 204)
        assert harness.complete(task, loss).status_code == 200
        harness.deliver()
        status = harness.status(job)
        # outer SGD with learning rate 1 and K = 1: the new version is the volunteer's model
        for ours, theirs in zip(harness.weights(job, status["version"]), after):
            np.testing.assert_allclose(ours, theirs, atol=1e-6)
        samples.append(status["history"][-1]["samples"])
    assert sorted(sizes) == [1, 3, 3] and sorted(samples) == [4, 12, 12]  # 7 batches: tasks of 3, 3 and 1
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == 3 and status["spec"]["tasks_per_epoch"] == 3


@pytest.mark.parametrize("local, field", [({"steps": 0}, "local_steps.steps"), ({"steps": 2, "pace": 1}, "pace"),
                                          ({"steps": 2, "optimizer": {"name": "lamb"}}, "lamb"), ([], "local_steps")])
def test_bad_local_steps_are_refused(harness, local, field):
    reply = harness.admin("POST", "/jobs", job_body(Dataset.generate(batches=2, batch_size=4), local_steps=local))
    assert reply.status_code == 400 and field in json.loads(reply.body)["Message"], reply.body


def test_local_steps_take_whole_batches(harness):
    body = job_body(Dataset.generate(batches=2, batch_size=4), local_steps={"steps": 2})
    body["dataset"]["micro_batch"] = 2
    reply = harness.admin("POST", "/jobs", body)
    assert reply.status_code == 400 and b"micro_batch" in reply.body
