"""What a job is, as typed records: its model, dataset layout and
hyperparameters. Built only by jobs/schema.py (from a POST /jobs body or the
stored SPEC item), immutable afterwards, so every Lambda may cache it.

Field names are the JSON document's: `dataset.encoding`, `replication.copies`,
`text.alphabet` mean the same in the request, the stored item, the lease
response (`spec`) and the volunteer page.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.optimizers import Optimizer, make_optimizer
from chalicelib.domain.strategies import Strategy, make_strategy
from chalicelib.domain.codecs import get_codec
from chalicelib.domain.keys import SHARD_NAME
from chalicelib.domain.weights import WeightSpec

# bytes per value in a batch file; uint8 is for token ids below 256 (a char
# vocabulary), a quarter of int32's bytes for the volunteers to download
BATCH_DTYPES = {"int32": 4, "float32": 4, "uint8": 1}
DEFAULT_LEASE_SECONDS = 120


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
        return {"batches": self.batches, "encoding": self.encoding, "micro_batch": self.micro_batch,
                "x": self.x.to_json(), "y": self.y.to_json()}


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
    copies (once it has `bar_after` of them) loses its standing in the job:
    its results are discarded from then on. An honest identity is outvoted
    only where hostile ones check it and settle its dispute, so hostile
    identities, outvoted wherever an honest one checks or settles, cross the
    ratio first (bench/poison.py)."""

    copies: int = 1
    tolerance: float = 1e-2
    trust_after: int = 0  # 0: every result is checked
    spot_check: float = 0.1
    bar_ratio: float = 0.25  # 0: never barred
    bar_after: int = 4

    def barred(self, standing: Any) -> bool:
        """Whether an identity's record (store/reputations.py's Standing) has lost it its standing."""
        return (self.bar_ratio > 0 and standing.judged >= self.bar_after
                and standing.outvoted > self.bar_ratio * standing.judged)

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


@dataclass(frozen=True)
class JobSpec:
    name: str
    topology: dict[str, Any]
    weight_specs: tuple[WeightSpec, ...]
    loss: str
    dataset: Dataset
    optimizer: dict[str, Any]  # {"name": ..., resolved settings}
    aggregation: dict[str, Any]  # likewise
    gradients_per_update: int
    staleness: int
    epochs: int
    lease_seconds: int
    codec: str
    max_grad_norm: float
    seed: int = 0
    replication: Replication = Replication()
    # For text jobs: character i of the alphabet is token id i, so pages can
    # show what the model writes.
    alphabet: str = ""
    local_steps: LocalSteps | None = None
    # Results spread over this many message groups, each summed by its own
    # fold in parallel, the sums added up by middle folds and applied by the
    # job's one top-level fold, an update taking K results or more
    # (fold/partials.py); 1 folds every result in the job's one group.
    fold_groups: int = 1
    evaluation: Evaluation | None = None
    # The largest share of one update's K gradients that one volunteer
    # identity, or one source address, may contribute (jobs/schema.py's
    # default: a quarter under a robust rule, so no one client can outvote a
    # median however many requests it sends; all of it under the mean).
    max_share: float = 1.0
    # Whether identities earn credit for their folded work and the job shows
    # a leaderboard (false: a job without points).
    credit: bool = True
    # Whether the job folds in synchronous rounds: at most K tasks are leased
    # on a version, and the next one waits for the update (leases.py), so
    # that no result is computed on a version older than the one it updates.
    synchronous: bool = False

    @property
    def share_cap(self) -> int:
        """Gradients one identity (or address) may have in one update: at least one."""
        return max(1, int(self.max_share * self.gradients_per_update + 1e-9))

    @property
    def stored_batches(self) -> int:
        """Batch files the job holds: the training ones, then any held-out ones."""
        return self.dataset.batches + (self.evaluation.batches if self.evaluation else 0)

    @property
    def held_out(self) -> range:
        """The held-out batches' numbers (after the training batches)."""
        return range(self.dataset.batches, self.stored_batches)

    def evaluates(self, version: int, finished: bool) -> bool:
        """Whether `version` gets a held-out evaluation: every `every` versions, and the last one."""
        return self.evaluation is not None and (version % self.evaluation.every == 0 or finished)

    @property
    def classifies(self) -> bool:
        """Whether the loss is a classifier's, so that held-out accuracy means something."""
        return self.loss in ("sparseCategoricalCrossentropy", "categoricalCrossentropy")

    @property
    def steps(self) -> int:
        """Batches per task: 1, or the local steps."""
        return self.local_steps.steps if self.local_steps else 1

    @property
    def tasks_per_epoch(self) -> int:
        """Tasks in an epoch: task t covers batches t × steps up to the next task's first."""
        return -(-self.dataset.batches // self.steps)

    @property
    def planned_versions(self) -> int:
        """The versions the job makes if each update takes K results."""
        return -(-self.epochs * self.tasks_per_epoch // self.gradients_per_update)

    def local_learning_rate(self, version: int) -> float:
        """The inner learning rate of a local-steps task leased at `version`."""
        return self.local_steps.learning_rate(version / self.planned_versions)

    def task_batches(self, task: int) -> range:
        return range(task * self.steps, min((task + 1) * self.steps, self.dataset.batches))

    def steps_allowed(self, task: int) -> range:
        """The local steps a result of `task` may report: all its batches, or
        with a range of steps, from the least up to all of them."""
        batches = len(self.task_batches(task))
        least = min(self.local_steps.min_steps, batches) if self.local_steps else batches
        return range(least, batches + 1)

    def weight(self, samples: int) -> int:
        """A result's weight in its update's mean: its steps when volunteers
        choose them (more steps, more pull), else 1 (the plain mean)."""
        return samples // self.dataset.batch_size if self.local_steps and self.local_steps.varies else 1

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [s.shape for s in self.weight_specs]

    @property
    def parameters(self) -> int:
        return sum(s.size for s in self.weight_specs)

    @property
    def gradient_bytes(self) -> int:
        return get_codec(self.codec).size(self.shapes)

    @property
    def weight_bytes(self) -> int:
        return sum(s.nbytes for s in self.weight_specs)

    def build_optimizer(self) -> Optimizer:
        return make_optimizer(self.optimizer)

    def build_strategy(self) -> Strategy:
        return make_strategy(self.aggregation)

    def public(self) -> dict[str, Any]:
        """What a volunteer needs to compute a gradient: the document less the
        topology, with the weights manifest (no secrets in a spec)."""
        document = self.to_json()
        document.pop("model")
        return {**document, "weights": [s.to_json() for s in self.weight_specs], "tasks_per_epoch": self.tasks_per_epoch}

    def to_json(self) -> dict[str, Any]:
        """The job document, every default filled in (jobs/schema.py reads it back)."""
        document = {
            "name": self.name, "loss": self.loss, "codec": self.codec,
            "model": {"modelTopology": self.topology,
                      "weightsManifest": [{"paths": [SHARD_NAME], "weights": [s.to_json() for s in self.weight_specs]}]},
            "dataset": self.dataset.to_json(), "optimizer": self.optimizer, "aggregation": self.aggregation,
            "gradients_per_update": self.gradients_per_update, "staleness": self.staleness, "epochs": self.epochs,
            "lease_seconds": self.lease_seconds, "max_grad_norm": self.max_grad_norm, "seed": self.seed,
            "replication": {"copies": self.replication.copies, "tolerance": self.replication.tolerance,
                            "trust_after": self.replication.trust_after, "spot_check": self.replication.spot_check,
                            "bar_ratio": self.replication.bar_ratio, "bar_after": self.replication.bar_after},
            "fold_groups": self.fold_groups, "max_share": self.max_share, "credit": self.credit,
            "synchronous": self.synchronous,
        }
        if self.alphabet:
            document["text"] = {"alphabet": self.alphabet}
        if self.evaluation:
            document["evaluation"] = {"batches": self.evaluation.batches, "every": self.evaluation.every,
                                      "copies": self.evaluation.copies, "tolerance": self.evaluation.tolerance}
        if self.local_steps:
            document["local_steps"] = {"steps": self.local_steps.steps, "min_steps": self.local_steps.min_steps,
                                       "target_seconds": self.local_steps.target_seconds,
                                       "optimizer": self.local_steps.optimizer,
                                       "keep_state": self.local_steps.keep_state,
                                       "decay_to": self.local_steps.decay_to}
        return document
