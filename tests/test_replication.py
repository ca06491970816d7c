"""BOINC-style replication: with `replication.copies = 2` an accepted gradient
is folded only after a second volunteer, computing the same batch on the same
version, agrees with it."""

import json

import numpy as np
import pytest

from chalicelib import services as services_module
from tests.conftest import Crash
from tests.harness import Dataset

REPLICATED = {"replication": {"copies": 2, "tolerance": 1e-3}, "gradients_per_update": 1, "staleness": 8}


def folds(harness, job):
    return sorted((e, b) for e, b, _ in harness.folds(job))


def step(harness, volunteer, data=None):
    """Lease as `volunteer`, upload its honest gradient (or `data`), complete, run the fold."""
    task = harness.lease(volunteer)
    assert task is not None
    loss, honest = harness.compute(task)
    assert harness.upload(task, honest if data is None else data(honest)).status_code in (200, 204)
    assert harness.complete(task, loss).status_code == 200
    harness.deliver()
    return task


def sign_flipped(data: bytes) -> bytes:
    return (-np.frombuffer(data, "<f4")).astype("<f4").tobytes()


def test_agreeing_copies_are_folded_once_on_the_pinned_version(harness):
    ds = Dataset.generate(batches=3, batch_size=4)
    job = harness.create_job(ds, **REPLICATED)
    firsts = [step(harness, v) for v in ("a", "b", "c")]
    status = harness.status(job)
    assert status["version"] == 0 and status["awaiting_replica"] == 3
    checks = [step(harness, v) for v in ("b", "c", "a")]
    # each check computed its batch on the version its first copy used, even
    # though the model had moved on by the time it was leased
    assert [(t["batch"], t["base_version"]) for t in checks] == [(t["batch"], 0) for t in firsts]
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == 3 and status["discarded"] == {}
    assert status["counters"]["replicas_agreed"] == 3
    assert folds(harness, job) == [(0, 0), (0, 1), (0, 2)]


def test_a_check_by_the_first_copys_volunteer_discards_both_and_requeues(harness):
    ds = Dataset.generate(batches=1, batch_size=4)
    job = harness.create_job(ds, **REPLICATED)
    step(harness, "a")
    step(harness, "a")
    status = harness.status(job)
    assert status["version"] == 0 and status["awaiting_replica"] == 0
    assert status["discarded"] == {"same_volunteer": 2}
    step(harness, "c")  # the re-queued batch, from scratch
    step(harness, "d")  # and its check
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == 1 and status["discarded"] == {"same_volunteer": 2}
    assert folds(harness, job) == [(0, 0)]


@pytest.mark.parametrize("hostile", ["check", "first copy"])
def test_a_hostile_copy_loses_to_the_majority_and_the_honest_work_folds(harness, hostile):
    """Two copies that disagree wait for a third (pinned to their version):
    the copy it agrees with is folded, the other outvoted; the hostile one
    cannot break the tie itself."""
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4), **REPLICATED)
    first = step(harness, "a", sign_flipped if hostile == "first copy" else None)
    step(harness, "b", sign_flipped if hostile == "check" else None)
    status = harness.status(job)
    assert status["version"] == 0 and status["awaiting_replica"] == 1 and status["discarded"] == {}
    assert status["counters"]["replicas_disputed"] == 1
    liar = "b" if hostile == "check" else "a"
    third = step(harness, liar, sign_flipped)  # the hostile volunteer leases the tie-breaker itself
    assert (third["batch"], third["base_version"]) == (first["batch"], 0)
    assert harness.status(job)["discarded"] == {"same_volunteer": 1}  # only its own copy goes
    step(harness, "c")  # an honest third copy
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == 1 and status["awaiting_replica"] == 0
    assert status["discarded"] == {"same_volunteer": 1, "outvoted": 1}
    assert folds(harness, job) == [(0, 0)]
    # the folded gradient is the honest one: version 1 is version 0 moved by it
    _, honest = harness.compute(first)
    expected = harness.weights(job, 0)[0] - 0.5 * np.frombuffer(honest, "<f4")[:12].reshape(4, 3)
    assert np.allclose(harness.weights(job, 1)[0], expected, atol=1e-6)


def test_a_third_copy_agreeing_with_neither_discards_all_three(harness):
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4), **REPLICATED)
    step(harness, "a")
    step(harness, "b", sign_flipped)
    step(harness, "c", lambda data: (np.frombuffer(data, "<f4") * 3).astype("<f4").tobytes())
    status = harness.status(job)
    assert status["version"] == 0 and status["awaiting_replica"] == 0
    assert status["discarded"] == {"disagreement": 3}
    step(harness, "d")  # the batch starts over
    step(harness, "e")
    assert harness.status(job)["status"] == "finished" and folds(harness, job) == [(0, 0)]


def test_crash_between_dropping_the_first_copy_and_requeuing_loses_nothing(harness, crashes):
    ds = Dataset.generate(batches=1, batch_size=4)
    job = harness.create_job(ds, **REPLICATED)
    step(harness, "a")
    crashes.before("discards", "discard", "after dropping the first copy")
    task = harness.lease("a")  # a checking its own copy: both are discarded
    assert harness.work(task).status_code == 200
    messages = harness.result_messages(visibility=0)
    with pytest.raises(Crash):
        harness.invoke_fold([m["Body"] for m in messages])
    crashes.heal()
    # the message comes back; its result starts the batch over as a first copy
    harness.deliver()
    status = harness.status(job)
    assert status["awaiting_replica"] == 1 and status["version"] == 0
    step(harness, "c")
    status = harness.status(job)
    assert status["status"] == "finished" and folds(harness, job) == [(0, 0)]


def test_crash_between_queueing_a_third_copy_and_keeping_the_dispute_loses_nothing(harness, crashes):
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4), **REPLICATED)
    step(harness, "a")
    crashes.before("awaiting", "dispute", "after queueing the third copy")
    task = harness.lease("b")
    assert harness.upload(task, sign_flipped(harness.compute(task)[1])).status_code in (200, 204)
    assert harness.complete(task).status_code == 200
    with pytest.raises(Crash):
        harness.invoke_fold([m["Body"] for m in harness.result_messages(visibility=0)])
    crashes.heal()
    harness.deliver()  # b's result again: the dispute is kept, and a second third copy queued
    assert harness.status(job)["awaiting_replica"] == 1 and harness.waiting(harness.job_queue(job)) == 2
    step(harness, "c")  # settles it (the extra copy is dropped once the job has finished)
    status = harness.status(job)
    assert status["status"] == "finished" and folds(harness, job) == [(0, 0)]
    assert status["discarded"] == {"outvoted": 1}


@pytest.mark.parametrize(
    "replication, field",
    [
        ({"copies": 3}, "copies"),
        ({"tolerance": 0}, "tolerance"),
        ({"copies": 2, "quorum": 2}, "quorum"),
        ("two", "replication"),
    ],
)
def test_bad_replication_settings_are_refused(harness, replication, field):
    from tests.harness import job_body

    reply = harness.admin("POST", "/jobs", job_body(Dataset.generate(batches=1, batch_size=4), replication=replication))
    assert reply.status_code == 400 and field in json.loads(reply.body)["Message"], reply.body


def test_an_agreed_copy_over_its_volunteers_share_of_the_update_is_discarded(harness):
    """max_share applies to replicated jobs too: the first copy is what joins the update."""
    job = harness.create_job(
        Dataset.generate(batches=5, batch_size=4),
        aggregation="median",
        gradients_per_update=5,
        replication={"copies": 2, "tolerance": 1e-3},
        staleness=8,
    )
    firsts = [step(harness, v) for v in ("a", "a", "x", "y", "z")]  # a: the first two tasks
    assert step(harness, "b")["batch"] == firsts[0]["batch"]  # agrees: a's first gradient of the update
    assert harness.status(job)["discarded"] == {}
    # agrees too, but a already gave its share (a quarter of 5: 1)
    assert step(harness, "c")["batch"] == firsts[1]["batch"]
    assert harness.status(job)["discarded"] == {"over_share": 2}


def test_a_disputing_checks_redelivered_result_is_a_duplicate(harness):
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4), **REPLICATED)
    step(harness, "a")
    task = harness.lease("b")
    assert harness.upload(task, sign_flipped(harness.compute(task)[1])).status_code in (200, 204)
    assert harness.complete(task).status_code == 200
    bodies = [m["Body"] for m in harness.result_messages(visibility=0)]
    harness.invoke_fold(bodies)
    harness.invoke_fold(bodies)  # SQS delivers at least once
    status = harness.status(job)
    assert status["awaiting_replica"] == 1 and status["discarded"] == {}
    assert status["counters"]["replicas_disputed"] == 1 and status["counters"]["duplicates"] >= 1


ADAPTIVE = {
    "replication": {"copies": 2, "tolerance": 1e-3, "trust_after": 2, "spot_check": 0.25},
    "gradients_per_update": 1,
    "staleness": 8,
    "epochs": 8,
}


def draws(value: float) -> None:
    """What the fold's random draw for a spot check returns from now on."""
    services_module.services().fold.replicas.draw = lambda: value


def test_adaptive_replication_checks_new_identities_then_spot_checks_and_an_outvoted_one_starts_over(harness):
    """trust_after 2: a's results are all checked until two agreed; then each
    with probability 2 / (agreed + 1); outvoted, it is checked on every result again.
    One batch an epoch, so the queue holds one task or its check at a time."""
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4), **ADAPTIVE)
    draws(0.99)  # a draw that skips every check it may
    for _ in range(2):
        step(harness, "a")
        assert harness.status(job)["awaiting_replica"] == 1  # new: checked whatever the draw
        step(harness, "b")
    assert harness.status(job)["version"] == 2
    step(harness, "a")  # agreed 2: checked with probability 2/3, and the draw says no
    status = harness.status(job)
    assert status["version"] == 3 and status["awaiting_replica"] == 0 and status["counters"]["replicas_skipped"] == 1
    draws(0.5)  # under 2/3: checked
    step(harness, "a")
    assert harness.status(job)["awaiting_replica"] == 1
    step(harness, "b")  # agrees: a has 3
    draws(0.0)
    step(harness, "a", sign_flipped)  # a turns hostile, and is spot-checked
    step(harness, "b")
    step(harness, "c")  # the majority: a is outvoted and its record starts over
    status = harness.status(job)
    assert status["version"] == 5 and status["discarded"] == {"outvoted": 1}
    draws(0.99)
    step(harness, "a")
    assert harness.status(job)["awaiting_replica"] == 1  # checked again whatever the draw


@pytest.mark.parametrize(
    "replication, field",
    [
        ({"copies": 1, "trust_after": 3}, "needs copies 2"),
        ({"copies": 2, "trust_after": -1}, "trust_after"),
        ({"copies": 2, "spot_check": 0}, "spot_check"),
        ({"copies": 2, "bar_ratio": 1.5}, "bar_ratio"),
        ({"copies": 2, "bar_after": 0}, "bar_after"),
    ],
)
def test_bad_adaptive_replication_settings_are_refused(harness, replication, field):
    from tests.harness import job_body

    reply = harness.admin("POST", "/jobs", job_body(Dataset.generate(batches=1, batch_size=4), replication=replication))
    assert reply.status_code == 400 and field in json.loads(reply.body)["Message"], reply.body


def test_an_identity_outvoted_too_often_loses_its_standing_and_its_copies_are_discarded(harness):
    """bar_after 2, bar_ratio 0.25: h, outvoted in both of its two judged
    copies by four judges (three are needed), is barred; its next first copy
    is discarded and the batch re-queued, its next check is discarded and
    another check asked for."""
    job = harness.create_job(
        Dataset.generate(batches=1, batch_size=4),
        **{**ADAPTIVE, "replication": {"copies": 2, "tolerance": 1e-3, "bar_ratio": 0.25, "bar_after": 2}},
    )
    for check, tie_break in (("b", "c"), ("d", "e")):
        step(harness, "h", sign_flipped)
        step(harness, check)  # disagrees
        step(harness, tie_break)  # settles it against h
    status = harness.status(job)
    assert status["version"] == 2 and status["discarded"] == {"outvoted": 2}
    step(harness, "h")  # even an honest copy of h's no longer counts
    status = harness.status(job)
    assert status["discarded"] == {"outvoted": 2, "barred": 1} and status["awaiting_replica"] == 0
    step(harness, "a")  # the batch again, as a first copy
    step(harness, "h")  # h leases its check: discarded, and another check queued
    status = harness.status(job)
    assert status["discarded"] == {"outvoted": 2, "barred": 2} and status["awaiting_replica"] == 1
    step(harness, "c")
    assert harness.status(job)["version"] == 3


def test_hostile_identities_at_two_addresses_outvoting_an_honest_one_cannot_bar_it(harness, monkeypatch):
    """The outvoting attack of issue 39: two hostile clients (three identities at two addresses)
    take the check and the tie-break of an honest identity's copies and outvote it every time.
    Their verdicts are two judges (their addresses), not a majority: the honest identity keeps
    its standing."""
    from chalice.local import LambdaEventConverter

    monkeypatch.setenv("DISTINCT_ADDRESSES", "1")
    services_module.reset()
    at = lambda address: monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", address)  # noqa: E731
    job = harness.create_job(
        Dataset.generate(batches=1, batch_size=4),
        **{**ADAPTIVE, "replication": {"copies": 2, "tolerance": 1e-3, "bar_ratio": 0.25, "bar_after": 2}},
    )
    for checker in ("hostile-1", "hostile-3", "hostile-1", "hostile-3"):
        at("198.51.100.1"), step(harness, "honest")
        at("192.0.2.1"), step(harness, checker, sign_flipped)  # the check disagrees
        at("192.0.2.2"), step(harness, "hostile-2", sign_flipped)  # the tie-break sides with it
    status = harness.status(job)
    assert status["discarded"] == {"outvoted": 4}  # the honest copies lost each dispute...
    at("198.51.100.1"), step(harness, "honest")
    assert harness.status(job)["discarded"] == {"outvoted": 4}  # ...but still count: not barred
    assert harness.status(job)["awaiting_replica"] == 1


def test_a_check_computed_on_another_version_than_its_first_copy_is_not_compared(harness):
    """Checks are pinned to their first copy's version, so this takes a result
    whose version was changed on its way to the fold: the fold must not weigh
    two copies of different versions against each other (agreeing or not,
    they say nothing of each other), and discards both."""
    from dataclasses import replace

    from chalicelib.domain.records import Result
    from chalicelib.fold.outcomes import FoldOutcome

    job = harness.create_job(Dataset.generate(batches=2, batch_size=4), **REPLICATED)
    step(harness, "a"), step(harness, "b")
    step(harness, "c")  # one batch's check agrees: version 1
    assert harness.status(job)["version"] == 1
    task = harness.lease("d")  # the other batch's check, pinned to version 0
    assert task["base_version"] == 0
    loss, data = harness.compute(task)
    assert harness.upload(task, data).status_code in (200, 204)
    assert harness.complete(task, loss).status_code == 200
    [message] = harness.result_messages()
    moved = replace(Result.from_json(json.loads(message["Body"])), base_version=1)
    assert services_module.services().fold.handle_batch([moved]) == [FoldOutcome.REPLICA_VERSION]
    assert harness.status(job)["version"] == 1


def test_a_record_from_before_judges_were_kept_keeps_its_verdicts(harness):
    """An identity's record written before barring counted judges (no `judges` set) still bars it
    as it did: its verdicts count as enough judges'."""
    from chalicelib.domain.sections import Replication
    from chalicelib.store.reputations import Reputations, _key

    table = services_module.services()._table
    table.put_item(Item={**_key("j-old", "v-old"), "agreed": 0, "outvoted": 3, "judged": 4})
    standing = Reputations(table).get("j-old", "v-old")
    assert Replication(copies=2).barred(standing)
