"""Fold throughput for one job with AWS-like latency: results folded per second.

The real handlers on moto (in-process), with a botocore hook that makes every
call of the app's clients wait as long as a call to AWS from Lambda takes:
5 ms per DynamoDB call, 25 ms per S3 call and 10 ms per SQS call the fold
makes (partial sums sent on, credit tallies asked for, tasks queued; typical
same-region figures; SQS polling is Lambda's and not timed). Credit is on,
and the volunteers are 400 identities. Tasks are leased, given a gradient and
completed first; then the fold's invocations are timed over the results
queue (the function's own time: receiving and deleting the batch is Lambda's
poller's), ten results per invocation (Lambda's SQS batch) and, for
comparison, one per invocation. moto runs in the same process and its own
work is slow where AWS's is not (it scans its in-memory tables: a
BatchGetItem of 100 keys takes about 120 ms here, a Query over a table of
thousands of items about as long), so each figure is given twice: as
measured, and with moto's own processing time taken out (the injected AWS
latency stays in). The scale model uses the second.
The model is the paper's (the char-lstm template: LSTM(10) → LSTM(10) →
Dense(128), 7,808 parameters), K = 10, Adam. Target: 50 results/s at K = 10.

Then a multi-level fold (`fold_groups` G = 16, K = 64): the result groups'
invocations (ten results each, summed), the middle groups' (ten level-1
sums each) and the top level's (ten level-2 sums, up to a thousand results,
each) are timed apart, and so are the job's credit tallies (their own
group: fold/credit.py). On AWS the G result groups run at once, and so do the
ceil(G / 10) middle groups; the top level alone is serial. One job then
folds min(G x result-group rate, middle groups x middle rate, top rate)
results per second while the invocations are full (docs/scale.md). The
tally, serial too but beside the fold, writes one credit item per identity
per pass: its rate is in identities per second.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
from contextlib import contextmanager

import boto3
import numpy as np

from bench import common
from chalicelib.domain.records import CreditDue, fold_message
from chalicelib.fold.partials import middle_groups
from chalicelib.services import services
from crowdtrain.api import post_form
from crowdtrain.jobs.charlstm import CharLSTM
from tests.harness import Harness

LATENCY = {"dynamodb": 0.005, "s3": 0.025, "sqs": 0.010}
IDENTITIES = 400  # the volunteers results come from (--quick: QUICK_IDENTITIES, each one an API call to issue)
QUICK_IDENTITIES = 20
CREDIT = 3  # the level fold_invocations gives credit tallies


class MotoClock:
    """Wall-clock seconds during which moto was answering at least one of the
    app's calls (the union of its calls' intervals: the fold's parallel reads
    overlap, and what they add to the wall clock is the union, not the sum)."""

    def __init__(self):
        from moto.core.botocore_stubber import BotocoreStubber

        self.seconds, self._lock, self._active, self._since = 0.0, threading.Lock(), 0, 0.0
        real = BotocoreStubber.__call__
        clock = self

        def timed(stubber, event_name, request, **kwargs):
            clock._enter()
            try:
                return real(stubber, event_name, request, **kwargs)
            finally:
                clock._leave()

        BotocoreStubber.__call__ = timed

    def _enter(self) -> None:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self.seconds += time.perf_counter() - self._since


MOTO: MotoClock | None = None


def paper_job(harness: Harness, batches: int, k: int, fold_groups: int = 1) -> str:
    model = CharLSTM()
    spec = model.job_spec(
        batches,
        gradients_per_update=k,
        staleness=1000,
        lease_seconds=600,
        optimizer={"name": "adam", "learning_rate": 0.01},
    )
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
        task = harness.lease(f"volunteer-{i % IDENTITIES}")
        size = task["upload_bytes"] // 4
        harness.upload(task, (rng.normal(size=size) * 1e-3).astype("<f4").tobytes())
        assert harness.complete(task, 2.0).status_code == 200


def _wait(model, **_):
    time.sleep(LATENCY.get(model.service_model.endpoint_prefix, 0.0))


def add_latency(on: bool = True) -> None:
    """Every call of the app's S3, DynamoDB and SQS clients waits as long as AWS would take (or, off, not)."""
    parts = services()
    for client in (parts._table.meta.client, parts.objects._s3, parts._sqs):
        (client.meta.events.register if on else client.meta.events.unregister)("before-call", _wait)


@contextmanager
def stack():
    """The app on moto, in this process, moto's own time clocked."""
    global MOTO
    MOTO = MOTO or MotoClock()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        ADMIN_TOKEN="test-admin-token",
        LEASE_WAIT_SECONDS="0",
        # every simulated volunteer calls from one address
        MAX_LEASES_PER_ADDRESS="100000",
        VOLUNTEERS_PER_ADDRESS_PER_HOUR="1000000",
        DISTINCT_ADDRESSES="0",
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    from moto import mock_aws

    with mock_aws():
        os.environ.update(Harness.create_resources(boto3.Session(region_name="us-east-1")))
        with Harness() as harness:
            yield harness


def fold_invocations(harness: Harness, per_invocation: int, level: int | None = None) -> tuple[int, int, float, float]:
    """Run the fold over the results queue, `per_invocation` messages at a
    time, until it is empty (or, with `level`, holds no message of that
    level: 0 a result, 1 or 2 a partial sum, CREDIT a credit tally):
    (messages, invocations, seconds of the function's own time, of which moto's own)."""
    done, invocations, seconds, moto = 0, 0, 0.0, 0.0
    while True:
        messages = harness.result_messages(max_messages=per_invocation, visibility=0 if level is not None else 60)
        if level is not None:
            messages = [m for m in messages if level_of(m["Body"]) == level]
        if not messages:
            return done, invocations, seconds, moto
        start, moto_start = time.perf_counter(), MOTO.seconds  # the function's own time; polling is Lambda's
        harness.invoke_fold([m["Body"] for m in messages])
        seconds += time.perf_counter() - start
        moto += MOTO.seconds - moto_start
        for m in messages:
            harness.sqs.delete_message(QueueUrl=harness.results_url, ReceiptHandle=m["ReceiptHandle"])
        done += len(messages)
        invocations += 1


def level_of(body: str) -> int:
    message = fold_message(body)
    return CREDIT if isinstance(message, CreditDue) else getattr(message, "level", 0)


def run(results: int, k: int, per_invocation: int) -> dict:
    with stack() as harness:
        job = paper_job(harness, results, k)
        complete_tasks(harness, results)
        add_latency()
        folded, invocations, seconds, moto = fold_invocations(harness, per_invocation)
        status = harness.status(job)
    assert status["batches_done"] == results, status
    return {
        "results": results,
        "k": k,
        "results_per_invocation": per_invocation,
        "invocations": invocations,
        "seconds": seconds,
        "moto_seconds": moto,
        "results_per_second": results / seconds,
        "aws_results_per_second": results / (seconds - moto),
        "versions": status["version"],
    }


@contextmanager
def identities_credited():
    """How many identity credit items the tallies write meanwhile: [count]."""
    from chalicelib.store.credits import Credits

    real, counted = Credits.add, [0]

    def add(self, job_id, earned, through):
        counted[0] += len(earned)
        return real(self, job_id, earned, through)

    Credits.add = add  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        Credits.add = real  # type: ignore[method-assign]


def run_levels(results: int, k: int, groups: int) -> dict:
    """Each level of a multi-level fold over everything the level below sent,
    and the job's credit tallies, timed apart."""
    with stack() as harness, identities_credited() as identities:
        job = paper_job(harness, results, k, groups)
        totals = [[0, 0, 0.0, 0.0] for _ in range(CREDIT + 1)]
        for start in range(0, results, 1000):  # the top level queues the epoch's next 1,000 tasks
            add_latency(False)
            complete_tasks(harness, min(1000, results - start))
            add_latency()
            for level, total in enumerate(totals):
                for i, value in enumerate(fold_invocations(harness, 10, level)):
                    total[i] += value
        *levels, (_, passes, tally_seconds, tally_moto) = totals
        status = harness.status(job)
    assert status["batches_done"] == results, status
    names = ("result group", "middle group", "top level")
    row = {
        "results": results,
        "k": k,
        "fold_groups": groups,
        "middle_groups": middle_groups(groups),
        "versions": status["version"],
        "levels": {
            name: {
                "messages": m,
                "invocations": n,
                "seconds": sec,
                "moto_seconds": moto,
                "results_per_second": results / sec,
                "aws_results_per_second": results / (sec - moto),
            }
            for name, (m, n, sec, moto) in zip(names, levels)
        },
        # credit: one write per identity per pass, however many results (fold/credit.py)
        "tally": {
            "passes": passes,
            "identities": identities[0],
            "seconds": tally_seconds,
            "moto_seconds": tally_moto,
            "identities_per_second": identities[0] / tally_seconds,
            "aws_identities_per_second": identities[0] / (tally_seconds - tally_moto),
            "identities_a_minute": 60 * identities[0] / (tally_seconds - tally_moto),  # what a pass a minute takes
        },
    }
    for suffix in ("", "aws_"):
        rates = {name: level[f"{suffix}results_per_second"] for name, level in row["levels"].items()}
        row[f"job_{suffix}results_per_second"] = min(
            groups * rates["result group"], middle_groups(groups) * rates["middle group"], rates["top level"]
        )
    return row


def main() -> None:
    global IDENTITIES
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    results, IDENTITIES = (40, QUICK_IDENTITIES) if args.quick else (400, IDENTITIES)
    rows = [run(results, 10, per) for per in (10, 1)]
    for row in rows:
        print(
            f"K = {row['k']}, {row['results_per_invocation']:2d} results per invocation: "
            f"{row['results_per_second']:6.1f} results/s, {row['aws_results_per_second']:6.1f} without moto's "
            f"own time ({row['results']} results, {row['seconds']:.1f} s, {row['versions']} versions)"
        )
    met = rows[0]["results_per_second"] >= 50
    print(f"target >= 50 results/s at K = 10: {'met' if met else 'NOT met'}")
    levels = run_levels(128 if args.quick else 2000, 64, 16)
    print(
        f"fold_groups = {levels['fold_groups']} ({levels['middle_groups']} middle groups), K = {levels['k']}, "
        f"{levels['results']} results, {levels['versions']} versions:"
    )
    for name, level in levels["levels"].items():
        print(
            f"  {name:<13} {level['results_per_second']:7.1f} results/s each, {level['aws_results_per_second']:7.1f} "
            f"without moto's own time ({level['invocations']} invocations of "
            f"{level['messages'] / level['invocations']:.1f} messages, {level['seconds']:.1f} s)"
        )
    tally = levels["tally"]
    print(
        f"  credit tally  {tally['identities_per_second']:7.1f} identities/s, "
        f"{tally['aws_identities_per_second']:7.1f} without moto's own time ({tally['identities']} identity "
        f"writes in {tally['passes']} passes, {tally['seconds']:.1f} s): a pass a minute keeps up with "
        f"{tally['identities_a_minute']:,.0f} identities"
    )
    print(
        f"  one job: {levels['job_results_per_second']:.0f} results/s, {levels['job_aws_results_per_second']:.0f} "
        "without moto's own time"
    )
    common.save(
        "fold_throughput",
        {"latency_seconds": LATENCY, "rows": rows, "levels": levels, "target": 50, "target_met": met},
        args,
    )


if __name__ == "__main__":
    main()
