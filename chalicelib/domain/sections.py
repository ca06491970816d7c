"""The parts of a job's spec, as typed records: the dataset's layout,
replication, held-out evaluation and local steps (domain/spec.py puts them
together; domain/schema.py builds them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# bytes per value in a batch file; uint8 is for token ids below 256 (a char
# vocabulary), a quarter of int32's bytes for the volunteers to download
BATCH_DTYPES = {"int32": 4, "float32": 4, "uint8": 1}


@dataclass(frozen=True)
class TensorLayout:
    """Shape and dtype of one half (x or y) of every batch file."""

    shape: tuple[int, ...]
    dtype: str
    one_hot: int = 0  # for token ids: the vocabulary size the page one-hot encodes to

    @property
    def nbytes(self) -> int:
        size = BATCH_DTYPES[self.dtype]
        for dim in self.shape:
            size *= dim
        return size

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "one_hot": self.one_hot}


@dataclass(frozen=True)
class Dataset:
    """The batch files: how many, their layout, how they are stored, and the
    micro-batch volunteers compute them in (local accumulation: a large batch,
    which spreads each task's fixed requests over more samples, fits a
    browser's memory)."""

    batches: int
    x: TensorLayout
    y: TensorLayout
    encoding: str = "identity"  # HTTP Content-Encoding of the stored files: identity or gzip
    micro_batch: int = 0

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def batch_bytes(self) -> int:
        return self.x.nbytes + self.y.nbytes

    @property
    def upload_bytes(self) -> tuple[int, int]:
        """Smallest and largest batch file S3 accepts: exact for identity; for
        gzip, room for what deflate adds to data it cannot shrink (zlib's
        deflateBound is about 0.03 % plus a header and trailer)."""
        if self.encoding == "gzip":
            return 20, self.batch_bytes + self.batch_bytes // 1000 + 64
        return self.batch_bytes, self.batch_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "encoding": self.encoding,
            "micro_batch": self.micro_batch,
            "x": self.x.to_json(),
            "y": self.y.to_json(),
        }


@dataclass(frozen=True)
class Replication:
    """BOINC-style replication: with 2 copies, each accepted gradient is
    checked against a second volunteer's on the same version before it may be
    folded; the two may differ by `tolerance` (relative L2).

    Adaptive (BOINC's adaptive replication), with `trust_after` N > 0: an
    identity's results are all checked until N of them agreed; after that
    each is checked with probability N / (agreed + 1), never below `spot_check`,
    so checks cost less as an identity's record grows. An identity outvoted
    in a dispute loses its record and is checked on every result again.

    Barring: an identity outvoted in more than `bar_ratio` of its judged
    copies (once it has `bar_after` of them), by the verdicts of at least
    `bar_judges` different judges (the source addresses of the copies that
    outvoted it, where addresses count), loses its standing in the job: its
    results are discarded from then on. An honest identity is outvoted only
    where hostile ones check it and settle its dispute, so hostile
    identities, outvoted wherever an honest one checks or settles, cross the
    ratio first; and hostile identities behind fewer than `bar_judges`
    addresses cannot bar anyone however often they outvote it
    (bench/poison.py)."""

    copies: int = 1
    tolerance: float = 1e-2
    trust_after: int = 0  # 0: every result is checked
    spot_check: float = 0.1
    bar_ratio: float = 0.25  # 0: never barred
    bar_after: int = 4
    bar_judges: int = 3

    def barred(self, standing: Any) -> bool:
        """Whether an identity's record (store/reputations.py's Standing) has lost it its standing."""
        return (
            self.bar_ratio > 0
            and standing.judged >= self.bar_after
            and standing.outvoted > self.bar_ratio * standing.judged
            and standing.judges >= self.bar_judges
        )

    def check_rate(self, agreed: int) -> float:
        """The probability that a result of an identity with `agreed` agreeing results is checked."""
        if self.trust_after == 0:
            return 1.0
        return min(1.0, max(self.spot_check, self.trust_after / (agreed + 1)))  # 1 while agreed < N


@dataclass(frozen=True)
class Evaluation:
    """Held-out evaluation: `batches` batch files kept apart (stored after the
    training ones, never trained on). Every `every` versions, and at the end,
    the version's loss on them (and accuracy, for a classifier) is computed by
    volunteers (forward passes only) and accepted once `copies` different
    volunteers agree: losses within `tolerance` (relative), accuracies within
    ACCURACY_TOLERANCE. Volunteers report their training losses themselves;
    this one no single volunteer can forge."""

    batches: int
    every: int = 10
    copies: int = 2
    tolerance: float = 1e-3


# Two accuracies agree within this (one of 100 held-out samples).
ACCURACY_TOLERANCE = 0.01


def cosine_decay(progress: float, decay_to: float) -> float:
    """The share of a learning rate left at `progress` (0 to 1) along a
    cosine from 1 down to `decay_to` (1: none)."""
    return decay_to + (1 - decay_to) * (1 + math.cos(math.pi * min(1.0, max(0.0, progress)))) / 2


@dataclass(frozen=True)
class LocalSteps:
    """Local steps: a task covers `steps` consecutive batches, on which the
    volunteer runs its own `optimizer` (TF.js's: started fresh each task, or
    with `keep_state` kept by the volunteer across its tasks of the job, as
    DiLoCo's workers keep their inner AdamW state across rounds) from
    the version it leased, and uploads θ_leased − θ_after (the pseudo-
    gradient) instead of one gradient; the fold's optimizer is then the outer
    one (sgd with learning rate 1 averages the volunteers' models, momentum
    with Nesterov is DiLoCo's).

    With `min_steps` below `steps` the volunteer picks how many of the task's
    batches it trains on, from its own step time, so that a task takes about
    `target_seconds`: a slow device does fewer steps and its result still
    arrives within the staleness bound. The fold then weights each
    pseudo-gradient by its steps (a weighted mean).

    With `decay_to` below 1 the inner learning rate falls along a cosine
    over the job, to that fraction of the optimizer's by its last planned
    version: late rounds then take small steps, so the volunteers' models
    drift less apart (docs/benchmarks.md §4 measures what that gains at
    equal samples: little)."""

    steps: int
    optimizer: dict[str, Any]  # {"name": ..., resolved settings}
    min_steps: int
    target_seconds: float = 20.0
    keep_state: bool = False
    decay_to: float = 1.0

    def learning_rate(self, progress: float) -> float:
        """The inner learning rate at `progress` (0 to 1) through the job."""
        return self.optimizer["learning_rate"] * cosine_decay(progress, self.decay_to)

    @property
    def varies(self) -> bool:
        """Whether volunteers choose their steps per task."""
        return self.min_steps < self.steps
