"""Fold throughput for one job with AWS-like latency: results folded per second.

The real handlers on moto (in-process), with a botocore hook that makes every
call of the app's clients wait as long as a call to AWS from Lambda takes:
5 ms per DynamoDB call and 25 ms per S3 call (typical same-region figures;
SQS polling is Lambda's and not timed). Tasks are leased, given a gradient and
completed first; then the fold's invocations are timed over the results
queue (the function's own time: receiving and deleting the batch is Lambda's
poller's), ten results per invocation (Lambda's SQS batch) and, for
comparison, one per invocation. moto runs in the same process, so its own
work counts too: the figures are on the low side.
The model is the paper's (the char-lstm template: LSTM(10) → LSTM(10) →
Dense(128), 7,808 parameters), K = 10, Adam. Target: 50 results/s at K = 10.

Then a multi-level fold (`fold_groups` G = 16, K = 64): the result groups'
invocations (ten results each, summed), the middle groups' (ten level-1
sums each) and the top level's (ten level-2 sums, up to a thousand results,
each) are timed apart. On AWS the G result groups run at once, and so do the
ceil(G / 10) middle groups; the top level alone is serial. One job then
folds min(G x result-group rate, middle groups x middle rate, top rate)
results per second while the invocations are full (docs/scale.md).
"""
from __future__ import annotations

import gzip
import os
import time
from contextlib import contextmanager

import boto3
import numpy as np

from bench import common
from chalicelib.services import services
from chalicelib.fold.partials import middle_groups
from chalicelib.tasks.records import fold_message
from crowdtrain.api import post_form
from crowdtrain.jobs.charlstm import CharLSTM
from tests.harness import Harness

LATENCY = {"dynamodb": 0.005, "s3": 0.025}


def paper_job(harness: Harness, batches: int, k: int, fold_groups: int = 1) -> str:
    model = CharLSTM()
    spec = model.job_spec(batches, gradients_per_update=k, staleness=1000, lease_seconds=600,
                          optimizer={"name": "adam", "learning_rate": 0.01})
    spec["fold_groups"] = fold_groups
    reply = harness.admin("POST", "/jobs", spec)
    assert reply.status_code == 201, reply.body
    created = __import__("json").loads(reply.body)
    upload = created["upload"]
    weights = b"".join(w.astype("<f4").tobytes() for w in model.initial_weights(0))
    post_form(upload["weights"], weights)
    x = np.zeros((model.batch_size, model.seq_len), np.uint8)
    y = np.zeros(model.batch_size, np.uint8)
    data = gzip.compress(model.batch_file(x, y), mtime=0)
    for b in range(batches):
        post_form(upload["batches"], data, key=f"{upload['batch_key_prefix']}batch-{b:06d}.bin")
    assert harness.admin("POST", f"/jobs/{created['job_id']}/start").status_code == 200
    return created["job_id"]


def complete_tasks(harness: Harness, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        task = harness.lease(f"volunteer-{i % 100}")
        size = task["upload_bytes"] // 4
        harness.upload(task, (rng.normal(size=size) * 1e-3).astype("<f4").tobytes())
        assert harness.complete(task, 2.0).status_code == 200


def _wait(model, **_):
    time.sleep(LATENCY.get(model.service_model.endpoint_prefix, 0.0))


def add_latency(on: bool = True) -> None:
    """Every call of the app's S3 and DynamoDB clients waits as long as AWS would take (or, off, not)."""
    parts = services()
    for client in (parts._table.meta.client, parts.objects._s3):
        (client.meta.events.register if on else client.meta.events.unregister)("before-call", _wait)


@contextmanager
def stack():
    """The app on moto, in this process."""
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      ADMIN_TOKEN="test-admin-token", LEASE_WAIT_SECONDS="0")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    from moto import mock_aws
    with mock_aws():
        os.environ.update(Harness.create_resources(boto3.Session(region_name="us-east-1")))
        with Harness() as harness:
            yield harness


def fold_invocations(harness: Harness, per_invocation: int, level: int | None = None) -> tuple[int, int, float]:
    """Run the fold over the results queue, `per_invocation` messages at a
    time, until it is empty (or, with `level`, holds no message of that
    level: 0 a result, 1 or 2 a partial sum): (messages, invocations,
    seconds of the function's own time)."""
    done, invocations, seconds = 0, 0, 0.0
    while True:
        messages = harness.result_messages(max_messages=per_invocation, visibility=0 if level is not None else 60)
        if level is not None:
            messages = [m for m in messages if getattr(fold_message(m["Body"]), "level", 0) == level]
        if not messages:
            return done, invocations, seconds
        start = time.perf_counter()  # the function's own time; polling is Lambda's
        harness.invoke_fold([m["Body"] for m in messages])
        seconds += time.perf_counter() - start
        for m in messages:
            harness.sqs.delete_message(QueueUrl=harness.results_url, ReceiptHandle=m["ReceiptHandle"])
        done += len(messages)
        invocations += 1


def run(results: int, k: int, per_invocation: int) -> dict:
    with stack() as harness:
        job = paper_job(harness, results, k)
        complete_tasks(harness, results)
        add_latency()
        folded, invocations, seconds = fold_invocations(harness, per_invocation)
        status = harness.status(job)
    assert status["batches_done"] == results, status
    return {"results": results, "k": k, "results_per_invocation": per_invocation, "invocations": invocations,
            "seconds": seconds, "results_per_second": results / seconds, "versions": status["version"]}


def run_levels(results: int, k: int, groups: int) -> dict:
    """Each level of a multi-level fold over everything the level below sent, timed apart."""
    with stack() as harness:
        job = paper_job(harness, results, k, groups)
        totals = [[0, 0, 0.0] for _ in range(3)]
        for start in range(0, results, 1000):  # the top level queues the epoch's next 1,000 tasks
            add_latency(False)
            complete_tasks(harness, min(1000, results - start))
            add_latency()
            for level, total in enumerate(totals):
                for i, value in enumerate(fold_invocations(harness, 10, level)):
                    total[i] += value
        levels = totals
        status = harness.status(job)
    assert status["batches_done"] == results, status
    names = ("result group", "middle group", "top level")
    row = {"results": results, "k": k, "fold_groups": groups, "middle_groups": middle_groups(groups),
           "versions": status["version"],
           "levels": {name: {"messages": m, "invocations": n, "seconds": sec, "results_per_second": results / sec}
                      for name, (m, n, sec) in zip(names, levels)}}
    rates = row["levels"]
    row["job_results_per_second"] = min(groups * rates["result group"]["results_per_second"],
                                        middle_groups(groups) * rates["middle group"]["results_per_second"],
                                        rates["top level"]["results_per_second"])
    return row


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    results = 40 if args.quick else 400
    rows = [run(results, 10, per) for per in (10, 1)]
    for row in rows:
        print(f"K = {row['k']}, {row['results_per_invocation']:2d} results per invocation: "
              f"{row['results_per_second']:6.1f} results/s ({row['results']} results, {row['seconds']:.1f} s, "
              f"{row['versions']} versions)")
    met = rows[0]["results_per_second"] >= 50
    print(f"target >= 50 results/s at K = 10: {'met' if met else 'NOT met'}")
    levels = run_levels(200 if args.quick else 2000, 64, 16)
    print(f"fold_groups = {levels['fold_groups']} ({levels['middle_groups']} middle groups), K = {levels['k']}, "
          f"{levels['results']} results, {levels['versions']} versions:")
    for name, level in levels["levels"].items():
        print(f"  {name:<13} {level['results_per_second']:7.1f} results/s each ({level['invocations']} invocations "
              f"of {level['messages'] / level['invocations']:.1f} messages, {level['seconds']:.1f} s)")
    print(f"  one job: {levels['job_results_per_second']:.0f} results/s")
    common.save("fold_throughput", {"latency_seconds": LATENCY, "rows": rows, "levels": levels, "target": 50,
                                    "target_met": met}, args)


if __name__ == "__main__":
    main()
