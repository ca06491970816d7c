"""The per-job paths that must stay cheap with thousands of volunteers: what
the pages poll, a volunteer at its lease limit, a paused job, a huge epoch,
and the size of the items that grow with a job."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest
from boto3.dynamodb.types import TypeDeserializer

from chalicelib.domain.records import Lease, PartialSum, Result
from chalicelib.domain.schema import MAX_GRADIENTS_PER_UPDATE
from chalicelib.services import services
from chalicelib.store.meta import FoldLog, JobMeta, Pending, mark_folded, meta_item
from chalicelib.store.table import item_size
from chalicelib.tasks.epochs import CHUNK, EpochQueue
from tests.harness import (
    BUCKET,
    LEASE_META_MAX_AGE,
    TASK_MAX_RECEIVES,
    Dataset,
    direct_job,
    job_body,
    softmax_loss_and_grad,
    token_payload,
)


def count_calls(client) -> Counter:
    """Every AWS operation the client makes from now on, by name."""
    calls: Counter = Counter()
    client.meta.events.register("before-call", lambda model, **_: calls.update([model.name]))
    return calls


def drain(harness) -> int:
    done = 0
    while (task := harness.lease()) is not None:
        assert harness.work(task).status_code == 200
        done += 1
    harness.deliver()
    return done


def test_what_pages_poll_reads_no_database(harness):
    ds = Dataset.generate(batches=3, batch_size=4)
    job = harness.create_job(ds)
    hidden = harness.create_job(ds, start=False)  # still uploading: not public
    assert drain(harness) == 3
    parts = services()
    dynamodb, s3 = count_calls(parts._table.meta.client), count_calls(parts.objects._s3)
    reply = harness.call("GET", f"/progress/{job}")
    listing = harness.call("GET", "/progress")
    assert reply.status_code == 200 and listing.status_code == 200
    assert dynamodb == Counter(), "a route the pages poll read DynamoDB"
    assert s3 == Counter({"GetObject": 2})
    status = json.loads(reply.body)
    assert status["status"] == "finished" and status["samples"] == 3 * 4 and status["active_volunteers"] == 1
    assert [j["job_id"] for j in json.loads(listing.body)["jobs"]] == [job]
    assert harness.call("GET", f"/progress/{hidden}").status_code == 404
    stored = harness.s3.head_object(Bucket=BUCKET, Key=f"jobs/{job}/status.json")
    assert stored["CacheControl"] == "public, max-age=5" and stored["ContentType"] == "application/json"


def test_the_fold_publishes_status_at_most_every_few_seconds(harness):
    ds = Dataset.generate(batches=6, batch_size=4)
    job = harness.create_job(ds, epochs=2)
    s3 = count_calls(services().objects._s3)
    for _ in range(6):
        task = harness.lease()
        assert harness.work(task).status_code == 200
        harness.deliver()
    puts = s3["PutObject"] - 3 * 6  # each fold wrote a version's three files
    assert puts == 0  # the job's document was written at start, less than 5 s ago
    assert harness.status(job)["version"] == 6


def test_a_document_the_fold_skips_is_written_when_its_interval_ends(harness):
    """Two folds a second apart, both inside the interval after the start's
    document: one message, delayed until the interval ends, and the
    publish_status Lambda then writes the second version (issue 40)."""
    job = harness.create_job(Dataset.generate(batches=4, batch_size=4))
    board = services().board
    board.interval = 3.0  # the deployed 5 s, shortened: the test waits it out
    publish_url = harness.sqs.get_queue_url(QueueName="crowdtrain-test-publish")["QueueUrl"]
    for _ in range(2):
        assert harness.work(harness.lease()).status_code == 200
        harness.deliver()
    public = lambda: json.loads(harness.s3.get_object(Bucket=BUCKET, Key=f"jobs/{job}/status.json")["Body"].read())  # noqa: E731
    assert public()["version"] == 0 and harness.status(job)["version"] == 2
    delayed = harness.sqs.get_queue_attributes(QueueUrl=publish_url, AttributeNames=["All"])["Attributes"]
    assert (delayed["ApproximateNumberOfMessagesDelayed"], delayed["ApproximateNumberOfMessages"]) == ("1", "0")
    bodies: list[str] = []
    deadline = time.monotonic() + 10
    while not bodies and time.monotonic() < deadline:  # out of sight until the interval ends
        reply = harness.sqs.receive_message(QueueUrl=publish_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        bodies = [m["Body"] for m in reply.get("Messages", [])]
    event = harness.client.events.generate_sqs_event(message_bodies=bodies, queue_name="crowdtrain-test-publish")
    harness.client.lambda_.invoke("publish_status", event)
    assert public()["version"] == 2


def test_a_volunteer_at_its_limit_takes_nothing_out_of_the_queue(harness, monkeypatch):
    monkeypatch.setenv("MAX_LEASES_PER_VOLUNTEER", "1")
    ds = Dataset.generate(batches=3, batch_size=4)
    job = harness.create_job(ds)
    assert harness.lease("hammer") is not None
    for _ in range(3 * TASK_MAX_RECEIVES):
        reply = harness.lease_reply("hammer")
        assert reply.status_code == 429
    assert harness.waiting(harness.job_queue(job)) == 2 and harness.waiting(harness.task_dlq_url) == 0
    reply = harness.sqs.receive_message(
        QueueUrl=harness.job_queue(job), MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
    )
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in reply["Messages"]] == ["1", "1"]


def test_a_paused_job_polled_for_hours_loses_nothing(harness):
    ds = Dataset.generate(batches=5, batch_size=4)
    job = harness.create_job(ds)
    held = harness.lease("busy")  # a lease in flight when the job is paused
    harness.admin("POST", f"/jobs/{job}/pause")
    # three hours of polling, one lease a minute: its queue is never asked, so no task cycles
    for _ in range(180):
        assert harness.lease() is None
    assert harness.waiting(harness.job_queue(job)) == 4 and harness.waiting(harness.task_dlq_url) == 0
    assert harness.work(held).status_code == 200  # the lease in flight still completes
    harness.admin("POST", f"/jobs/{job}/resume")
    drain(harness)
    status = harness.status(job)
    assert status["status"] == "finished" and status["batches_done"] == 5
    assert sorted(b for _, b, _ in harness.folds(job)) == [0, 1, 2, 3, 4]
    assert harness.waiting(harness.task_dlq_url) == 0


def huge_job(harness, batches: int) -> tuple[JobMeta, object]:
    """A running job of `batches` batches, its records made directly (no uploads), nothing queued yet."""
    return direct_job("j-huge", batches)


def test_a_huge_epoch_is_queued_a_bounded_chunk_per_call(harness):
    meta, spec = huge_job(harness, 100_000)
    parts = services()
    sqs = count_calls(parts.tasks._sqs)
    meta = parts.epochs.queue(meta, spec)
    assert sqs["SendMessageBatch"] == CHUNK // 10 and meta.queue_cursor == CHUNK and meta.queued_epoch == -1
    assert harness.waiting(harness.job_queue(meta.job_id)) == CHUNK


def test_chunked_queueing_queues_each_batch_of_the_epoch_once(harness):
    meta, spec = huge_job(harness, 250)
    queue = EpochQueue(services().meta, services().tasks, chunk=100)
    calls = 0
    while meta.queued_epoch < 0:
        meta = queue.queue(meta, spec)
        calls += 1
    assert calls == 3 and queue.queue(meta, spec) == meta  # queued: nothing more to do
    seen = Counter()
    url = harness.job_queue(meta.job_id)
    while batch := harness.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        seen.update(json.loads(m["Body"])["batch"] for m in batch)
        harness.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )
    assert sorted(seen) == list(range(250)) and set(seen.values()) == {1}


def test_meta_stays_small_at_100000_batches():
    rng = random.Random(0)
    half = [b for b in range(100_000) if rng.random() < 0.5]  # the least compressible bitmap
    pending = tuple(
        Pending(
            f"j-{'0' * 12}",
            0,
            b,
            "f" * 32,
            7,
            f"grads/j-{'0' * 12}/000000/{b:06d}/{'f' * 32}.bin",
            2.345678901234,
            32,
            "volunteer-" + "x" * 54,
            "a" * 64,
        )
        for b in range(MAX_GRADIENTS_PER_UPDATE)
    )
    meta = JobMeta(
        f"j-{'0' * 12}",
        "running",
        version=5000,
        epoch=3,
        folded=mark_folded(b"", half),
        folded_total=300_000,
        pending=pending,
    )
    assert item_size(meta_item(meta)) < 40_000, item_size(meta_item(meta))


def test_meta_of_a_job_folded_in_parts_stays_well_under_the_item_limit():
    """Its last update may list up to K - 1 + 1,000 batches (every pending sum)."""
    rng = random.Random(0)
    half = [b for b in range(100_000) if rng.random() < 0.5]
    job = f"j-{'0' * 12}"
    results = tuple(
        Result(job, 0, b, "f" * 32, 7, "", 2.345678901234, 32, "volunteer-" + "x" * 54)
        for b in range(MAX_GRADIENTS_PER_UPDATE - 1)
    )
    pending = tuple(Pending.in_sum(r, PartialSum(job, 0, 2, "a" * 64, results)) for r in results)
    update = MAX_GRADIENTS_PER_UPDATE - 1 + 1000
    last = FoldLog(5000, 2.3456789, 32 * update, 1.8e9, tuple((0, 99_000 - b, "f" * 32) for b in range(update)))
    meta = JobMeta(
        job,
        "running",
        version=5000,
        epoch=3,
        folded=mark_folded(b"", half),
        folded_total=300_000,
        pending=pending,
        last_fold=last,
    )
    assert item_size(meta_item(meta)) < 100_000, item_size(meta_item(meta))


def test_a_spec_over_the_item_limit_is_refused(harness):
    body = job_body(Dataset.generate(batches=1, batch_size=4))
    body["model"]["modelTopology"]["config"]["layers"][0]["config"]["name"] = "d" * 360_000
    reply = harness.admin("POST", "/jobs", body)
    assert reply.status_code == 400 and b"350" in reply.body, reply.body


def big_dense(units_in: int, units_out: int) -> dict:
    return {
        "modelTopology": {
            "class_name": "Sequential",
            "config": {
                "layers": [
                    {"class_name": "Dense", "config": {"units": units_out, "batch_input_shape": [None, units_in]}}
                ]
            },
        },
        "weightsManifest": [
            {
                "paths": ["weights.bin"],
                "weights": [
                    {"name": "dense/kernel", "shape": [units_in, units_out], "dtype": "float32"},
                    {"name": "dense/bias", "shape": [units_out], "dtype": "float32"},
                ],
            }
        ],
    }


@pytest.mark.parametrize(
    "aggregation, k, status",
    [
        ("median", 64, 400),
        ({"name": "trimmed_mean", "trim": 0.2}, 64, 400),
        ("median", 8, 201),
        ("mean", 64, 201),
        ({"name": "clipped_mean", "clip_norm": 1}, 64, 201),
    ],
)
def test_a_job_whose_fold_would_not_fit_in_memory_is_refused(harness, aggregation, k, status):
    body = job_body(
        Dataset.generate(batches=1, batch_size=4),
        model=big_dense(5000, 1000),
        aggregation=aggregation,
        gradients_per_update=k,
        dataset={"batches": k, "x": {"shape": [4, 5000], "dtype": "float32"}, "y": {"shape": [4], "dtype": "int32"}},
    )
    reply = harness.admin("POST", "/jobs", body)  # 5,001,000 parameters, 20 MB a gradient, Adam
    assert reply.status_code == status, reply.body
    if status == 400:
        assert b"gradients_per_update 64 on 5,001,000 parameters" in reply.body and b"819 MB" in reply.body


def test_a_heartbeat_past_sqs_twelve_hours_is_a_clear_409(harness):
    ds = Dataset.generate(batches=1, batch_size=4)
    job = harness.create_job(ds, lease_seconds=3600)
    task = harness.lease()
    beat = lambda token: harness.call("POST", "/tasks/heartbeat", {"job_id": job, "lease_token": token})  # noqa: E731
    assert beat(task["lease_token"]).status_code == 200
    # the same lease, as if received 11.5 hours ago: one more hour would cross SQS's limit
    lease = Lease.from_json(token_payload(task))
    old = services().signer.sign(replace(lease, received=lease.received - 11.5 * 3600))
    reply = beat(old)
    assert reply.status_code == 409 and b"12 hours" in reply.body
    assert harness.admin("POST", "/jobs", job_body(ds, lease_seconds=43_200)).status_code == 400


def test_heartbeats_stop_at_the_maximum_and_the_task_goes_to_someone_else(harness):
    ds = Dataset.generate(batches=1, batch_size=4)
    job = harness.create_job(ds, lease_seconds=60)
    task = harness.lease("holder")
    beat = lambda token: harness.call("POST", "/tasks/heartbeat", {"job_id": job, "lease_token": token})  # noqa: E731
    lease = Lease.from_json(token_payload(task))
    aged = lambda seconds: services().signer.sign(replace(lease, received=lease.received - seconds))  # noqa: E731
    assert beat(aged(2.9 * 60)).status_code == 200  # renewed to 3.9 x 60 s after the receive: within 4 x
    refused = beat(aged(3.1 * 60))
    assert refused.status_code == 409 and b"as far as it may be (4 x the job's lease_seconds, 240 s" in refused.body


def test_a_heartbeated_lease_keeps_holding_its_volunteers_slot(harness):
    """A slot is claimed for the lease's first term; each heartbeat holds it to the renewed end,
    so a volunteer cannot lease past its cap by heartbeating leases whose slots ran out."""
    ds = Dataset.generate(batches=2, batch_size=4)
    job = harness.create_job(ds, lease_seconds=60)
    task = harness.lease("beating")
    table = services().slots._table
    key = f"VOLUNTEER#{harness.volunteer_id('beating')}"
    [slot] = [i for i in table.scan()["Items"] if i["pk"] == key]
    # as if the lease were 50 s old: its slot's first term nearly over
    table.update_item(
        Key={"pk": slot["pk"], "sk": slot["sk"]},
        UpdateExpression="SET expires = :e",
        ExpressionAttributeValues={":e": Decimal(str(time.time() + 5))},
    )
    reply = harness.call("POST", "/tasks/heartbeat", {"job_id": job, "lease_token": task["lease_token"]})
    renewed = json.loads(reply.body)["lease_expires"]
    [slot] = [i for i in table.scan()["Items"] if i["pk"] == key]
    assert float(slot["expires"]) == pytest.approx(renewed, abs=1.0)


def test_a_result_dead_lettered_by_failing_folds_is_redriven_and_folded_once(harness, crashes):
    ds = Dataset.generate(batches=2, batch_size=4)
    job = harness.create_job(ds)
    task = harness.lease()
    assert harness.work(task).status_code == 200
    crashes.before("fold", "apply_batch", "the fold times out")
    for _ in range(6):  # the results queue's maxReceiveCount is 5
        for message in harness.result_messages(visibility=0):
            with pytest.raises(Exception):
                harness.invoke_fold([message["Body"]])
    crashes.heal()
    assert harness.waiting(harness.results_url) == 0 and harness.waiting(harness.result_dlq_url) == 1
    assert harness.status(job)["version"] == 0
    reply = harness.admin("POST", f"/jobs/{job}/redrive")
    assert reply.status_code == 200 and json.loads(reply.body)["redriven"] == {"tasks": 0, "results": 1}
    assert harness.deliver() == 1 and harness.waiting(harness.result_dlq_url) == 0
    assert harness.status(job)["version"] == 1 and harness.folds(job) == [(0, task["batch"], 1)]
    # a second redrive finds nothing; redriving a folded result again would be a duplicate
    assert json.loads(harness.admin("POST", f"/jobs/{job}/redrive").body)["redriven"] == {"tasks": 0, "results": 0}


def test_redrive_returns_one_jobs_dead_tasks_on_request_and_everything_on_schedule(harness):
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4))
    assert harness.waiting(harness.job_queue(job)) == 1
    for body in ({"job_id": job, "epoch": 0, "batch": 0}, {"job_id": "j-other", "epoch": 0, "batch": 0}):
        harness.sqs.send_message(QueueUrl=harness.task_dlq_url, MessageBody=json.dumps(body))
    assert json.loads(harness.admin("POST", f"/jobs/{job}/redrive").body)["redriven"] == {"tasks": 1, "results": 0}
    assert harness.waiting(harness.job_queue(job)) == 2  # the job's task is back; the other job's stays dead
    harness.sqs.send_message(
        QueueUrl=harness.task_dlq_url, MessageBody=json.dumps({"job_id": "j-third", "epoch": 0, "batch": 0})
    )
    event = harness.client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [])
    harness.client.lambda_.invoke("redrive_dead_letters", event)  # the scheduled Lambda takes whatever is there
    # the two other jobs' dead letters are dropped: those jobs (and so their queues) do not exist
    assert harness.waiting(harness.job_queue(job)) == 2 and harness.waiting(harness.task_dlq_url) == 0


def test_meta_does_not_grow_with_the_first_copies_awaiting_their_check(harness):
    ds = Dataset.generate(batches=30, batch_size=4)
    job = harness.create_job(ds, replication={"copies": 2}, gradients_per_update=1, staleness=8)
    table = harness.session.resource("dynamodb").Table("crowdtrain-test")
    meta_size = lambda: item_size(table.get_item(Key={"pk": f"JOB#{job}", "sk": "META"})["Item"])  # noqa: E731
    before = meta_size()
    for i in range(30):
        task = harness.lease(f"first-{i}")
        assert task is not None and task.get("base_version") == 0
        assert harness.work(task).status_code == 200
    harness.deliver()
    status = harness.status(job)
    assert status["awaiting_replica"] == 30 and status["version"] == 0
    assert meta_size() <= before + 20  # a longer revision number at most


def test_a_lease_drops_a_task_only_on_a_fresh_read_of_its_job(harness):
    ds = Dataset.generate(batches=2, batch_size=4)
    job = harness.create_job(ds)
    parts = services()
    paused = replace(parts.meta.get(job), status="paused")
    # another Lambda's view, a moment old: the job looked paused, and has since resumed
    parts.meta._seen[job] = (time.time(), paused)
    harness.lease()  # on that view the job is not asked; nor is a task of it dropped, should one be met
    time.sleep(LEASE_META_MAX_AGE + 0.1)
    task = harness.lease()
    assert task is not None and task["job_id"] == job and harness.waiting(harness.job_queue(job)) == 1


def test_a_slot_is_freed_only_by_the_lease_that_holds_it(harness):
    slots = services().slots
    assert slots.claim("v", "lease-a", 60, 1) == 0
    slots.release("v", 0, "lease-b")  # a late release by a lease that no longer holds the slot
    assert slots.claim("v", "lease-c", 60, 1) is None  # still lease-a's
    slots.release("v", 0, "lease-a")
    assert slots.claim("v", "lease-c", 60, 1) == 0


def test_a_fold_short_of_memory_reads_gradients_again_instead_of_holding_them(harness, monkeypatch):
    monkeypatch.setenv("FOLD_MEMORY_MB", "3")  # room for one 400 KB gradient in flight, not three
    ds = Dataset.generate(batches=3, batch_size=4, features=500)
    body = dict(
        model=big_dense(500, 200),
        gradients_per_update=3,
        dataset={"batches": 3, "x": {"shape": [4, 500], "dtype": "float32"}, "y": {"shape": [4], "dtype": "int32"}},
    )
    rng = np.random.default_rng(2)
    w0 = [rng.normal(scale=0.01, size=(500, 200)).astype(np.float32), np.zeros(200, np.float32)]
    job = harness.create_job(ds, initial=w0, **body)
    assert services().vetting.parallelism(services().jobs.spec(job)) == 1
    grads = []
    for _ in range(3):
        task = harness.lease()
        _, g = softmax_loss_and_grad(w0, ds.x[task["batch"]], ds.y[task["batch"]])
        grads.append(g)
        assert harness.work(task).status_code == 200
    assert harness.deliver() == 3  # one invocation, three results
    expected = [w - np.float32(0.5) * np.mean([g[i] for g in grads], axis=0) for i, w in enumerate(w0)]
    for ours, theirs in zip(harness.weights(job, 1), expected):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_a_jobs_admin_status_reads_no_lease_record_however_many_are_out(harness):
    """GET /jobs/{id} (and `crowdtrain watch`, which polls it) counts the tasks
    in flight from the task queue: its DynamoDB reads stay the same whether
    no lease or many are out, and none names a lease record."""
    job = harness.create_job(Dataset.generate(batches=12, batch_size=4))
    client = services()._table.meta.client
    asked: list[str] = []
    record = lambda model, params, **_: asked.append(f"{model.name} {json.dumps(params, default=str)}")  # noqa: E731
    client.meta.events.register("before-call.dynamodb", record)

    def reads() -> list[str]:
        asked.clear()
        reply = harness.admin("GET", f"/jobs/{job}")
        assert reply.status_code == 200, reply.body
        return [call.split(" ", 1)[0] for call in asked]

    idle = reads()
    for i in range(10):
        assert harness.lease(f"v{i}") is not None
    busy = reads()
    assert json.loads(harness.admin("GET", f"/jobs/{job}").body)["tasks"] == {"waiting": 2, "in_flight": 10}
    assert busy == idle and not any("LEASE#" in call for call in asked)


def test_no_partition_key_takes_more_than_1000_write_units_a_second_at_10000_volunteers(harness):
    """Every DynamoDB write of 40 tasks (leased, completed, folded at K = 10,
    credit tallied) counted by partition key, a write unit per KB begun of the
    item written: the job's own partition and each of its shards, at the rate
    10,000 volunteers on the paper's model (15 s tasks) bring, stay under
    DynamoDB's 1,000 write units a second per partition key. A volunteer's or
    an address's partition carries only that client's own tasks."""
    tasks, volunteers, task_seconds = 40, 10_000, 15
    job = harness.create_job(Dataset.generate(batches=tasks, batch_size=4), gradients_per_update=10)
    table = services()._table
    client, typed = table.meta.client, TypeDeserializer()
    units: Counter = Counter()

    def plain(values: dict) -> dict:  # a request's item or key, typed ({"S": ...}) by now or not
        return {k: typed.deserialize(v) if isinstance(v, dict) and len(v) == 1 else v for k, v in values.items()}

    def count(params, model, **_):
        if model.name in ("PutItem", "UpdateItem", "DeleteItem"):
            key = plain(params.get("Item") or params["Key"])
            # an update's or a delete's item: the one stored (a put's: the one sent)
            if "Item" not in params:
                key = table.get_item(Key={"pk": key["pk"], "sk": key["sk"]}).get("Item", key)
            stored = key
            units[key["pk"]] += max(1, -(-item_size(stored) // 1024))

    client.meta.events.register("before-parameter-build.dynamodb", count)
    for n in range(tasks):
        assert harness.work(harness.lease(f"v{n % 20}")).status_code == 200
        if n % 10 == 9:
            harness.deliver()
    client.meta.events.unregister("before-parameter-build.dynamodb", count)
    assert harness.status(job)["status"] == "finished"
    rate = volunteers / task_seconds  # tasks a second
    per_key = {pk: n / tasks * rate for pk, n in units.items() if pk.startswith(f"JOB#{job}")}
    assert max(per_key.values()) < 1_000, sorted(per_key.items(), key=lambda kv: -kv[1])[:3]
    # the shards carry what would otherwise be the job's own: more than 1,000 a second in all
    assert sum(per_key.values()) > 1_000 > per_key[f"JOB#{job}"]
