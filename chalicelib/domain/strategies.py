"""How K gradients of one update become one: a pluggable strategy.

Each rule is a sibling class with one method, `aggregate`, chosen per job by
name (with its settings): `mean`, `median`, `trimmed_mean`, `clipped_mean`.
The fold validates every gradient (exact size, finite, norm bound) before a
strategy sees it, so strategies only combine. The running-sum rules (mean,
clipped mean) also combine in parts: a weighted sum of some gradients and
their total weight, which a fold in parts takes in several places at once
(fold/partials.py). The robust rules bound what a minority of hostile
volunteers can do to an update: a sign-flipped or scaled gradient moves a
median or trimmed mean little, and a clipped mean caps each volunteer's pull
at `clip_norm`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from chalicelib.domain.named import Named, choose
from chalicelib.domain.validate import Range

Gradient = list[np.ndarray]


def _stacked(gradients: Iterable[Gradient]) -> list[np.ndarray]:
    """Tensor i of every gradient, stacked on a new first axis."""
    return [np.stack(tensors) for tensors in zip(*gradients)]


Weighted = tuple[Gradient, float]  # a gradient (or a sum) and its weight


def sum_in_order(weighted: Iterable[Weighted]) -> tuple[Gradient, float]:
    """Gradients (or sums) times their weights, summed in place in arrival
    order, and the total weight: one gradient in memory besides the sum,
    whatever K is, and the same bits on every retry (a weight of 1 leaves a
    gradient's bits as they are)."""
    out: Gradient = []
    total_weight: float = 0
    for gradient, weight in weighted:
        scaled = gradient if weight == 1 else [t * np.float32(weight) for t in gradient]
        if total_weight == 0:
            out = [np.array(t, dtype=np.float32, copy=True) for t in scaled]
        else:
            for acc, t in zip(out, scaled):
                acc += t
        total_weight += weight
    return out, total_weight


def divided(total: Gradient, weight: float) -> Gradient:
    """A sum over its total weight, in place: the (weighted) mean."""
    scale = np.float32(1.0 / weight)
    for acc in total:
        acc *= scale
    return total


class Strategy(Named):
    # A robust rule bounds what a minority of one update's gradients can do,
    # so every update must have its K (jobs/schema.py: K at least
    # MIN_ROBUST_GRADIENTS, an epoch's tasks a multiple of K).
    robust = False

    def aggregate(self, gradients: Iterable[Gradient]) -> Gradient:
        """Combine gradients (each a list of tensors in manifest order), read
        one at a time from the iterable."""
        raise NotImplementedError

    def gradients_held(self, k: int) -> int:
        """How many gradient-sized arrays the rule holds at once for K gradients
        (the fold's memory check at job creation)."""
        raise NotImplementedError


class RunningSum(Strategy):
    """A rule that sums each gradient as it comes (after `prepared`) and
    divides by the total weight: memory independent of K, gradients may
    weigh differently (a pseudo-gradient by its local steps), and an update
    may be summed in parts, in several places, then combined (the sums
    added, their total over their total weight: fold/partials.py)."""

    def prepared(self, gradient: Gradient) -> Gradient:
        """What the rule adds for one gradient."""
        return gradient

    def sum(self, weighted: Iterable[Weighted]) -> tuple[Gradient, float]:
        """The weighted sum of the prepared gradients and the total weight."""
        return sum_in_order((self.prepared(g), w) for g, w in weighted)

    def mean(self, weighted: Iterable[Weighted]) -> Gradient:
        """The weighted mean of the prepared gradients."""
        return divided(*self.sum(weighted))

    def aggregate(self, gradients):
        return self.mean((g, 1) for g in gradients)

    def gradients_held(self, k):
        return 3  # the sum, the gradient being added, its prepared copy


class Mean(RunningSum):
    """The plain average: what one worker's batch of K x B samples would give."""

    name = "mean"

    def gradients_held(self, k):
        return 2  # the sum and the gradient being added (as it is)


class Median(Strategy):
    """Coordinate-wise median: robust while fewer than half are hostile."""

    name = "median"
    robust = True

    def aggregate(self, gradients):
        return [np.median(t, axis=0).astype(np.float32) for t in _stacked(gradients)]

    def gradients_held(self, k):
        return 2 * k + 1  # all K, their stacked copy (median sorts a copy of one tensor at a time), the result


class TrimmedMean(Strategy):
    """Coordinate-wise mean after dropping the `trim` fraction of largest and
    of smallest values (at least one each side once there are three or more)."""

    name = "trimmed_mean"
    robust = True
    limits = {"trim": Range(0, 0.5, high_open=True)}

    def __init__(self, trim: float = 0.2):
        self.trim = float(trim)

    def aggregate(self, gradients):
        gradients = list(gradients)
        k = len(gradients)
        cut = min(max(math.floor(self.trim * k), 1 if k >= 3 and self.trim > 0 else 0), (k - 1) // 2)
        out = []
        for t in _stacked(gradients):
            ordered = np.sort(t, axis=0)
            out.append(np.mean(ordered[cut : k - cut], axis=0, dtype=np.float32))
        return out

    def gradients_held(self, k):
        return 2 * k + 1  # all K, their stacked copy, the result


class ClippedMean(RunningSum):
    """Mean of gradients each scaled down to a global L2 norm of at most `clip_norm`."""

    name = "clipped_mean"
    robust = True
    limits = {"clip_norm": Range(0, 1e12, low_open=True)}

    def __init__(self, clip_norm: float):
        self.clip_norm = float(clip_norm)

    def prepared(self, gradient):
        norm = math.sqrt(sum(float(np.sum(np.square(t, dtype=np.float64))) for t in gradient))
        factor = np.float32(min(1.0, self.clip_norm / norm)) if norm > 0 else np.float32(1)
        return [t * factor for t in gradient]


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Mean, Median, TrimmedMean, ClippedMean)}


def make_strategy(raw: Any) -> Strategy:
    """A strategy from a job's `aggregation`: a name, or {"name": ..., settings}."""
    return choose(STRATEGIES, raw, "aggregation")
