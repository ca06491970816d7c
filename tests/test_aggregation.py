"""Aggregation strategies: the mean and its robust siblings."""
import numpy as np
import pytest

from chalicelib.fold.strategies import make_strategy
from chalicelib.errors import BadRequest


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


@pytest.mark.parametrize("rule,bound", [
    ("median", 0.2),
    ({"name": "trimmed_mean", "trim": 0.3}, 0.2),  # trims 2 of 7 each side: both attackers go
    ({"name": "clipped_mean", "clip_norm": 3.0}, 1.5),  # each attacker's pull is capped, not removed
])
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


@pytest.mark.parametrize("raw,message", [("vote", "unknown aggregation"), ({"name": "median", "x": 1}, "unknown median"),
                                         ({"name": "trimmed_mean", "trim": 0.5}, "'trim'"),
                                         ({"name": "clipped_mean"}, "clip_norm"), (7, "unknown aggregation")])
def test_bad_aggregation_settings(raw, message):
    with pytest.raises(BadRequest, match=message):
        make_strategy(raw)
