"""The numpy optimizers follow TF.js's tf.train.* step for step."""

import numpy as np
import pytest

from chalicelib.domain.errors import BadRequest
from chalicelib.domain.optimizers import make_optimizer
from tests.tfjs import tfjs

CASES = [
    ("sgd", {"learning_rate": 0.1}),
    ("momentum", {"learning_rate": 0.05, "momentum": 0.9}),
    ("momentum", {"learning_rate": 0.05, "momentum": 0.8, "use_nesterov": True}),
    ("adam", {"learning_rate": 0.01}),
    ("adam", {"learning_rate": 0.003, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-6}),
    ("rmsprop", {"learning_rate": 0.01}),
    ("rmsprop", {"learning_rate": 0.01, "decay": 0.95, "momentum": 0.5, "centered": True}),
]


@pytest.mark.parametrize("name,settings", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_twenty_steps_match_tfjs(name, settings):
    rng = np.random.default_rng(7)
    shapes = [(5, 3), (3,), (2, 2, 2)]
    weights = [rng.normal(size=s).astype(np.float32) for s in shapes]
    grads = [[(rng.normal(size=s) * rng.uniform(0.1, 3)).astype(np.float32) for s in shapes] for _ in range(20)]

    optimizer = make_optimizer({"name": name, **settings})
    state = optimizer.initial_state(weights)
    ours, current = [], weights
    for step_grads in grads:
        current, state = optimizer.apply(current, step_grads, state)
        ours.append(current)
    assert state.step == 20

    resolved = optimizer.settings()
    reference = tfjs(
        "optimize",
        payload={
            "optimizer": name,
            "settings": resolved,
            "shapes": [list(s) for s in shapes],
            "weights": [w.ravel().tolist() for w in weights],
            "grads": [[g.ravel().tolist() for g in step] for step in grads],
        },
    )["steps"]

    worst = 0.0
    for mine, theirs in zip(ours, reference):
        for a, b in zip(mine, theirs):
            worst = max(worst, float(np.max(np.abs(a.ravel() - np.asarray(b, np.float32)))))
    assert worst <= 1e-5, f"{name}: max abs difference {worst}"
    # the weights really moved, so the comparison is not between two copies of the start
    assert float(np.max(np.abs(ours[-1][0] - weights[0]))) > 1e-3


def test_inputs_are_not_modified():
    weights = [np.ones((2, 2), np.float32)]
    optimizer = make_optimizer({"name": "adam"})
    state = optimizer.initial_state(weights)
    optimizer.apply(weights, [np.ones((2, 2), np.float32)], state)
    assert np.all(weights[0] == 1) and np.all(state.slots["m"][0] == 0)


@pytest.mark.parametrize(
    "name,settings,message",
    [
        ("adagrad", {}, "unknown optimizer"),
        ("sgd", {}, "'learning_rate' is required"),
        ("sgd", {"learning_rate": -1}, "must be in"),
        ("sgd", {"learning_rate": float("nan")}, "finite"),
        ("sgd", {"learning_rate": True}, "finite number"),
        ("momentum", {"learning_rate": 0.1}, "'momentum' is required"),
        ("adam", {"beta3": 0.5}, "unknown adam settings"),
        ("rmsprop", {"learning_rate": 0.1, "centered": "yes"}, "true or false"),
    ],
)
def test_bad_settings_are_rejected(name, settings, message):
    with pytest.raises(BadRequest, match=message):
        make_optimizer({"name": name, **settings})
