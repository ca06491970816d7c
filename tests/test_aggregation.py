"""Aggregation strategies: the mean and its robust siblings."""

import numpy as np
import pytest

from chalicelib.domain.errors import BadRequest
from chalicelib.domain.schema import MIN_ROBUST_GRADIENTS
from chalicelib.domain.strategies import make_strategy
from tests.harness import Dataset


def honest_and_hostile(k_honest=5, hostile=None, seed=0):
    rng = np.random.default_rng(seed)
    true = [np.ones((3, 2), np.float32), np.full(4, -0.5, np.float32)]
    grads = [[t + rng.normal(scale=0.05, size=t.shape).astype(np.float32) for t in true] for _ in range(k_honest)]
    return true, grads + (hostile or [])


def error(result, true):
    return max(float(np.abs(r - t).max()) for r, t in zip(result, true))


def test_mean_is_the_average():
    a = [np.array([1.0, 2.0], np.float32)]
    b = [np.array([3.0, 6.0], np.float32)]
    [out] = make_strategy("mean").aggregate([a, b])
    assert out.dtype == np.float32 and out.tolist() == [2.0, 4.0]


@pytest.mark.parametrize(
    "rule,bound",
    [
        ("median", 0.2),
        ({"name": "trimmed_mean", "trim": 0.3}, 0.2),  # trims 2 of 7 each side: both attackers go
        ({"name": "clipped_mean", "clip_norm": 3.0}, 1.5),  # each attacker's pull is capped, not removed
    ],
)
def test_robust_rules_resist_a_sign_flipped_scaled_minority(rule, bound):
    true, grads = honest_and_hostile()
    attack = [[-20 * t for t in true], [-20 * t for t in true]]
    naive = make_strategy("mean").aggregate(grads + attack)
    assert error(naive, true) > 5  # the mean is dragged far off
    assert error(make_strategy(rule).aggregate(grads + attack), true) < bound


def test_trimmed_mean_drops_the_extremes_per_coordinate():
    grads = [[np.array([v], np.float32)] for v in (1, 2, 3, 100, -100)]
    assert make_strategy({"name": "trimmed_mean", "trim": 0.2}).aggregate(grads)[0].tolist() == [2.0]
    # three gradients: one dropped each side, the median remains
    assert make_strategy({"name": "trimmed_mean", "trim": 0.1}).aggregate(grads[:3])[0].tolist() == [2.0]


def test_clipping_caps_each_gradient_norm():
    big = [np.array([30.0, 40.0], np.float32)]  # norm 50
    small = [np.array([0.3, 0.4], np.float32)]  # norm 0.5
    [out] = make_strategy({"name": "clipped_mean", "clip_norm": 5}).aggregate([big, small])
    np.testing.assert_allclose(out, [(3 + 0.3) / 2, (4 + 0.4) / 2], rtol=1e-6)


@pytest.mark.parametrize(
    "raw,message",
    [
        ("vote", "unknown aggregation"),
        ({"name": "median", "x": 1}, "unknown median"),
        ({"name": "trimmed_mean", "trim": 0.5}, "'trim'"),
        ({"name": "clipped_mean"}, "clip_norm"),
        (7, "unknown aggregation"),
    ],
)
def test_bad_aggregation_settings(raw, message):
    with pytest.raises(BadRequest, match=message):
        make_strategy(raw)


@pytest.mark.parametrize(
    "aggregation", ["median", {"name": "trimmed_mean", "trim": 0.2}, {"name": "clipped_mean", "clip_norm": 1.0}]
)
def test_a_robust_rule_applies_to_every_update_or_the_job_is_refused(harness, aggregation):
    """K at least MIN_ROBUST_GRADIENTS and an epoch's tasks a multiple of K: the
    epoch's last update is never a lone (hostile) gradient (bench/poison.py's tail attack)."""
    from tests.harness import job_body

    def reply(batches, k, **extra):
        body = job_body(
            Dataset.generate(batches=batches, batch_size=4), aggregation=aggregation, gradients_per_update=k, **extra
        )
        return harness.admin("POST", "/jobs", body)

    few = reply(10, MIN_ROBUST_GRADIENTS - 1)
    assert few.status_code == 400 and b"at least 5" in few.body
    tail = reply(11, 5)
    assert (
        tail.status_code == 400
        and b"multiple of gradients_per_update (5)" in tail.body
        and b"use 10 or 15" in tail.body
    )
    steps = reply(22, 5, local_steps={"steps": 2, "optimizer": {"name": "sgd", "learning_rate": 0.1}})
    assert steps.status_code == 400 and b"epoch's tasks (11 of 2 batches)" in steps.body
    assert reply(10, 5).status_code == 201
    assert (
        harness.admin(
            "POST", "/jobs", job_body(Dataset.generate(batches=11, batch_size=4), gradients_per_update=2)
        ).status_code
        == 201
    )  # mean: any K


def test_every_update_of_a_robust_job_folds_k_gradients(harness):
    ds = Dataset.generate(batches=10, batch_size=4)
    job = harness.create_job(ds, aggregation="median", gradients_per_update=5, epochs=2, staleness=10)
    turn = 0  # five volunteers in turn: one may give only a quarter of an update (max_share)
    while (task := harness.lease(f"v{turn % 5}")) is not None:
        assert harness.work(task).status_code == 200
        harness.deliver()
        turn += 1
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == 4  # 2 epochs x 10 tasks / K
    assert all(entry["samples"] == 5 * 4 for entry in status["history"][1:])
