"""What a job is, as typed records: its model, dataset layout and
hyperparameters. Built only by jobs/schema.py (from a POST /jobs body or the
stored SPEC item), immutable afterwards, so every Lambda may cache it.

Field names are the JSON document's: `dataset.encoding`, `replication.copies`,
`text.alphabet` mean the same in the request, the stored item, the lease
response (`spec`) and the volunteer page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.domain.codecs import get_codec
from chalicelib.domain.keys import SHARD_NAME
from chalicelib.domain.optimizers import Optimizer, make_optimizer
from chalicelib.domain.sections import Dataset, Evaluation, LocalSteps, Replication
from chalicelib.domain.strategies import Strategy, make_strategy
from chalicelib.domain.weights import WeightSpec

DEFAULT_LEASE_SECONDS = 120


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
    # The job's weight in the running jobs' share of leases (tasks/picker.py):
    # a job of priority 2 gets twice the tasks of one of priority 1.
    priority: int = 1

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
        assert self.local_steps is not None, "only a job with local steps has one"  # answers.py asks only those
        return self.local_steps.learning_rate(version / self.planned_versions)

    def task_batches(self, task: int) -> range:
        return range(task * self.steps, min((task + 1) * self.steps, self.dataset.batches))

    def steps_allowed(self, task: int) -> range:
        """The local steps a result of `task` may report: all its batches, or
        with a range of steps, from the least up to all of them."""
        batches = len(self.task_batches(task))
        least = min(self.local_steps.min_steps, batches) if self.local_steps else batches
        return range(least, batches + 1)

    def budget(self, task: int, seconds_per_step: float | None) -> int:
        """The local steps a lease of `task` may report at most: all its
        batches, or with a range of steps as many as fit `target_seconds` at
        the pace the server timed for the identity's last task (the least,
        until it has one)."""
        allowed = self.steps_allowed(task)
        if not (self.local_steps and self.local_steps.varies):
            return allowed[-1]
        if not seconds_per_step:
            return allowed[0]
        fit = int(self.local_steps.target_seconds / seconds_per_step)
        return max(allowed[0], min(fit, allowed[-1]))

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
        return {
            **document,
            "weights": [s.public() for s in self.weight_specs],
            "tasks_per_epoch": self.tasks_per_epoch,
        }

    def to_json(self) -> dict[str, Any]:
        """The job document, every default filled in (jobs/schema.py reads it back)."""
        document = {
            "name": self.name,
            "loss": self.loss,
            "codec": self.codec,
            "model": {
                "modelTopology": self.topology,
                "weightsManifest": [{"paths": [SHARD_NAME], "weights": [s.to_json() for s in self.weight_specs]}],
            },
            "dataset": self.dataset.to_json(),
            "optimizer": self.optimizer,
            "aggregation": self.aggregation,
            "gradients_per_update": self.gradients_per_update,
            "staleness": self.staleness,
            "epochs": self.epochs,
            "lease_seconds": self.lease_seconds,
            "max_grad_norm": self.max_grad_norm,
            "seed": self.seed,
            "replication": {
                "copies": self.replication.copies,
                "tolerance": self.replication.tolerance,
                "trust_after": self.replication.trust_after,
                "spot_check": self.replication.spot_check,
                "bar_ratio": self.replication.bar_ratio,
                "bar_after": self.replication.bar_after,
                "bar_judges": self.replication.bar_judges,
            },
            "fold_groups": self.fold_groups,
            "max_share": self.max_share,
            "credit": self.credit,
            "synchronous": self.synchronous,
            "priority": self.priority,
        }
        if self.alphabet:
            document["text"] = {"alphabet": self.alphabet}
        if self.evaluation:
            document["evaluation"] = {
                "batches": self.evaluation.batches,
                "every": self.evaluation.every,
                "copies": self.evaluation.copies,
                "tolerance": self.evaluation.tolerance,
            }
        if self.local_steps:
            document["local_steps"] = {
                "steps": self.local_steps.steps,
                "min_steps": self.local_steps.min_steps,
                "target_seconds": self.local_steps.target_seconds,
                "optimizer": self.local_steps.optimizer,
                "keep_state": self.local_steps.keep_state,
                "decay_to": self.local_steps.decay_to,
            }
        return document
