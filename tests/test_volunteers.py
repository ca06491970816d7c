"""Simulated volunteers train a real model through the real handlers while
vanishing, completing twice and having fold messages redelivered; every
(epoch, batch) is folded exactly once and the loss reaches its threshold."""

import random
import time
from collections import Counter

import pytest

from tests.harness import Dataset, softmax_loss_and_grad

LOSS_THRESHOLD = 0.2  # mean cross-entropy on the whole dataset; chance level is ln 3 = 1.10


def full_loss(weights, ds):
    x, y = ds.x.reshape(-1, ds.x.shape[2]), ds.y.reshape(-1)
    return softmax_loss_and_grad(weights, x, y)[0]


@pytest.mark.alone  # 10-second leases, each held while its simulated volunteer waits its turn
def test_flaky_volunteers_train_to_threshold_folding_each_batch_once(harness):
    rng = random.Random(2024)
    ds = Dataset.generate(batches=12, batch_size=16, seed=5)
    epochs, k = 4, 2
    job = harness.create_job(
        ds,
        epochs=epochs,
        gradients_per_update=k,
        staleness=3,
        lease_seconds=10,
        optimizer={"name": "momentum", "learning_rate": 0.3, "momentum": 0.5},
    )
    start_loss = full_loss(harness.weights(job, 0), ds)
    held: dict[str, dict | None] = {f"volunteer-{i}": None for i in range(5)}
    counts: Counter = Counter()
    deadline = time.monotonic() + 150

    while harness.status(job)["status"] != "finished":
        assert time.monotonic() < deadline, f"training did not finish: {harness.status(job)} {counts}"
        name = rng.choice(sorted(held))
        task = held[name]
        if task is None:
            task = harness.lease(name)
            if task is None:  # everything is out on lease: wait for vanished leases to end
                counts["waits"] += 1
                time.sleep(0.5)
            held[name] = task
        elif rng.random() < 0.15:
            counts["vanished"] += 1
            held[name] = None
        else:
            reply = harness.work(task)
            if reply.status_code == 410:  # held past its 10 s lease on a busy machine: gone, as if it vanished
                counts["expired"] += 1
            else:
                assert reply.status_code == 200, reply.body
                counts["completed"] += 1
                if rng.random() < 0.15:
                    assert harness.complete(task).status_code == 409
                    counts["duplicate_completions"] += 1
            held[name] = None
        messages = harness.result_messages()
        if messages:
            bodies = [m["Body"] for m in messages]
            harness.invoke_fold(bodies)
            if rng.random() < 0.3:
                harness.invoke_fold(bodies)  # redelivered
                counts["redelivered"] += len(bodies)
            for m in messages:
                harness.sqs.delete_message(QueueUrl=harness.results_url, ReceiptHandle=m["ReceiptHandle"])

    status = harness.status(job)
    folds = harness.folds(job)
    pairs = [(e, b) for e, b, _ in folds]
    assert len(pairs) == len(set(pairs)) == epochs * 12
    assert sorted(pairs) == [(e, b) for e in range(epochs) for b in range(12)]
    assert status["version"] == epochs * 6 and status["batches_done"] == epochs * 12
    assert counts["vanished"] > 0 and counts["duplicate_completions"] > 0 and counts["redelivered"] > 0
    # every completed task was folded or discarded (stale) and re-queued
    assert counts["completed"] == status["batches_done"] + sum(status["discarded"].values())
    final_loss = full_loss(harness.weights(job, status["version"]), ds)
    print(f"\nloss {start_loss:.3f} -> {final_loss:.3f}; {dict(counts)}; discarded {status['discarded']}")
    assert final_loss < LOSS_THRESHOLD < start_loss
