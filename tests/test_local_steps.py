"""Local steps: a task covers H consecutive batches; the volunteer runs H
steps of its own optimizer from the version it leased and uploads the
pseudo-gradient θ_leased − θ_after; the fold applies the outer optimizer."""

import json
import time

import numpy as np
import pytest

from chalicelib.domain.codecs import get_codec
from tests.harness import Dataset, job_body, softmax_loss_and_grad, token_payload


def local_steps(harness, task, learning_rate: float, steps: int | None = None):
    """What a volunteer computes: H plain SGD steps (or the first `steps` of
    the task's batches), then θ_leased − θ_after."""
    start = [w.copy() for w in harness.load_model(task["model_url"])]
    weights, losses = [w.copy() for w in start], []
    bsz, feats = task["spec"]["dataset"]["x"]["shape"]
    for url in task["batch_urls"][:steps]:
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
    job = harness.create_job(
        ds,
        local_steps={"steps": 3, "optimizer": {"name": "sgd", "learning_rate": 0.5}},
        optimizer={"name": "sgd", "learning_rate": 1.0},
        staleness=0,
    )
    sizes, samples = [], []
    while (task := harness.lease()) is not None:
        assert task["spec"]["local_steps"] == {
            "steps": 3,
            "min_steps": 3,
            "target_seconds": 20.0,
            "keep_state": False,
            "decay_to": 1.0,
            "optimizer": {"name": "sgd", "learning_rate": 0.5},
        }
        assert task["local_learning_rate"] == 0.5  # no decay: the optimizer's own, whatever the version
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
    assert status["samples"] == 28  # every batch's 4 samples, not one batch's per task


def test_a_lease_names_its_results_tag_and_the_results_its_base_version_folded(harness):
    """What a page needs to tell a version made of its own moves alone (frontend/src/trajectory.js)."""
    from chalicelib.domain.wire import result_tag

    harness.create_job(Dataset.generate(batches=4, batch_size=4), gradients_per_update=2, staleness=4)
    first, second = harness.lease("a"), harness.lease("b")
    assert "base_folded" not in first and first["result_tag"] != second["result_tag"]  # version 0 folded nothing
    assert len(first["result_tag"]) == 16 and token_payload(first)["lease_id"] != first["result_tag"]
    for task in (first, second):
        harness.work(task)
    harness.deliver()
    third = harness.lease("a")
    assert third["base_version"] == 1
    assert sorted(third["base_folded"]) == sorted([first["result_tag"], second["result_tag"]])
    # the tag is the lease's, hashed: a page's own tags name its own results
    assert all(t["result_tag"] == result_tag(token_payload(t)["lease_id"]) for t in (first, second))


def test_a_check_pinned_to_an_older_version_names_no_fold(harness):
    """A replica's check is computed on its first copy's version; the newest fold is not that version's."""
    harness.create_job(
        Dataset.generate(batches=2, batch_size=4),
        replication={"copies": 2, "tolerance": 1e-3},
        gradients_per_update=1,
        staleness=8,
    )
    firsts = [harness.lease(v) for v in ("a", "b")]
    for task in firsts:
        harness.work(task)
    harness.deliver()
    check = harness.lease("c")
    harness.work(check)
    harness.deliver()
    assert harness.status(check["job_id"])["version"] == 1
    pinned = harness.lease("d")
    assert pinned["base_version"] == 0 and "base_folded" not in pinned


@pytest.mark.parametrize(
    "local, field",
    [
        ({"steps": 0}, "local_steps.steps"),
        ({"steps": 2, "pace": 1}, "pace"),
        ({"steps": 2, "optimizer": {"name": "lamb"}}, "lamb"),
        ([], "local_steps"),
    ],
)
def test_bad_local_steps_are_refused(harness, local, field):
    reply = harness.admin("POST", "/jobs", job_body(Dataset.generate(batches=2, batch_size=4), local_steps=local))
    assert reply.status_code == 400 and field in json.loads(reply.body)["Message"], reply.body


def test_local_steps_take_whole_batches(harness):
    body = job_body(Dataset.generate(batches=2, batch_size=4), local_steps={"steps": 2})
    body["dataset"]["micro_batch"] = 2
    reply = harness.admin("POST", "/jobs", body)
    assert reply.status_code == 400 and b"micro_batch" in reply.body


RANGE = {"steps": 4, "min_steps": 1, "target_seconds": 5, "optimizer": {"name": "sgd", "learning_rate": 0.5}}


def timed(harness, job: str, *names: str, seconds_per_step: float = 1e-3) -> None:
    """As if the server had timed each of these identities' last task of the job at this pace
    (a fast one: its next lease's budget is every step)."""
    from chalicelib.services import services

    for name in names:
        services().lease_slots.paces.timed(job, harness.volunteer_id(name), time.time() - seconds_per_step, 1)


def range_job(harness, batches: int, k: int, **extra) -> str:
    """A job of RANGE's steps (1 to 4 a task), folded by plain SGD at 1, K = k, staleness 0."""
    return harness.create_job(
        Dataset.generate(batches=batches, batch_size=4),
        local_steps=RANGE,
        optimizer={"name": "sgd", "learning_rate": 1.0},
        gradients_per_update=k,
        staleness=0,
        **extra,
    )


@pytest.mark.parametrize("fold_groups", [1, 4])
def test_volunteers_choose_their_steps_and_the_fold_weights_each_result_by_them(harness, fold_groups):
    """One update of 12 tasks, each trained on 1 to 4 of its batches: the new
    version is w0 − Σ steps × Δ / Σ steps (outer SGD, learning rate 1),
    whether one fold sums them or a fold in parts."""
    job = range_job(harness, 48, 12, fold_groups=fold_groups)
    w0 = harness.weights(job, 0)
    timed(harness, job, *(f"v{i}" for i in range(12)))  # each may report every step
    tasks = [harness.lease(f"v{i}") for i in range(12)]
    weighted, steps_total = [np.zeros_like(w) for w in w0], 0
    for task in tasks:
        steps = task["batch"] % 4 + 1
        loss, data, after = local_steps(harness, task, 0.5, steps)
        assert harness.upload(task, data).status_code in (200, 204)
        assert harness.complete(task, loss, steps=steps).status_code == 200
        weighted = [acc + steps * (a - b) for acc, a, b in zip(weighted, w0, after)]
        steps_total += steps
    harness.deliver()
    status = harness.status(job)
    assert status["version"] == 1 and status["samples"] == status["history"][-1]["samples"] == steps_total * 4
    for ours, w, acc in zip(harness.weights(job, 1), w0, weighted):
        np.testing.assert_allclose(ours, w - acc / steps_total, atol=1e-6)


def test_one_identity_claiming_every_step_gets_at_most_max_share_of_the_updates_weight(harness):
    """Steps are a volunteer's claim: a result claiming 4 steps beside two of 1 would weigh 4 of 6.
    With max_share 0.5 the fold lowers it to half the update's weight (2 of 4), and its credit
    follows: its samples count as the weight kept."""
    from chalicelib.services import services

    job = range_job(harness, 12, 3, max_share=0.5)
    w0 = harness.weights(job, 0)
    moves, claims = [], {"greedy": 4, "a": 1, "b": 1}
    timed(harness, job, *claims)  # a fast last task (or one answered at once): a budget of every step
    for name, steps in claims.items():
        task = harness.lease(name)
        loss, data, after = local_steps(harness, task, 0.5, steps)
        assert harness.upload(task, data).status_code in (200, 204)
        assert harness.complete(task, loss, steps=steps).status_code == 200
        moves.append([a - b for a, b in zip(w0, after)])
    harness.deliver()
    weights = [2.0, 1.0, 1.0]  # greedy's 4 lowered to the others' total: half of the update
    for ours, w, *deltas in zip(harness.weights(job, 1), w0, *moves):
        np.testing.assert_allclose(ours, w - sum(k * d for k, d in zip(weights, deltas)) / 4, atol=1e-6)
    earned = dict((v, s) for v, _, s in services().meta.get(job).last_fold.earned)
    assert earned[harness.volunteer_id("greedy")] == 2 * 4 and earned[harness.volunteer_id("a")] == 4


def test_steps_outside_the_tasks_range_are_refused_and_the_lease_lives_on(harness):
    ds = Dataset.generate(batches=5, batch_size=4)  # two tasks: batches 0-3, and batch 4 alone
    job = harness.create_job(ds, local_steps={**RANGE, "min_steps": 2})
    tasks = sorted((harness.lease("a"), harness.lease("b")), key=lambda t: t["batch"])
    for task, wrong, right in ((tasks[0], (1, 5, 0, "3", 2.5, True), 2), (tasks[1], (2,), 1)):
        loss, data, _ = local_steps(harness, task, 0.5, right)
        assert harness.upload(task, data).status_code in (200, 204)
        for steps in wrong:
            reply = harness.complete(task, loss, steps=steps)
            assert reply.status_code == 400 and b"steps" in reply.body, (steps, reply.body)
        assert harness.complete(task, loss, steps=right).status_code == 200
    harness.deliver()
    assert harness.status(job)["samples"] == 3 * 4


def test_steps_must_be_the_whole_task_unless_the_job_gives_a_range(harness):
    fixed = harness.create_job(Dataset.generate(batches=3, batch_size=4), local_steps={"steps": 3})
    plain = harness.create_job(Dataset.generate(batches=1, batch_size=4))
    for task in (harness.lease("a"), harness.lease("b")):
        wrong, right = (2, 3) if task["job_id"] == fixed else (2, 1)
        loss, data = harness.compute(task) if task["job_id"] == plain else local_steps(harness, task, 0.01)[:2]
        assert harness.upload(task, data).status_code in (200, 204)
        assert harness.complete(task, loss, steps=wrong).status_code == 400
        assert harness.complete(task, loss, steps=right).status_code == 200


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"local_steps": {"steps": 2, "min_steps": 3}}, "local_steps.min_steps"),
        ({"local_steps": {"steps": 2, "min_steps": 0}}, "local_steps.min_steps"),
        ({"local_steps": {"steps": 2, "min_steps": 1, "target_seconds": 0}}, "local_steps.target_seconds"),
        ({"local_steps": {"steps": 2, "min_steps": 1}, "aggregation": "median"}, "min_steps"),
        ({"local_steps": {"steps": 2, "min_steps": 1}, "replication": {"copies": 2}}, "replication"),
        ({"local_steps": {"steps": 2, "keep_state": "yes"}}, "local_steps.keep_state"),
        ({"local_steps": {"steps": 2, "decay_to": -0.1}}, "local_steps.decay_to"),
        ({"local_steps": {"steps": 2, "decay_to": 1.5}}, "local_steps.decay_to"),
        ({"local_steps": {"steps": 2, "decay_to": "half"}}, "local_steps.decay_to"),
    ],
)
def test_bad_ranges_of_steps_are_refused(harness, overrides, field):
    reply = harness.admin("POST", "/jobs", job_body(Dataset.generate(batches=2, batch_size=4), **overrides))
    assert reply.status_code == 400 and field in json.loads(reply.body)["Message"], reply.body


def test_the_inner_learning_rate_falls_along_a_cosine_over_the_jobs_versions(harness):
    """decay_to 0.1: a task leased at version v of the 4 planned (8 batches,
    2 steps a task, K = 1) trains at lr × (0.1 + 0.9 × (1 + cos(π v / 4)) / 2),
    and the volunteer's own steps at that rate are what the fold applies."""
    ds = Dataset.generate(batches=8, batch_size=4)
    job = harness.create_job(
        ds,
        local_steps={"steps": 2, "decay_to": 0.1, "optimizer": {"name": "sgd", "learning_rate": 0.4}},
        optimizer={"name": "sgd", "learning_rate": 1.0},
        staleness=0,
    )
    rates = {}
    while (task := harness.lease()) is not None:
        rates[task["base_version"]] = task["local_learning_rate"]
        loss, data, after = local_steps(harness, task, task["local_learning_rate"])
        assert harness.upload(task, data).status_code in (200, 204)
        assert harness.complete(task, loss).status_code == 200
        harness.deliver()
        for ours, theirs in zip(harness.weights(job, harness.status(job)["version"]), after):
            np.testing.assert_allclose(ours, theirs, atol=1e-6)
    expected = {v: 0.4 * (0.1 + 0.9 * (1 + np.cos(np.pi * v / 4)) / 2) for v in range(4)}
    assert rates.keys() == expected.keys()
    for v, rate in rates.items():
        assert rate == pytest.approx(expected[v], rel=1e-12), (v, rates)
    assert rates[0] == pytest.approx(0.4) and rates[2] == pytest.approx(0.22)
    assert harness.status(job)["status"] == "finished"


def test_the_cli_flags_make_the_local_steps_the_api_validates(harness):
    """`crowdtrain create --local-steps ...` writes what jobs/schema.py reads back."""
    from crowdtrain.cli import _hyper, parser

    args = parser().parse_args(
        [
            "create",
            "--local-steps",
            "8",
            "--local-learning-rate",
            "0.02",
            "--local-decay-to",
            "0.1",
            "--keep-local-state",
        ]
    )
    local = _hyper(args)["local_steps"]
    assert local == {
        "steps": 8,
        "min_steps": 8,
        "target_seconds": args.target_seconds,
        "keep_state": True,
        "decay_to": 0.1,
        "optimizer": {"name": "adam", "learning_rate": 0.02},
    }
    job = harness.create_job(Dataset.generate(batches=16, batch_size=4), local_steps=local)
    assert harness.status(job)["spec"]["local_steps"]["decay_to"] == 0.1
    assert harness.lease()["local_learning_rate"] == 0.02  # version 0: the top of the cosine


def test_a_lease_of_the_default_job_costs_at_most_1500_bytes_per_trained_sample(harness):
    """The demo's job at `crowdtrain create`'s defaults, leased: its version (model.json and
    weights, fetched whole), its batches (as stored, gzip-encoded, as the edge sends them) and
    its upload, over the samples the task trains. A volunteer training alone fetches no version
    after its first (frontend/src/trajectory.js); this counts one every task, as in a crowd."""
    import gzip

    from crowdtrain.api import post_form
    from crowdtrain.cli import char_lstm_job, parser
    from tests.harness import BUCKET, PUBLIC

    spec, weights, batches = char_lstm_job(parser().parse_args(["create", "--batches", "64"]))
    assert spec["local_steps"]["steps"] == 32 and spec["codec"] == "fp16" and spec["local_steps"]["keep_state"]
    assert spec["optimizer"] == {"name": "sgd", "learning_rate": 1.0} and spec["gradients_per_update"] == 1
    created = json.loads(harness.admin("POST", "/jobs", spec).body)
    post_form(created["upload"]["weights"], weights)
    for b, data in enumerate(batches):
        post_form(
            created["upload"]["batches"],
            gzip.compress(data, mtime=0),
            key=f"{created['upload']['batch_key_prefix']}batch-{b:06d}.bin",
        )
    assert harness.admin("POST", f"/jobs/{created['job_id']}/start").status_code == 200
    task = harness.lease()

    def size(url: str) -> int:
        return harness.s3.head_object(Bucket=BUCKET, Key=url[len(PUBLIC) :])["ContentLength"]

    version = size(task["model_url"]) + size(task["model_url"].rsplit("/", 1)[0] + "/weights.bin")
    down = version + sum(size(url) for url in task["batch_urls"])
    samples = len(task["batch_urls"]) * spec["dataset"]["x"]["shape"][0]
    per_sample = (down + task["upload_bytes"]) / samples
    assert task["upload_bytes"] == 2 * 148_096  # fp16: the LSTM(128)'s parameters, 2 bytes each
    assert per_sample <= 1500, per_sample


def test_the_server_sets_each_leases_step_budget_from_its_own_timing_and_a_claim_can_only_lower_it(harness):
    """issue 39: a first lease may report the least steps (the server has timed nothing yet); a claim
    above its budget is refused; the server times the task from lease to completion, and the next
    lease's budget is what fits target_seconds at that pace (a slow identity: fewer steps)."""
    job = range_job(harness, 40, 1)
    task = harness.lease("new")
    assert task["steps"] == 1  # RANGE's least
    loss, data, _ = local_steps(harness, task, 0.5, 1)
    assert harness.upload(task, data).status_code in (200, 204)
    refused = harness.complete(task, loss, steps=4)
    assert refused.status_code == 400 and b"between 1 and 1 for this lease" in refused.body
    assert harness.complete(task, loss, steps=1).status_code == 200
    # the server's timing (a fraction of a second for the step) fits every step into 5 s
    assert harness.lease("new")["steps"] == 4
    timed(harness, job, "slow", seconds_per_step=2.0)  # 5 s at 2 s a step: 2 steps
    assert harness.lease("slow")["steps"] == 2


def test_a_pipelined_identitys_pace_is_timed_from_its_previous_completion(harness):
    """A page leases its next task while one computes: that lease's clock runs during the task
    before, so the server times a task from its lease or the identity's previous completion,
    whichever came later (else its pace would read about twice too slow)."""
    from chalicelib.services import services

    job = range_job(harness, 40, 1)
    first, second = harness.lease("piped"), harness.lease("piped")  # both leased at once
    time.sleep(1.0)
    for task in (first, second):
        loss, data, _ = local_steps(harness, task, 0.5, 1)
        assert harness.upload(task, data).status_code in (200, 204)
        assert harness.complete(task, loss, steps=1).status_code == 200
        if task is first:
            time.sleep(0.2)
    pace = services().lease_slots.paces.get(job, harness.volunteer_id("piped"))
    assert pace is not None and pace < 0.7, pace  # about 0.2 s since the first's completion, not 1.2 s
