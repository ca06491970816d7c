"""Races against moto's server: threads completing the same lease at once,
and folds of one job running at once over the same results (as a Lambda
that timed out while its messages came back to another would). moto's
in-process mock runs every call in the caller's thread; its server, like
AWS, serves requests concurrently, so only the conditional writes keep
these exactly-once."""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from chalicelib import services as services_module
from chalicelib.domain.errors import Conflict
from chalicelib.domain.records import Result
from chalicelib.domain.wire import Accepted, Completion, HeldLease
from tests.harness import Dataset

THREADS = 8


def _at_once(work, count: int) -> list:
    """`work(i)` in `count` threads released together; what each returned or raised."""
    start = threading.Barrier(count)

    def run(i):
        start.wait()
        try:
            return work(i)
        except Exception as err:  # noqa: BLE001 - the outcome under test
            return err

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_concurrent_completions_of_one_lease_send_one_result(server_harness):
    harness = server_harness
    job = harness.create_job(Dataset.generate(batches=4, batch_size=4))
    leases = []
    for name in ("a", "b", "c"):
        task = harness.lease(name)
        loss, data = harness.compute(task)
        assert harness.upload(task, data).status_code in (200, 204)
        leases.append((task, harness.identity(name)["volunteer_token"], loss))
    service = services_module.services().completions
    for task, volunteer_token, loss in leases:
        outcomes = _at_once(
            lambda i: service.complete(Completion(HeldLease(job, task["lease_token"], volunteer_token), loss)), THREADS
        )
        kinds = Counter("ok" if isinstance(o, Accepted) else type(o).__name__ for o in outcomes)
        assert kinds == {"ok": 1, Conflict.__name__: THREADS - 1}, outcomes
    bodies = [json.loads(m["Body"]) for m in harness.result_messages()]
    assert sorted(b["lease_id"] for b in bodies) == sorted(harness_lease_id(t) for t, _, _ in leases)


def harness_lease_id(task: dict) -> str:
    from tests.harness import token_payload

    return token_payload(task)["lease_id"]


def test_concurrent_folds_of_one_job_fold_each_batch_once(server_harness):
    """Every thread folds the same results (each its own order) at once:
    META's conditional write lets one fold take each batch; the others find
    it taken and re-read. The versions are consecutive, each complete, and
    every batch is in exactly one."""
    harness = server_harness
    batches, k = 8, 2
    job = harness.create_job(Dataset.generate(batches=batches, batch_size=4), gradients_per_update=k, staleness=100)
    for i in range(batches):
        assert harness.work(harness.lease(f"v{i % 4}")).status_code == 200
    messages = harness.result_messages()
    while len(messages) < batches:
        messages += harness.result_messages()
    results = [Result.from_json(json.loads(m["Body"])) for m in messages]
    fold = services_module.services().fold

    def fold_all(i):
        order = results[i % len(results) :] + results[: i % len(results)]
        return [redelivered(order[j : j + 4]) for j in range(0, len(order), 4)]

    def redelivered(batch):
        """A fold that keeps losing the race to META raises, and SQS delivers its messages again."""
        for _ in range(20):
            try:
                return fold.handle_batch(batch)
            except RuntimeError as err:
                assert "META kept changing" in str(err)
        raise AssertionError("a fold lost the race 20 times in a row")

    outcomes = _at_once(fold_all, THREADS)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == batches // k
    folded = harness.folds(job)
    assert Counter((e, b) for e, b, _ in folded) == {(0, b): 1 for b in range(batches)}
    assert Counter(v for _, _, v in folded) == {v: k for v in range(1, batches // k + 1)}
    assert [p["gradients"] for p in status["history"] if p["version"] > 0] == [k] * (batches // k)
