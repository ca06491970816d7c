"""The job document's schema: the one place a job is validated, whether it
comes from POST /jobs or back from the stored SPEC item. Every mistake is a
400 naming the field; the checks are chalicelib/domain/validate.py's."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from chalicelib.domain import section_schema as sections
from chalicelib.domain import validate
from chalicelib.domain.codecs import get_codec
from chalicelib.domain.errors import BadRequest
from chalicelib.domain.models import parse_model
from chalicelib.domain.optimizers import make_optimizer
from chalicelib.domain.sections import Replication
from chalicelib.domain.spec import DEFAULT_LEASE_SECONDS, JobSpec
from chalicelib.domain.strategies import RunningSum, make_strategy

LOSSES = ("sparseCategoricalCrossentropy", "categoricalCrossentropy", "meanSquaredError")
# A fold holds this many gradients in the Lambda's memory, and META lists them
# while they are pending (a DynamoDB item holds 400 KB at most).
MAX_GRADIENTS_PER_UPDATE = 64
# The job document's fields: JobSpec's, where the model's topology and weights
# come as one `model` document and the alphabet as `text`.
DOCUMENT_NAMES = {"topology": "model", "weight_specs": "model", "alphabet": "text"}
JOB_FIELDS = tuple(dict.fromkeys(DOCUMENT_NAMES.get(f.name, f.name) for f in fields(JobSpec)))
# The fewest gradients an update under a robust rule may take (a median of 5 outvotes 2).
MIN_ROBUST_GRADIENTS = 5
# A job's weight in the share of leases, at most this many times another's.
MAX_PRIORITY = 100
# Under a robust rule, one volunteer identity or one source address may give
# at most this share of an update unless the job says otherwise.
DEFAULT_ROBUST_SHARE = 0.25
# Message groups one job's results may be spread over (each a fold running in parallel).
MAX_FOLD_GROUPS = 64
# One lease, heartbeats included, must end within SQS's 12 hours of
# visibility per receive: a lease of at most 12 hours less 10 minutes leaves
# room for the receive and a last heartbeat's margin.
MAX_LEASE_SECONDS = 12 * 3600 - 600
# Stored specs were validated against the deployment's limits when created.
UNLIMITED = 2**62


# The share of the fold Lambda's memory its tensors may take (the rest: the
# runtime, boto3, numpy, S3 bodies in flight).
FOLD_TENSOR_SHARE = 0.8


def parse_job(
    body: Any, max_parameters: int, max_batches: int, fold_memory_bytes: int | None = None, default_fold_groups: int = 1
) -> JobSpec:
    """Validate a job document (POST /jobs); every mistake is a 400 naming the
    field. With `fold_memory_bytes`, a job whose fold would not fit is a 400.
    `default_fold_groups` (the deploy's, sized for its crowd) applies to a job
    that names none and can be folded in parts."""
    body = validate.body_object(body)
    validate.only_keys(body, JOB_FIELDS, "job")
    topology, weight_specs = parse_model(body.get("model"), max_parameters)
    loss = body.get("loss", "sparseCategoricalCrossentropy")
    if loss not in LOSSES:
        raise BadRequest(f"loss must be one of {list(LOSSES)}")
    dataset = sections.dataset(body.get("dataset"), max_batches)
    optimizer = make_optimizer(body.get("optimizer", {"name": "adam"}))
    strategy = make_strategy(body.get("aggregation", "mean"))
    k = validate.integer(body, "gradients_per_update", 1, 1, MAX_GRADIENTS_PER_UPDATE)
    replication = sections.replication(body.get("replication"))
    fold_groups = _fold_groups(body, strategy, replication, default_fold_groups)
    if fold_memory_bytes is not None:
        _check_fold_memory(sum(s.size for s in weight_specs), k, strategy, optimizer, fold_memory_bytes)
    spec = JobSpec(
        name=validate.text(body, "name", "job"),
        topology=topology,
        weight_specs=weight_specs,
        loss=loss,
        dataset=dataset,
        optimizer={"name": optimizer.name, **optimizer.settings()},
        aggregation={"name": strategy.name, **strategy.settings()},
        gradients_per_update=k,
        staleness=validate.integer(body, "staleness", 4, 0, 1000),
        epochs=validate.integer(body, "epochs", 1, 1, 10_000),
        lease_seconds=validate.integer(body, "lease_seconds", DEFAULT_LEASE_SECONDS, 10, MAX_LEASE_SECONDS),
        codec=get_codec(body.get("codec", "fp32")).name,
        max_grad_norm=validate.number(body, "max_grad_norm", 1e4, 1e-6, 1e12),
        seed=validate.integer(body, "seed", 0, 0, 2**31 - 1),
        replication=replication,
        alphabet=sections.alphabet(body.get("text"), dataset.x),
        local_steps=sections.local_steps(body.get("local_steps"), dataset, strategy, replication),
        fold_groups=fold_groups,
        evaluation=sections.evaluation(body.get("evaluation"), dataset, max_batches),
        max_share=_max_share(body, strategy, fold_groups),
        credit=validate.flag(body, "credit", True),
        synchronous=validate.flag(body, "synchronous", False),
        priority=validate.integer(body, "priority", 1, 1, MAX_PRIORITY),
    )
    _check_robust(spec, strategy)
    return spec


def _check_robust(spec: JobSpec, strategy: Any) -> None:
    """A robust rule applies to every update: K large enough to outvote a
    minority, and an epoch's tasks a multiple of K, so that its last update
    is never a handful of gradients (one hostile volunteer holding the last
    lease would otherwise be a whole update: bench/poison.py's tail attack)."""
    if not strategy.robust:
        return
    k, tasks = spec.gradients_per_update, spec.tasks_per_epoch
    if k < MIN_ROBUST_GRADIENTS:
        raise BadRequest(
            f"aggregation {strategy.name} needs gradients_per_update of at least "
            f"{MIN_ROBUST_GRADIENTS}, so that each update outvotes a few hostile gradients"
        )
    if tasks % k:
        per_task = f" of {spec.steps} batches" if spec.steps > 1 else ""
        raise BadRequest(
            f"aggregation {strategy.name} needs an epoch's tasks ({tasks}{per_task}) to be a multiple "
            f"of gradients_per_update ({k}), so that its last update has {k} gradients too: use "
            f"{tasks - tasks % k} or {tasks + k - tasks % k} tasks"
        )


def _max_share(body: dict[str, Any], strategy: Any, fold_groups: int) -> float:
    """How much of one update one identity or address may give (JobSpec.max_share):
    by default a quarter under a robust rule, except in a fold in parts."""
    default = DEFAULT_ROBUST_SHARE if strategy.robust and fold_groups == 1 else 1.0
    share = validate.number(body, "max_share", default, 0.01, 1.0)
    if share < 1 and fold_groups > 1:
        raise BadRequest(
            "max_share below 1 needs fold_groups 1: a partial sum is folded whole, so the fold "
            "cannot leave one volunteer's share of it out"
        )
    return share


def _fold_groups(body: dict[str, Any], strategy: Any, replication: Replication, default: int = 1) -> int:
    """A fold in parts sums results in several places: only a running-sum
    rule can be summed so, and a replicated batch's two copies must meet in
    one place (so the deploy's default applies only where both hold)."""
    if "fold_groups" not in body:
        return min(default, MAX_FOLD_GROUPS) if isinstance(strategy, RunningSum) and replication.copies == 1 else 1
    groups = validate.integer(body, "fold_groups", 1, 1, MAX_FOLD_GROUPS)
    if groups > 1 and not isinstance(strategy, RunningSum):
        raise BadRequest(
            f"fold_groups above 1 sums each update in parts, which {strategy.name} cannot be: "
            f"use mean or clipped_mean, or fold_groups 1"
        )
    if groups > 1 and replication.copies > 1:
        raise BadRequest("fold_groups above 1 does not combine with replication: use one or the other")
    return groups


def _check_fold_memory(parameters: int, k: int, strategy: Any, optimizer: Any, memory: int) -> None:
    """400 unless an update fits the fold: the gradients the strategy holds at
    once (2 for a running mean, 2K + 1 for a median), the weights before and
    after, and the optimizer's state before and after, 4 bytes a value."""
    arrays = strategy.gradients_held(k) + 2 + 2 * optimizer.slot_count()
    need, room = 4 * parameters * arrays, int(FOLD_TENSOR_SHARE * memory)
    if need > room:
        raise BadRequest(
            f"the fold would need about {need / 2**20:,.0f} MB for {strategy.name} with "
            f"gradients_per_update {k} on {parameters:,} parameters ({arrays} arrays of "
            f"{4 * parameters / 2**20:,.1f} MB), but has {room / 2**20:,.0f} MB for tensors "
            f"({FOLD_TENSOR_SHARE:.0%} of {memory / 2**20:,.0f} MB): use mean or clipped_mean, "
            f"which keep a running sum, a smaller gradients_per_update, or a smaller model"
        )


def load_spec(text: str) -> JobSpec:
    """A stored SPEC item's document, read back through the same schema."""
    return parse_job(json.loads(text), UNLIMITED, UNLIMITED)
