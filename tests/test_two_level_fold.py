"""A job folded in several message groups (`fold_groups` > 1): each result
group's fold sums its results, middle folds add those sums up, the job's
top-level fold applies whole sums. The same exactly-once guarantees as the
one-level fold, through crashes at every step of every level, and the same
model."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from chalicelib.domain.keys import partial_sum_key
from chalicelib.domain.records import PartialSum, fold_message
from chalicelib.fold.outcomes import FoldOutcome
from chalicelib.services import services
from tests.conftest import Crash
from tests.harness import BUCKET, Dataset, softmax_loss_and_grad

GROUPS = 4


def work_all(harness, volunteers: int) -> list[dict]:
    """Lease up to `volunteers` tasks (each its own volunteer), compute and complete them all."""
    tasks = [t for t in (harness.lease(f"v{i}") for i in range(volunteers)) if t]
    for task in tasks:
        assert harness.work(task).status_code == 200
    return tasks


def sum_by_group(harness, groups: int) -> list[PartialSum]:
    """Each result group's fold over its results, as Lambda would run them; the level-1 sums they sent."""
    results = [fold_message(m["Body"]) for m in fold_messages(harness)]
    for g in range(groups):
        mine = [r for r in results if r.batch % groups == g]
        assert services().fold.handle_batch(mine) == [FoldOutcome.SUMMED] * len(mine)
    sums = [fold_message(m["Body"]) for m in fold_messages(harness)]
    assert all(s.level == 1 for s in sums)
    return sums


def combined(harness, *invocations: list[PartialSum]) -> list[PartialSum]:
    """Middle folds over level-1 sums, one invocation per list; the level-2 sums they sent."""
    for sums in invocations:
        assert services().fold.handle_batch(sums) == [FoldOutcome.SUMMED] * len(sums)
    out = [fold_message(m["Body"]) for m in fold_messages(harness)]
    assert all(s.level == 2 for s in out)
    return out


def fold_messages(harness) -> list[dict]:
    messages = []
    while batch := harness.result_messages():
        messages += batch
        for m in batch:
            harness.sqs.delete_message(QueueUrl=harness.results_url, ReceiptHandle=m["ReceiptHandle"])
    return messages


def test_results_are_spread_over_the_jobs_groups_by_batch(harness):
    ds = Dataset.generate(batches=12, batch_size=4)
    job = harness.create_job(ds, fold_groups=GROUPS, gradients_per_update=12)
    work_all(harness, 12)
    reply = harness.sqs.receive_message(
        QueueUrl=harness.results_url, MaxNumberOfMessages=10, AttributeNames=["MessageGroupId"]
    )
    groups = {json.loads(m["Body"])["batch"]: m["Attributes"]["MessageGroupId"] for m in reply["Messages"]}
    assert groups and all(group == f"{job}#{batch % GROUPS}" for batch, group in groups.items())


def test_two_levels_fold_the_same_model_as_one(harness):
    """One update of a whole epoch, every gradient on version 0: both ways give w0 - lr × mean."""
    ds = Dataset.generate(batches=24, batch_size=8)
    finals = {}
    for groups in (1, GROUPS):
        job = harness.create_job(
            ds,
            fold_groups=groups,
            gradients_per_update=24,
            staleness=0,
            aggregation={"name": "clipped_mean", "clip_norm": 0.5},
        )
        work_all(harness, 24)
        harness.deliver()
        assert harness.status(job)["version"] == 1
        assert sorted(b for _, b, _ in harness.folds(job)) == list(range(24))
        finals[groups] = harness.weights(job, 1)
    for one, two in zip(finals[1], finals[GROUPS]):
        np.testing.assert_allclose(two, one, rtol=1e-6, atol=1e-7)
    assert not all(np.array_equal(a, b) for a, b in zip(finals[1], harness.weights(job, 0)))


def test_an_update_takes_whole_sums_and_their_exact_mean(harness):
    """K = 4 and two sums of 3: one update of all 6, their mean gradient (not 4 of them, nor 4 counted as 6)."""
    ds = Dataset.generate(batches=6, batch_size=4)
    job = harness.create_job(ds, fold_groups=2, gradients_per_update=4, optimizer={"name": "sgd", "learning_rate": 0.5})
    w0 = harness.weights(job, 0)
    work_all(harness, 6)
    sums = combined(harness, *([s] for s in sum_by_group(harness, 2)))
    assert [len(s.results) for s in sums] == [3, 3]
    assert services().fold.handle_batch(sums) == [FoldOutcome.FOLDED, FoldOutcome.FOLDED]
    assert harness.status(job)["version"] == 1
    grads = [softmax_loss_and_grad(w0, ds.x[b], ds.y[b])[1] for b in range(6)]
    for i, (w, got) in enumerate(zip(w0, harness.weights(job, 1))):
        np.testing.assert_allclose(got, w - 0.5 * np.mean([g[i] for g in grads], axis=0), rtol=1e-5, atol=1e-6)


def test_a_sum_is_stored_under_its_digest_and_folded_only_as_stored(harness):
    ds = Dataset.generate(batches=8, batch_size=4)
    job = harness.create_job(ds, fold_groups=2, gradients_per_update=8)
    work_all(harness, 8)
    parts = services()
    sums = sum_by_group(harness, 2)
    assert len(sums) == 2 and sorted(r.batch for s in sums for r in s.results) == list(range(8))
    assert all(s.key == partial_sum_key(job, 0, s.digest) for s in sums)

    def spoil(key: str) -> None:
        stored = harness.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        harness.s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(len(stored)))

    # a level-1 sum overwritten after its fold stored it: the middle fold
    # leaves it out and its batches go back on the queue
    spoil(sums[0].key)
    assert parts.fold.handle_batch(sums) == [FoldOutcome.INVALID, FoldOutcome.SUMMED]
    assert harness.status(job)["discarded"] == {"invalid": len(sums[0].results)}
    [middle] = [fold_message(m["Body"]) for m in fold_messages(harness)]
    assert middle.results == sums[1].results
    # and a level-2 sum overwritten: the top level takes it, the update finds it spoiled
    spoil(middle.key)
    assert parts.fold.handle_batch([middle]) == [FoldOutcome.PENDING]
    while harness.status(job)["status"] != "finished":
        assert work_all(harness, 8), "nothing left to lease, yet the job is not finished"
        harness.deliver()
    assert harness.status(job)["discarded"] == {"invalid": 8} and harness.status(job)["version"] == 1
    assert sorted(b for _, b, _ in harness.folds(job)) == list(range(8))


def test_a_sum_holding_a_taken_batch_is_not_taken_and_its_other_batches_go_back(harness):
    ds = Dataset.generate(batches=4, batch_size=4)
    job = harness.create_job(ds, fold_groups=2, gradients_per_update=4)
    work_all(harness, 4)
    parts = services()
    sums = combined(harness, *([s] for s in sum_by_group(harness, 2)))
    assert parts.fold.handle_batch(sums[:1]) == [FoldOutcome.PENDING]
    # a retried lower fold's sum that overlaps the one taken: one batch taken, one not
    first = sums[0].results[0]
    other = sums[1].results[0]
    overlap = PartialSum(job, 0, 2, sums[1].digest, (first, other))
    # the other batch's lease is discarded, so the sum it was really in is not taken either
    assert parts.fold.handle_batch([overlap, sums[1]]) == [FoldOutcome.SPLIT_SUM, FoldOutcome.SPLIT_SUM]
    assert harness.status(job)["discarded"] == {"split_sum": len(sums[1].results)}
    assert harness.status(job)["version"] == 0
    work_all(harness, 4)  # the re-queued batches
    harness.deliver()
    assert harness.status(job)["version"] == 1
    assert sorted(b for _, b, _ in harness.folds(job)) == list(range(4))


def test_a_sum_naming_a_batch_twice_is_not_taken(harness):
    ds = Dataset.generate(batches=4, batch_size=4)
    job = harness.create_job(ds, fold_groups=2, gradients_per_update=4)
    work_all(harness, 4)
    sums = sum_by_group(harness, 2)
    twice = replace(sums[0], results=sums[0].results + sums[0].results[:1])  # counted twice, summed once
    assert services().fold.handle_batch([twice, sums[1]]) == [FoldOutcome.SPLIT_SUM, FoldOutcome.SUMMED]
    assert harness.status(job)["discarded"] == {"split_sum": len(sums[0].results)}


def test_a_sum_gone_stale_before_the_top_level_took_it_is_not_folded(harness):
    ds = Dataset.generate(batches=4, batch_size=4)
    job = harness.create_job(ds, fold_groups=2, gradients_per_update=2, staleness=0)
    work_all(harness, 4)  # all on version 0
    parts = services()
    sums = combined(harness, *([s] for s in sum_by_group(harness, 2)))
    assert [parts.fold.handle(s) for s in sums] == [FoldOutcome.FOLDED, FoldOutcome.STALE]
    assert harness.status(job)["version"] == 1
    assert harness.status(job)["discarded"] == {"stale": len(sums[1].results)}


CRASH_POINTS = [
    ("before", "sums", "gather", "a group's fold, before checking"),
    ("before", "results", "send_sum", "a lower fold, sum stored, not sent"),
    ("after", "results", "send_sum", "a lower fold, sum sent, messages not deleted"),
    ("after", "sums", "screen", "a middle or top fold, sums screened"),
    ("before", "fold", "apply_sums", "the top level, before taking sums"),
    ("after", "meta", "save", "the top level, sums taken as pending"),
    ("before", "versions", "write", "the top level, before writing the version"),
    ("after", "committer", "commit", "the top level, version advanced"),
]


@pytest.mark.parametrize("when,part,method,point", CRASH_POINTS, ids=[p[3] for p in CRASH_POINTS])
def test_a_crash_at_either_level_folds_every_batch_once(harness, crashes, when, part, method, point):
    ds = Dataset.generate(batches=12, batch_size=4)
    job = harness.create_job(ds, fold_groups=3, gradients_per_update=5, staleness=100)
    work_all(harness, 12)
    getattr(crashes, when)(part, method, point)
    messages = harness.result_messages(1)  # one message an invocation: sums smaller than K wait as pending
    with pytest.raises(Crash):
        while messages:
            harness.invoke_fold([m["Body"] for m in messages])
            for m in messages:
                harness.sqs.delete_message(QueueUrl=harness.results_url, ReceiptHandle=m["ReceiptHandle"])
            messages = harness.result_messages(1)
    crashes.heal()
    assert crashes.counts[f"crash: {point}"] == 1
    # Lambda's event source: what was not deleted comes back
    harness.sqs.change_message_visibility_batch(
        QueueUrl=harness.results_url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(messages)
        ],
    )
    harness.deliver()
    while task := harness.lease("again"):  # batches a fold discarded on the way
        harness.work(task)
        harness.deliver()
    assert harness.status(job)["status"] == "finished"
    folds = harness.folds(job)
    assert sorted(b for _, b, _ in folds) == list(range(12))
    per_version = Counter(v for _, _, v in folds)  # whole sums: K = 5 or more, the epoch's rest last
    assert all(n >= 5 for v, n in per_version.items() if v < max(per_version)), per_version


def test_many_volunteers_with_random_crashes_fold_each_batch_once_and_learn(harness, crashes):
    rng = random.Random(7)
    ds = Dataset.generate(batches=60, batch_size=8, seed=3)
    job = harness.create_job(
        ds,
        fold_groups=GROUPS,
        epochs=3,
        gradients_per_update=6,
        staleness=6,
        optimizer={"name": "sgd", "learning_rate": 0.5},
    )
    x_all, y_all = ds.x.reshape(-1, 4), ds.y.reshape(-1)
    start = softmax_loss_and_grad(harness.weights(job, 0), x_all, y_all)[0]
    crashes.rng = rng
    for when, part, method, point in CRASH_POINTS:
        getattr(crashes, when)(part, method, point, 0.08)
    counts: Counter = Counter()
    for _ in range(200):
        if harness.status(job)["status"] == "finished":
            break
        for task in [t for t in (harness.lease(f"v{i}") for i in range(12)) if t]:
            harness.work(task)
        messages = harness.result_messages(visibility=0)
        while messages:
            try:
                harness.invoke_fold([m["Body"] for m in messages])
            except Crash:
                counts["crashed"] += 1
                break
            for m in messages:
                harness.sqs.delete_message(QueueUrl=harness.results_url, ReceiptHandle=m["ReceiptHandle"])
            messages = harness.result_messages(visibility=0)
    status = harness.status(job)
    assert status["status"] == "finished", status
    folds = harness.folds(job)
    assert Counter((e, b) for e, b, _ in folds) == {(e, b): 1 for e in range(3) for b in range(60)}
    assert counts["crashed"] >= 10 and sum(crashes.counts.values()) == counts["crashed"]
    end = softmax_loss_and_grad(harness.weights(job, status["version"]), x_all, y_all)[0]
    assert end < 0.6 * start, (start, end)


@pytest.mark.parametrize(
    "body,message",
    [
        ({"fold_groups": 2, "aggregation": "median"}, "median cannot be"),
        ({"fold_groups": 2, "aggregation": {"name": "trimmed_mean", "trim": 0.1}}, "trimmed_mean cannot be"),
        ({"fold_groups": 2, "replication": {"copies": 2}}, "does not combine with replication"),
        ({"fold_groups": 65}, "fold_groups"),
        ({"fold_groups": 0}, "fold_groups"),
        ({"fold_groups": 2, "max_share": 0.5}, "max_share below 1 needs fold_groups 1"),
        ({"max_share": 0}, "'max_share' must be between"),
        ({"max_share": 1.5}, "'max_share' must be between"),
    ],
)
def test_a_two_level_fold_needs_a_rule_it_can_sum(harness, body, message):
    from tests.harness import job_body

    reply = harness.admin("POST", "/jobs", job_body(Dataset.generate(batches=2, batch_size=4), **body))
    assert reply.status_code == 400 and message in json.loads(reply.body)["Message"], reply.body
