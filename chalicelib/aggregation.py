"""How K gradients of one update become one: a pluggable strategy.

Each rule is a sibling class with one method, `aggregate`, chosen per job by
name. The fold validates every gradient (exact size, finite, norm bound)
before a strategy sees it, so strategies only combine.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from chalicelib.errors import BadRequest

Gradient = list[np.ndarray]


class Strategy:
    name = ""

    def aggregate(self, gradients: Sequence[Gradient]) -> Gradient:
        """Combine gradients (each a list of tensors in manifest order)."""
        raise NotImplementedError


class Mean(Strategy):
    """The plain average: what a single worker's batch of K x B samples gives."""

    name = "mean"

    def aggregate(self, gradients: Sequence[Gradient]) -> Gradient:
        return [np.mean(np.stack(tensors), axis=0, dtype=np.float32) for tensors in zip(*gradients)]


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Mean(),)}


def get_strategy(name: object) -> Strategy:
    if not isinstance(name, str) or name not in STRATEGIES:
        raise BadRequest(f"unknown aggregation {name!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[name]
