"""A job's life through the real handlers: lease, upload, complete, fold, epochs,
and every way a task can go wrong on the way."""

import json
import time
from dataclasses import replace

import numpy as np
import pytest

from chalicelib.domain.records import PartialSum, Result, fold_message
from chalicelib.fold.outcomes import FoldOutcome
from chalicelib.jobs import admin as admin_module
from chalicelib.services import services
from chalicelib.store.leases import lease_key
from tests.conftest import Crash
from tests.harness import TABLE, Dataset, softmax_loss_and_grad, token_payload


def queued(harness, job: str) -> int:
    """The job's task messages waiting in its queue (moto counts exactly)."""
    return harness.waiting(harness.job_queue(job))


def drain(harness, job=None):
    """Work every task there is, folding as results arrive; returns tasks done."""
    done = 0
    while (task := harness.lease()) is not None:
        assert harness.work(task).status_code == 200
        harness.deliver()
        done += 1
    return done


def test_lease_upload_complete_fold_advances_version(harness):
    ds = Dataset.generate(batches=3, batch_size=8)
    job = harness.create_job(ds)
    task = harness.lease()
    assert task["job_id"] == job and task["base_version"] == 0
    assert task["upload_bytes"] == 4 * (4 * 3 + 3)
    # the SQS receipt handle stays in the lease's record: not in the reply, not inside the token
    key = lease_key(job, token_payload(task)["lease_id"])
    record = harness.session.client("dynamodb").get_item(
        TableName=TABLE, Key={"pk": {"S": key["pk"]}, "sk": {"S": key["sk"]}}
    )["Item"]
    receipt = record["receipt"]["S"]
    assert len(receipt) > 20 and receipt not in json.dumps(task) and receipt not in json.dumps(token_payload(task))
    before = harness.weights(job, 0)
    reply = harness.work(task)
    assert reply.status_code == 200, reply.body
    assert harness.deliver() == 1
    status = harness.status(job)
    assert status["version"] == 1 and status["batches_done"] == 1
    assert [h["version"] for h in status["history"]] == [1]
    after = harness.weights(job, 1)
    # version 1 is exactly SGD applied to the batch's gradient at version 0
    _, grads = softmax_loss_and_grad(before, ds.x[task["batch"]], ds.y[task["batch"]])
    for w0, g, w1 in zip(before, grads, after):
        np.testing.assert_allclose(w1, w0 - np.float32(0.5) * g, atol=1e-6)


def test_epochs_complete_and_next_epoch_is_queued_shuffled(harness):
    ds = Dataset.generate(batches=5, batch_size=4)
    job = harness.create_job(ds, epochs=2, gradients_per_update=2)
    first_epoch = []
    for _ in range(5):
        task = harness.lease()
        assert task["epoch"] == 0
        first_epoch.append(task["batch"])
        assert harness.work(task).status_code == 200
        harness.deliver()
    assert sorted(first_epoch) == list(range(5))
    status = harness.status(job)
    # 5 batches with K=2: updates of 2, 2 and the epoch's last 1
    assert status["version"] == 3 and status["epoch"] == 1 and status["status"] == "running"
    assert drain(harness) == 5
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == 6 and status["batches_done"] == 10
    folds = harness.folds(job)
    assert sorted((e, b) for e, b, _ in folds) == [(e, b) for e in range(2) for b in range(5)]
    assert harness.lease() is None


def test_epoch_order_is_a_seeded_permutation():
    from chalicelib.domain.schema import parse_job
    from chalicelib.tasks.epochs import batch_order
    from tests.harness import job_body

    spec = parse_job(job_body(Dataset.generate(batches=20, batch_size=2), seed=3), 10**6, 1000)
    orders = [batch_order(spec, e) for e in range(3)]
    assert all(sorted(o) == list(range(20)) for o in orders)
    assert orders[0] != orders[1] and orders[0] == batch_order(spec, 0)


def test_stale_result_is_discarded_and_its_batch_requeued(harness):
    ds = Dataset.generate(batches=3, batch_size=4)
    job = harness.create_job(ds, staleness=0)
    first, second = harness.lease(), harness.lease()
    assert first["base_version"] == second["base_version"] == 0
    assert harness.work(first).status_code == 200
    harness.deliver()
    assert harness.work(second).status_code == 200  # accepted; the fold judges staleness
    harness.deliver()
    status = harness.status(job)
    assert status["version"] == 1 and status["discarded"] == {"stale": 1}
    # the stale batch came back as a new task, on a newer version
    batches = []
    while (task := harness.lease()) is not None:
        batches.append((task["batch"], task["base_version"]))
        assert harness.work(task).status_code == 200
        harness.deliver()
    assert sorted(b for b, _ in batches) == sorted({0, 1, 2} - {first["batch"]})
    assert all(version >= 1 for _, version in batches)
    status = harness.status(job)
    assert status["status"] == "finished" and status["batches_done"] == 3 and status["version"] == 3


@pytest.mark.parametrize("swap", ["nan", "sign_flip"])
def test_gradient_overwritten_after_completion_is_requeued_not_folded(harness, swap):
    """The upload form stays valid until the lease ends, so a volunteer can replace
    an accepted gradient while it waits in pending, with garbage or with another
    well-formed gradient: the fold folds only the bytes it accepted, so it drops
    the swapped one and re-queues its batch (and does not fail on every retry)."""
    ds = Dataset.generate(batches=3, batch_size=4)
    job = harness.create_job(ds, gradients_per_update=2)
    first = harness.lease()
    assert harness.work(first).status_code == 200
    harness.deliver()
    assert harness.status(job)["pending_gradients"] == 1
    honest = np.frombuffer(harness.compute(first)[1], "<f4")
    poison = (np.full_like(honest, np.nan) if swap == "nan" else -honest).astype("<f4").tobytes()
    assert harness.upload(first, poison).status_code in (200, 204)
    second = harness.lease()
    assert harness.work(second).status_code == 200
    harness.deliver()
    status = harness.status(job)
    assert status["version"] == 0 and status["discarded"] == {"invalid": 1}
    assert status["pending_gradients"] == 1
    assert drain(harness) == 2  # the third batch and the re-queued first one
    status = harness.status(job)
    assert status["status"] == "finished" and status["batches_done"] == 3
    assert sorted(b for _, b, _ in harness.folds(job)) == [0, 1, 2]


def test_a_gradient_swapped_between_complete_and_the_fold_is_never_folded(harness):
    """complete pins the result to the bytes it checked: a well-formed sign
    flip uploaded through the still-valid form before the fold first reads it
    is discarded and its batch re-queued; the model gets the honest gradient."""
    ds = Dataset.generate(batches=1, batch_size=4)
    job = harness.create_job(ds, optimizer={"name": "sgd", "learning_rate": 0.5})
    w0 = harness.weights(job, 0)
    task = harness.lease("swapper")
    assert harness.work(task).status_code == 200
    honest = np.frombuffer(harness.compute(task)[1], "<f4")
    assert harness.upload(task, (-honest).astype("<f4").tobytes()).status_code in (200, 204)
    harness.deliver()
    status = harness.status(job)
    assert status["version"] == 0 and status["discarded"] == {"invalid": 1}
    again = harness.lease("honest")
    assert again["batch"] == task["batch"]
    assert harness.work(again).status_code == 200
    harness.deliver()
    grads = softmax_loss_and_grad(w0, ds.x[0], ds.y[0])[1]
    for ours, w, g in zip(harness.weights(job, 1), w0, grads):
        np.testing.assert_allclose(ours, w - 0.5 * g, atol=1e-6)


def test_duplicate_completion_is_refused(harness):
    ds = Dataset.generate(batches=2, batch_size=4)
    job = harness.create_job(ds)
    task = harness.lease()
    assert harness.work(task).status_code == 200
    again = harness.complete(task)
    assert again.status_code == 409 and b"already completed" in again.body
    assert harness.deliver() == 1
    assert harness.status(job)["version"] == 1


def test_redelivered_fold_message_folds_once(harness):
    ds = Dataset.generate(batches=2, batch_size=4)
    job = harness.create_job(ds)
    task = harness.lease()
    assert harness.work(task).status_code == 200
    [message] = harness.result_messages()
    harness.invoke_fold([message["Body"]])
    harness.invoke_fold([message["Body"]])  # SQS delivers at least once
    harness.invoke_fold([message["Body"], message["Body"]])
    status = harness.status(job)
    assert status["version"] == 1 and status["batches_done"] == 1
    assert status["counters"]["duplicates"] == 3


def test_fold_outcomes_say_what_happened_to_each_result(harness):
    ds = Dataset.generate(batches=3, batch_size=4)
    job = harness.create_job(ds, gradients_per_update=2, staleness=0)
    tasks = [harness.lease(f"v{i}") for i in range(3)]
    for task in tasks:
        assert harness.work(task).status_code == 200
    results = [fold_message(m["Body"]) for m in harness.result_messages()]
    fold = services().fold
    assert [fold.handle(r) for r in results[:2]] == [FoldOutcome.PENDING, FoldOutcome.FOLDED]
    assert fold.handle(results[0]) is FoldOutcome.DUPLICATE
    assert fold.handle(results[2]) is FoldOutcome.STALE  # computed on version 0, now at 1 with S = 0
    assert harness.status(job)["discarded"] == {"stale": 1}


@pytest.mark.parametrize("crash_at", ["before_commit", "after_weights", "after_commit"])
def test_fold_crash_then_retry_applies_gradient_exactly_once(harness, crashes, crash_at):
    ds = Dataset.generate(batches=2, batch_size=4)
    job = harness.create_job(ds, optimizer={"name": "adam", "learning_rate": 0.1})
    task = harness.lease()
    w0 = harness.weights(job, 0)
    assert harness.work(task).status_code == 200
    [message] = harness.result_messages()

    when, part, method = {
        "before_commit": ("before", "committer", "commit"),  # S3 written, DynamoDB not
        "after_weights": ("after", "versions", "write"),
        "after_commit": ("after", "committer", "commit"),
    }[crash_at]
    getattr(crashes, when)(part, method, crash_at)
    with pytest.raises(Crash):
        harness.invoke_fold([message["Body"]])
    expected_version = 1 if crash_at == "after_commit" else 0
    assert harness.status(job)["version"] == expected_version
    crashes.heal()
    harness.invoke_fold([message["Body"]])  # the queue redelivers
    harness.invoke_fold([message["Body"]])
    status = harness.status(job)
    assert status["version"] == 1 and status["batches_done"] == 1
    # and version 1 is one Adam step from version 0, not two
    _, grads = softmax_loss_and_grad(w0, ds.x[task["batch"]], ds.y[task["batch"]])
    first_step = [w - np.float32(0.1) * g / (np.abs(g) + np.float32(1e-7)) for w, g in zip(w0, grads)]
    for expected, actual in zip(first_step, harness.weights(job, 1)):
        np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_fold_log_cut_short_by_a_crash_is_served_from_meta_and_rewritten_by_the_next_fold(harness, crashes):
    ds = Dataset.generate(batches=2, batch_size=4)
    job = harness.create_job(ds)
    table = harness.session.resource("dynamodb").Table("crowdtrain-test")
    first = harness.lease()
    assert harness.work(first).status_code == 200
    [message] = harness.result_messages()

    crashes.before("fold_log", "write", "after advancing META, before the fold log")
    with pytest.raises(Crash):
        harness.invoke_fold([message["Body"]])
    crashes.heal()
    logged = lambda: sorted(  # noqa: E731
        i["sk"]
        for i in table.query(  # noqa: E731
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"JOB#{job}"}
        )["Items"]
        if i["sk"].startswith("VER#")
    )
    assert logged() == []  # nothing of version 1's log reached the table...
    status = harness.status(job)  # ...yet readers see it, from META
    assert status["version"] == 1 and [h["version"] for h in status["history"]] == [1]
    assert harness.folds(job) == [(0, first["batch"], 1)]
    harness.invoke_fold([message["Body"]])  # the redelivery is a duplicate
    harness.sqs.delete_message(QueueUrl=harness.results_url, ReceiptHandle=message["ReceiptHandle"])
    assert harness.status(job)["version"] == 1 and harness.status(job)["counters"]["duplicates"] == 1
    second = harness.lease()
    assert harness.work(second).status_code == 200
    harness.deliver()
    # the next fold rewrote version 1's log before committing version 2, then wrote its own
    assert logged() == ["VER#0000000001", "VER#0000000002"] and harness.status(job)["status"] == "finished"
    assert harness.folds(job) == sorted([(0, first["batch"], 1), (0, second["batch"], 2)])
    history = services().fold_log.history(services().meta.get(job))
    assert [(h["version"], h["gradients"]) for h in history] == [(1, 1), (2, 1)]


def test_expired_lease_is_reassigned_and_its_token_refused(harness):
    ds = Dataset.generate(batches=1, batch_size=4)
    job = harness.create_job(ds, lease_seconds=10)
    gone = harness.lease("vanishes")
    assert harness.lease() is None  # the only task is out on lease
    time.sleep(10.5)
    again = harness.lease("second")
    assert again is not None and again["batch"] == gone["batch"] and again["lease_token"] != gone["lease_token"]
    loss, data = harness.compute(gone)
    harness.upload(gone, data)
    late = harness.complete(gone, loss)
    assert late.status_code == 410 and b"expired" in late.body
    assert harness.work(again).status_code == 200
    harness.deliver()
    assert harness.status(job)["status"] == "finished"


def test_heartbeat_extends_the_lease(harness):
    ds = Dataset.generate(batches=1, batch_size=4)
    job = harness.create_job(ds, lease_seconds=10)
    task = harness.lease()
    reply = harness.call("POST", "/tasks/heartbeat", {"job_id": job, "lease_token": task["lease_token"]})
    assert reply.status_code == 200
    renewed = json.loads(reply.body)
    assert renewed["lease_expires"] >= task["lease_expires"]
    status = harness.status(job)
    assert status["tasks"] == {"waiting": 0, "in_flight": 1} and status["active_volunteers"] == 0  # none delivered
    task["lease_token"] = renewed["lease_token"]
    assert harness.work(task).status_code == 200
    harness.deliver()
    assert harness.status(job)["active_volunteers"] == 1
    # a completed lease can no longer be extended
    reply = harness.call("POST", "/tasks/heartbeat", {"job_id": job, "lease_token": renewed["lease_token"]})
    assert reply.status_code == 409


def test_forged_and_other_job_tokens_are_rejected(harness):
    ds = Dataset.generate(batches=2, batch_size=4)
    job_a = harness.create_job(ds)
    job_b = harness.create_job(ds)
    task = harness.lease()
    loss, data = harness.compute(task)
    assert harness.upload(task, data).status_code in (200, 204)
    other = job_b if task["job_id"] == job_a else job_a

    version, key_id, body, mac = task["lease_token"].split(".")
    payload = json.loads(__import__("base64").urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["base_version"] = 99
    forged_body = __import__("base64").urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    cases = [
        ({"job_id": task["job_id"], "lease_token": f"{version}.{key_id}.{forged_body}.{mac}"}, 401, b"signature"),
        ({"job_id": task["job_id"], "lease_token": "v2.k.not-base64!.x"}, 401, b"malformed"),
        ({"job_id": task["job_id"], "lease_token": "garbage"}, 401, b"malformed"),
        ({"job_id": other, "lease_token": task["lease_token"]}, 403, b"another job"),
        ({"job_id": task["job_id"], "lease_token": 42}, 400, b"lease_token"),
    ]
    for body, status, message in cases:
        reply = harness.call("POST", "/tasks/complete", {**body, "loss": loss})
        assert reply.status_code == status, (body, reply.body)
        assert message in reply.body
    assert harness.complete(task, loss).status_code == 200


def test_wrong_size_and_nan_gradients_are_rejected(harness):
    ds = Dataset.generate(batches=1, batch_size=4)
    job = harness.create_job(ds)
    task = harness.lease()
    loss, data = harness.compute(task)

    missing = harness.complete(task, loss)
    assert missing.status_code == 400 and b"no gradient was uploaded" in missing.body

    harness.upload(task, data[:-4])  # S3 refuses it in AWS (exact content-length-range)
    short = harness.complete(task, loss)
    assert short.status_code == 400 and b"exactly" in short.body

    poisoned = np.frombuffer(data, "<f4").copy()
    poisoned[3] = np.nan
    harness.upload(task, poisoned.tobytes())
    nan = harness.complete(task, loss)
    assert nan.status_code == 400 and b"NaN" in nan.body

    huge = (np.frombuffer(data, "<f4") * 1e6).astype("<f4")
    harness.upload(task, huge.tobytes())
    big = harness.complete(task, loss)
    assert big.status_code == 400 and b"norm" in big.body

    status = harness.status(job)
    assert status["version"] == 0 and status["counters"]["rejected"] == 4 - 1  # 'missing' is not counted
    # the lease is still good: the correct gradient is accepted
    harness.upload(task, data)
    assert harness.complete(task, loss).status_code == 200
    harness.deliver()
    assert harness.status(job)["version"] == 1


def test_empty_queue_answers_204_with_retry_after(harness):
    reply = harness.lease_reply("idle")
    assert reply.status_code == 204 and reply.headers["Retry-After"] == "5"
    assert reply.headers["Access-Control-Expose-Headers"] == "Retry-After"  # a page on another origin reads it


def test_paused_job_hands_out_nothing_until_resumed(harness):
    ds = Dataset.generate(batches=2, batch_size=4)
    job = harness.create_job(ds)
    assert json.loads(harness.admin("POST", f"/jobs/{job}/pause").body)["status"] == "paused"
    assert harness.lease() is None
    assert harness.admin("POST", f"/jobs/{job}/pause").status_code == 409
    # its queue kept its tasks, never asked while paused (none cycles toward the dead-letter queue) ...
    assert queued(harness, job) == 2
    assert json.loads(harness.admin("POST", f"/jobs/{job}/resume").body)["status"] == "running"
    # ... and resuming queued nothing twice
    assert queued(harness, job) == 2
    assert drain(harness) == 2 and harness.status(job)["status"] == "finished"


def test_jobs_run_side_by_side_without_interfering(harness):
    ds_a, ds_b = Dataset.generate(batches=3, batch_size=4, seed=1), Dataset.generate(batches=4, batch_size=4, seed=2)
    job_a = harness.create_job(ds_a, epochs=2)
    job_b = harness.create_job(ds_b, gradients_per_update=2)
    assert drain(harness) == 3 * 2 + 4
    a, b = harness.status(job_a), harness.status(job_b)
    assert (a["status"], a["version"], a["batches_done"]) == ("finished", 6, 6)
    assert (b["status"], b["version"], b["batches_done"]) == ("finished", 2, 4)


def test_deleted_job_disappears_with_its_tasks(harness):
    ds = Dataset.generate(batches=3, batch_size=4)
    job = harness.create_job(ds)
    reply = harness.admin("DELETE", f"/jobs/{job}")
    assert reply.status_code == 200 and json.loads(reply.body)["files"] >= 4
    assert harness.admin("GET", f"/jobs/{job}").status_code == 404
    assert harness.lease() is None  # its queue went with it
    assert harness.job_queue(job) not in harness.sqs.list_queues().get("QueueUrls", [])
    assert json.loads(harness.admin("GET", "/jobs").body)["jobs"] == []


def test_a_large_job_is_deleted_in_bounded_steps_with_its_progress_shown(harness, monkeypatch):
    """DELETE /jobs/{id} deletes a page a step (here 3 records, one page a
    call) and answers 202 with its progress until the job is gone; meanwhile
    the job shows as deleting, its tasks are dropped and its results are not
    folded, and the lease shards go with it."""
    monkeypatch.setattr(admin_module, "DELETE_SECONDS", 0.0)
    monkeypatch.setattr(admin_module, "DELETE_PAGE", 3)
    job = harness.create_job(Dataset.generate(batches=6, batch_size=4))
    held = [harness.lease(f"v{i}") for i in range(4)]
    assert harness.work(held[0]).status_code == 200
    harness.deliver()  # a version, a fold log entry, credit
    steps, records, files = [], 0, 0
    while True:
        reply = harness.admin("DELETE", f"/jobs/{job}")
        step = json.loads(reply.body)
        steps.append(reply.status_code)
        records, files = records + step["records"], files + step["files"]
        if step["deleted"]:
            break
        assert step["status"] == "deleting" and harness.status(job)["status"] == "deleting"
        if len(steps) == 1:  # while it goes: a result of the job is not folded, no task of it is leased
            assert harness.work(held[1]).status_code == 200 and harness.deliver() == 1
            assert harness.status(job)["version"] == 1 and harness.lease() is None
    assert steps[-1] == 200 and set(steps[:-1]) == {202} and len(steps) > 3
    assert harness.admin("GET", f"/jobs/{job}").status_code == 404
    assert not [i for i in harness.session.resource("dynamodb").Table(TABLE).scan()["Items"] if job in i["pk"]]
    assert harness.s3.list_objects_v2(Bucket="crowdtrain-test-data", Prefix=f"jobs/{job}/").get("KeyCount") == 0
    assert records > 10 and files > 6


def test_start_checks_every_upload(harness):
    ds = Dataset.generate(batches=3, batch_size=4)
    job = harness.create_job(ds, start=False)
    harness.s3.delete_object(Bucket="crowdtrain-test-data", Key=f"jobs/{job}/data/batch-000002.bin")
    reply = harness.admin("POST", f"/jobs/{job}/start")
    assert reply.status_code == 400 and b"first: batch 2" in reply.body
    assert harness.status(job)["status"] == "uploading"


def test_a_volunteer_holds_a_bounded_number_of_leases(harness, monkeypatch):
    monkeypatch.setenv("MAX_LEASES_PER_VOLUNTEER", "2")
    ds = Dataset.generate(batches=4, batch_size=4)
    job = harness.create_job(ds)
    first, _ = harness.lease("greedy"), harness.lease("greedy")
    refused = harness.lease_reply("greedy")
    assert refused.status_code == 429 and b"already holds 2 leases" in refused.body
    assert queued(harness, job) == 2  # a refused lease took no task out of the queue
    assert harness.lease("someone-else") is not None
    assert harness.work(first).status_code == 200  # completing frees a slot
    assert harness.lease("greedy") is not None
    assert harness.status(job)["tasks"] == {"waiting": 0, "in_flight": 3}


def test_services_override_puts_a_part_in_place_before_anything_uses_it(harness):
    from chalicelib.services import override
    from chalicelib.store.secrets import SecretsManagerKeys
    from chalicelib.tasks.tokens import TokenSigner

    keys = SecretsManagerKeys(harness.secretsmanager, "crowdtrain-test-lease")  # the test stack's lease secret
    # a signer whose clock is an hour ahead: every lease has ended by its reckoning
    override(signer=TokenSigner(keys, clock=lambda: time.time() + 3600))
    harness.create_job(Dataset.generate(batches=1, batch_size=4))
    task = harness.lease()
    loss, data = harness.compute(task)
    assert harness.upload(task, data).status_code in (200, 204)
    reply = harness.complete(task, loss)
    assert reply.status_code == 410 and b"expired" in reply.body
    with pytest.raises(RuntimeError, match="answers"):  # too late: the lease answers hold the signer
        override(signer=TokenSigner(keys))


def test_a_fold_message_must_name_exactly_a_records_fields():
    good = Result("j-1", 0, 3, "l", 0, "grads/j-1/k.bin", 1.0, 8, "v")
    summed = PartialSum("j-1", 0, 1, "ab" * 32, (good, replace(good, batch=4, lease_id="m")))
    assert fold_message(good.message()) == good
    assert fold_message(summed.message()) == summed
    for bad in (
        '{"job_id": "j-1"}',
        json.dumps({**json.loads(good.message()), "extra": 1}),
        "[]",
        json.dumps({**json.loads(summed.message()), "extra": 1}),
        json.dumps({**json.loads(summed.message()), "results": [{"job_id": "j-1"}]}),
        json.dumps({**json.loads(summed.message()), "level": 3}),
    ):
        with pytest.raises(TypeError):
            fold_message(bad)


def test_meta_is_written_only_from_the_revision_that_was_read(harness):
    """Two folds that read the same META: the second to write gets StaleState
    (and reads again) instead of overwriting the first's version."""
    from chalicelib.store.meta import StaleState

    job = harness.create_job(Dataset.generate(batches=2, batch_size=4))
    store = services().meta
    seen = store.get(job)
    store.put(seen.rev, replace(seen, rev=seen.rev + 1, version=seen.version + 1))  # the first fold
    with pytest.raises(StaleState):
        store.put(seen.rev, replace(seen, rev=seen.rev + 1, version=seen.version + 1))  # the second, from `seen`
    assert store.get(job).rev == seen.rev + 1


@pytest.mark.parametrize("action", ["pause", "resume", "delete"])
def test_an_admin_action_racing_the_fold_retries_and_never_answers_5xx(harness, monkeypatch, action):
    """The fold moving META between an admin action's read and its write (StaleState): the action
    reads again and goes through; if META keeps moving, a 409 that says so, never a 500."""
    from chalicelib.store.meta import MetaStore, StaleState

    job = harness.create_job(Dataset.generate(batches=4, batch_size=4))
    if action == "resume":
        assert harness.admin("POST", f"/jobs/{job}/pause").status_code == 200
    method, path = ("DELETE", f"/jobs/{job}") if action == "delete" else ("POST", f"/jobs/{job}/{action}")
    real, moved = MetaStore.put, {"left": 2}

    def racing(store, rev, meta):
        if moved["left"] > 0:  # a fold wrote META first
            moved["left"] -= 1
            raise StaleState(meta.job_id)
        return real(store, rev, meta)

    monkeypatch.setattr(MetaStore, "put", racing)
    reply = harness.admin(method, path)
    assert reply.status_code in (200, 202) and moved["left"] == 0, reply.body
    if action != "delete":
        assert json.loads(reply.body)["status"] == {"pause": "paused", "resume": "running"}[action]
        moved["left"] = 10**6  # a fold that never stops moving it
        reply = harness.admin("POST", f"/jobs/{job}/{'resume' if action == 'pause' else 'pause'}")
        assert reply.status_code == 409 and "changed 5 times" in json.loads(reply.body)["Message"], reply.body
