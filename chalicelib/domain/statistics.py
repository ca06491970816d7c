"""A version's next weights from an update, where some weights are a layer's
own statistics (BatchNormalization's moving mean and variance; models.py
marks them). Those are not learned by gradient: each volunteer's layer moves
them as it trains, and its result carries the change it made (before minus
after, the sign of a pseudo-gradient). The job's aggregation combines those
changes with the same weights as the rest of the update (a weighted mean by
default, so the statistics become the mean of where the volunteers' layers
took them when the results share a base version) and the fold subtracts that, with no optimizer and no learning
rate: an optimizer's rate, momentum or moments would rescale a statistic.
A variance stays at zero or above whatever the changes sum to."""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

from chalicelib.domain.optimizers import Optimizer, OptimizerState
from chalicelib.domain.weights import WeightSpec

T = TypeVar("T")


def trained(specs: Sequence[WeightSpec], values: Sequence[T]) -> list[T]:
    """The entries of `values` (one per spec) that gradients train: what the optimizer sees."""
    return [value for spec, value in zip(specs, values) if not spec.state]


def initial_state(optimizer: Optimizer, specs: Sequence[WeightSpec], weights: list[np.ndarray]) -> OptimizerState:
    return optimizer.initial_state(trained(specs, weights))


def apply_update(
    optimizer: Optimizer,
    specs: Sequence[WeightSpec],
    weights: list[np.ndarray],
    update: list[np.ndarray],
    state: OptimizerState,
) -> tuple[list[np.ndarray], OptimizerState]:
    """The optimizer's step on the trained weights; each statistic less its aggregated change."""
    moved, state = optimizer.apply(trained(specs, weights), trained(specs, update), state)
    steps = iter(moved)
    out = []
    for spec, weight, change in zip(specs, weights, update):
        if not spec.state:
            out.append(next(steps))
        elif spec.state == "variance":
            out.append(np.maximum(weight - change, 0).astype(np.float32))
        else:
            out.append((weight - change).astype(np.float32))
    return out, state
