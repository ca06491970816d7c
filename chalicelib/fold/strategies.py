"""How K gradients of one update become one: a pluggable strategy.

Each rule is a sibling class with one method, `aggregate`, chosen per job by
name (with its settings): `mean`, `median`, `trimmed_mean`, `clipped_mean`.
The fold validates every gradient (exact size, finite, norm bound) before a
strategy sees it, so strategies only combine. The robust rules bound what a
minority of hostile volunteers can do to an update: a sign-flipped or scaled
gradient moves a median or trimmed mean little, and a clipped mean caps each
volunteer's pull at `clip_norm`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from chalicelib.named import Named, choose
from chalicelib.validate import Range

Gradient = list[np.ndarray]


def _stacked(gradients: Sequence[Gradient]) -> list[np.ndarray]:
    """Tensor i of every gradient, stacked on a new first axis."""
    return [np.stack(tensors) for tensors in zip(*gradients)]


class Strategy(Named):
    def aggregate(self, gradients: Sequence[Gradient]) -> Gradient:
        """Combine gradients (each a list of tensors in manifest order)."""
        raise NotImplementedError


class Mean(Strategy):
    """The plain average: what one worker's batch of K x B samples would give."""

    name = "mean"

    def aggregate(self, gradients):
        # summed in place in arrival order: no stacked copy, and the same bits on every retry
        out = [np.array(t, dtype=np.float32, copy=True) for t in gradients[0]]
        for gradient in gradients[1:]:
            for acc, t in zip(out, gradient):
                acc += t
        scale = np.float32(1.0 / len(gradients))
        for acc in out:
            acc *= scale
        return out


class Median(Strategy):
    """Coordinate-wise median: robust while fewer than half are hostile."""

    name = "median"

    def aggregate(self, gradients):
        return [np.median(t, axis=0).astype(np.float32) for t in _stacked(gradients)]


class TrimmedMean(Strategy):
    """Coordinate-wise mean after dropping the `trim` fraction of largest and
    of smallest values (at least one each side once there are three or more)."""

    name = "trimmed_mean"
    limits = {"trim": Range(0, 0.5, high_open=True)}

    def __init__(self, trim: float = 0.2):
        self.trim = float(trim)

    def aggregate(self, gradients):
        k = len(gradients)
        cut = min(max(math.floor(self.trim * k), 1 if k >= 3 and self.trim > 0 else 0), (k - 1) // 2)
        out = []
        for t in _stacked(gradients):
            ordered = np.sort(t, axis=0)
            out.append(np.mean(ordered[cut:k - cut], axis=0, dtype=np.float32))
        return out


class ClippedMean(Strategy):
    """Mean of gradients each scaled down to a global L2 norm of at most `clip_norm`."""

    name = "clipped_mean"
    limits = {"clip_norm": Range(0, 1e12, low_open=True)}

    def __init__(self, clip_norm: float):
        self.clip_norm = float(clip_norm)

    def aggregate(self, gradients):
        clipped = []
        for gradient in gradients:
            norm = math.sqrt(sum(float(np.sum(np.square(t, dtype=np.float64))) for t in gradient))
            factor = np.float32(min(1.0, self.clip_norm / norm)) if norm > 0 else np.float32(1)
            clipped.append([t * factor for t in gradient])
        return Mean().aggregate(clipped)


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Mean, Median, TrimmedMean, ClippedMean)}


def make_strategy(raw: Any) -> Strategy:
    """A strategy from a job's `aggregation`: a name, or {"name": ..., settings}."""
    return choose(STRATEGIES, raw, "aggregation")
