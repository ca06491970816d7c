"""A layer's own statistics (BatchNormalization's moving mean and variance)
through the fold: each result carries the change its volunteer's layer made
to them, the update subtracts the aggregated change with no optimizer, and
the optimizer sees only the weights gradients train (domain/statistics.py)."""

from __future__ import annotations

import copy

import numpy as np

from chalicelib.domain.codecs import get_codec
from chalicelib.domain.models import parse_model
from chalicelib.domain.optimizers import Adam
from chalicelib.domain.statistics import apply_update, initial_state
from chalicelib.domain.weights import WeightSpec
from tests.harness import Dataset, job_body

SPECS = (
    WeightSpec("dense/kernel", (4, 3)),
    WeightSpec("dense/bias", (3,)),
    WeightSpec("norm/gamma", (3,)),
    WeightSpec("norm/beta", (3,)),
    WeightSpec("norm/moving_mean", (3,), state="mean"),
    WeightSpec("norm/moving_variance", (3,), state="variance"),
)


def normalized_model(features: int = 4, classes: int = 3) -> dict:
    """Dense -> BatchNormalization -> softmax, in TF.js's layers format."""
    model = copy.deepcopy(job_body(Dataset.generate(1, 2))["model"])
    dense = model["modelTopology"]["config"]["layers"][0]
    dense["config"]["activation"] = "linear"
    norm = {"class_name": "BatchNormalization", "config": {"name": "norm", "axis": -1, "momentum": 0.99}}
    softmax = {"class_name": "Activation", "config": {"name": "act", "activation": "softmax"}}
    model["modelTopology"]["config"]["layers"] += [norm, softmax]
    model["weightsManifest"][0]["weights"] = [s.to_json() for s in SPECS]
    return model


def initial() -> list[np.ndarray]:
    rng = np.random.default_rng(4)
    return [rng.normal(size=s.shape).astype(np.float32) for s in SPECS[:4]] + [
        np.array([0.1, -0.2, 0.3], np.float32),
        np.array([0.5, 1.0, 2.0], np.float32),
    ]


def test_the_optimizer_moves_trained_weights_and_statistics_move_by_their_change():
    weights, optimizer = initial(), Adam(0.01)
    state = initial_state(optimizer, SPECS, weights)
    assert [len(slot) for slot in state.slots.values()] == [4, 4]  # no moments for statistics
    update = [np.full(s.shape, 0.25, np.float32) for s in SPECS]
    update[5] = np.array([0.1, 2.0, -0.5], np.float32)  # more than the second variance holds
    moved, after = apply_update(optimizer, SPECS, weights, update, state)
    want, _ = Adam(0.01).apply(weights[:4], update[:4], Adam(0.01).initial_state(weights[:4]))
    for got, expected in zip(moved[:4], want):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(moved[4], weights[4] - 0.25)  # the whole change: no rate, no moments
    np.testing.assert_allclose(moved[5], [0.4, 0.0, 2.5])  # a variance never below zero
    assert after.step == 1 and [len(slot) for slot in after.slots.values()] == [4, 4]


def test_a_version_holds_the_mean_of_where_the_volunteers_layers_took_the_statistics(harness):
    """Two results of one update over the API: version 1's moving statistics are version 0's less
    the mean change, its trained weights Adam's step on the mean gradient; the spec the pages get
    marks which is which."""
    ds = Dataset.generate(2, 8)
    model = normalized_model()
    job = harness.create_job(
        ds, initial=initial(), model=model, gradients_per_update=2, optimizer={"name": "adam", "learning_rate": 0.01}
    )
    tasks = [harness.lease("a"), harness.lease("b")]
    assert [w.get("state", "") for w in tasks[0]["spec"]["weights"]] == ["", "", "", "", "mean", "variance"]
    rng = np.random.default_rng(5)
    sent = [[rng.normal(scale=0.05, size=s.shape).astype(np.float32) for s in SPECS] for _ in tasks]
    for task, tensors in zip(tasks, sent):
        assert harness.upload(task, get_codec("fp32").encode(tensors)).status_code in (200, 204)
        assert harness.complete(task).status_code == 200
    harness.deliver()
    assert harness.status(job)["version"] == 1
    before, after = harness.weights(job, 0), harness.weights(job, 1)
    mean = [(a + b) / 2 for a, b in zip(*sent)]
    for k in (4, 5):
        np.testing.assert_allclose(after[k], before[k] - mean[k], rtol=1e-6, atol=1e-7)
    want, _ = Adam(0.01).apply(list(before[:4]), mean[:4], Adam(0.01).initial_state(list(before[:4])))
    for got, expected in zip(after[:4], want):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_the_api_marks_only_batchnormalizations_moving_statistics():
    _, specs = parse_model(normalized_model(), 10**6)
    assert [s.state for s in specs] == ["", "", "", "", "mean", "variance"]
    assert "state" not in str([s.to_json() for s in specs])  # TF.js's manifest stays TF.js's
