"""A job's life through the real handlers: lease, upload, complete, fold, epochs."""
import json

import numpy as np

from tests.harness import Dataset, softmax_loss_and_grad


def test_lease_upload_complete_fold_advances_version(harness):
    ds = Dataset.generate(batches=3, batch_size=8)
    job = harness.create_job(ds)
    task = harness.lease()
    assert task["job_id"] == job and task["base_version"] == 0
    assert task["upload_bytes"] == 4 * (4 * 3 + 3)
    before = harness.weights(job, 0)
    reply = harness.work(task)
    assert reply.status_code == 200, reply.body
    assert harness.deliver() == 1
    status = harness.status(job)
    assert status["version"] == 1 and status["batches_done"] == 1
    after = harness.weights(job, 1)
    # version 1 is exactly SGD applied to the batch's gradient at version 0
    _, grads = softmax_loss_and_grad(before, ds.x[task["batch"]], ds.y[task["batch"]])
    for w0, g, w1 in zip(before, grads, after):
        np.testing.assert_allclose(w1, w0 - np.float32(0.5) * g, atol=1e-6)
