"""The job document's schema: the one place a job is validated, whether it
comes from POST /jobs or back from the stored SPEC item. Every mistake is a
400 naming the field; the checks are chalicelib/domain/validate.py's."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.domain import validate
from chalicelib.domain.codecs import get_codec
from chalicelib.domain.errors import BadRequest
from chalicelib.domain.models import parse_model
from chalicelib.domain.optimizers import make_optimizer
from chalicelib.domain.sections import BATCH_DTYPES, Dataset, Evaluation, LocalSteps, Replication, TensorLayout
from chalicelib.domain.spec import DEFAULT_LEASE_SECONDS, JobSpec
from chalicelib.domain.strategies import RunningSum, make_strategy

LOSSES = ("sparseCategoricalCrossentropy", "categoricalCrossentropy", "meanSquaredError")
MAX_BATCH_BYTES = 64 * 1024 * 1024
# How batch files are stored and served (HTTP Content-Encoding): "gzip" files
# are uploaded compressed, CloudFront serves them as they are, and the
# browser's fetch inflates them, so volunteers download a third of the bytes.
BATCH_ENCODINGS = ("identity", "gzip")
# A fold holds this many gradients in the Lambda's memory, and META lists them
# while they are pending (a DynamoDB item holds 400 KB at most).
MAX_GRADIENTS_PER_UPDATE = 64
JOB_FIELDS = (
    "name",
    "model",
    "loss",
    "dataset",
    "optimizer",
    "gradients_per_update",
    "staleness",
    "epochs",
    "lease_seconds",
    "codec",
    "max_grad_norm",
    "aggregation",
    "seed",
    "text",
    "replication",
    "local_steps",
    "fold_groups",
    "evaluation",
    "max_share",
    "credit",
    "synchronous",
)
MAX_LOCAL_STEPS = 1024
# The fewest gradients an update under a robust rule may take (a median of 5 outvotes 2).
MIN_ROBUST_GRADIENTS = 5
# Under a robust rule, one volunteer identity or one source address may give
# at most this share of an update unless the job says otherwise.
DEFAULT_ROBUST_SHARE = 0.25
# Held-out batches one evaluation task covers (a volunteer downloads them all),
# and the most volunteers an evaluation may ask to agree.
MAX_HELD_OUT_BATCHES = 64
MAX_EVALUATION_COPIES = 3
# The longest a volunteer should aim to spend on one task of a range of local steps.
MAX_TARGET_SECONDS = 3600
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


def parse_job(body: Any, max_parameters: int, max_batches: int, fold_memory_bytes: int | None = None) -> JobSpec:
    """Validate a job document (POST /jobs); every mistake is a 400 naming the
    field. With `fold_memory_bytes`, a job whose fold would not fit is a 400."""
    body = validate.body_object(body)
    validate.only_keys(body, JOB_FIELDS, "job")
    topology, weight_specs = parse_model(body.get("model"), max_parameters)
    loss = body.get("loss", "sparseCategoricalCrossentropy")
    if loss not in LOSSES:
        raise BadRequest(f"loss must be one of {list(LOSSES)}")
    dataset = _dataset(body.get("dataset"), max_batches)
    optimizer = make_optimizer(body.get("optimizer", {"name": "adam"}))
    strategy = make_strategy(body.get("aggregation", "mean"))
    k = validate.integer(body, "gradients_per_update", 1, 1, MAX_GRADIENTS_PER_UPDATE)
    replication = _replication(body.get("replication"))
    fold_groups = _fold_groups(body, strategy, replication)
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
        alphabet=_alphabet(body.get("text"), dataset.x),
        local_steps=_local_steps(body.get("local_steps"), dataset, strategy, replication),
        fold_groups=fold_groups,
        evaluation=_evaluation(body.get("evaluation"), dataset, max_batches),
        max_share=_max_share(body, strategy, fold_groups),
        credit=validate.flag(body, "credit", True),
        synchronous=validate.flag(body, "synchronous", False),
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


def _fold_groups(body: dict[str, Any], strategy: Any, replication: Replication) -> int:
    """A fold in parts sums results in several places: only a running-sum
    rule can be summed so, and a replicated batch's two copies must meet in
    one place."""
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


def _layout(raw: Any, what: str) -> TensorLayout:
    if not isinstance(raw, dict):
        raise BadRequest(f"dataset.{what} must be an object with shape and dtype")
    validate.only_keys(raw, ("shape", "dtype", "one_hot"), f"dataset.{what}")
    shape = raw.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 4
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1_000_000 for d in shape)
    ):
        raise BadRequest(f"dataset.{what}.shape must be 1-4 positive integers, batch size first")
    dtype = raw.get("dtype")
    if dtype not in BATCH_DTYPES:
        raise BadRequest(f"dataset.{what}.dtype must be one of {list(BATCH_DTYPES)}")
    one_hot = validate.integer(raw, "one_hot", 0, 0, 65_536, f"dataset.{what}.")
    if one_hot and dtype == "float32":
        raise BadRequest(f"dataset.{what}.one_hot needs integer token ids (int32 or uint8)")
    if one_hot > 256 and dtype == "uint8":
        raise BadRequest(f"dataset.{what}.one_hot is {one_hot}, but uint8 token ids stop at 255: use int32")
    return TensorLayout(tuple(shape), dtype, one_hot)


def _dataset(raw: Any, max_batches: int) -> Dataset:
    if not isinstance(raw, dict):
        raise BadRequest("dataset must be an object with batches, x and y")
    validate.only_keys(raw, ("batches", "x", "y", "encoding", "micro_batch"), "dataset")
    encoding = raw.get("encoding", "identity")
    if encoding not in BATCH_ENCODINGS:
        raise BadRequest(f"dataset.encoding must be one of {list(BATCH_ENCODINGS)}")
    x, y = _layout(raw.get("x"), "x"), _layout(raw.get("y"), "y")
    if x.shape[0] != y.shape[0]:
        raise BadRequest("dataset.x and dataset.y must have the same batch size (first dimension)")
    if x.nbytes + y.nbytes > MAX_BATCH_BYTES:
        raise BadRequest(f"a batch may hold at most {MAX_BATCH_BYTES} bytes")
    micro_batch = validate.integer(raw, "micro_batch", x.shape[0], 1, x.shape[0], "dataset.")
    if x.shape[0] % micro_batch:
        raise BadRequest(f"dataset.micro_batch ({micro_batch}) must divide the batch size ({x.shape[0]})")
    return Dataset(validate.integer(raw, "batches", None, 1, max_batches, "dataset."), x, y, encoding, micro_batch)


def _evaluation(raw: Any, dataset: Dataset, max_batches: int) -> Evaluation | None:
    """{"batches": held-out files after the training ones, "every": versions between evaluations,
    "copies": volunteers who must agree, "tolerance": relative loss difference they may have}."""
    if raw is None:
        return None
    raw = validate.body_object(raw, "evaluation")
    validate.only_keys(raw, ("batches", "every", "copies", "tolerance"), "evaluation")
    batches = validate.integer(raw, "batches", None, 1, MAX_HELD_OUT_BATCHES, "evaluation.")
    if dataset.batches + batches > max_batches:
        raise BadRequest(f"dataset.batches plus evaluation.batches may be at most {max_batches}")
    return Evaluation(
        batches,
        validate.integer(raw, "every", Evaluation.every, 1, 10**6, "evaluation."),
        validate.integer(raw, "copies", Evaluation.copies, 1, MAX_EVALUATION_COPIES, "evaluation."),
        validate.number(raw, "tolerance", Evaluation.tolerance, 1e-9, 1.0, "evaluation."),
    )


def _replication(raw: Any) -> Replication:
    """{"copies": 1 or 2, "tolerance": relative L2 difference two copies may
    have, "trust_after": agreeing results before an identity is only
    spot-checked (0: never), "spot_check": the least share of its results then
    checked, "bar_ratio" and "bar_after": when an often outvoted identity loses its standing}."""
    if raw is None:
        return Replication()
    if not isinstance(raw, dict):
        raise BadRequest("replication must be an object with copies (1 or 2) and an optional tolerance")
    validate.only_keys(
        raw, ("copies", "tolerance", "trust_after", "spot_check", "bar_ratio", "bar_after"), "replication"
    )
    replication = Replication(
        validate.integer(raw, "copies", 1, 1, 2, "replication."),
        validate.number(raw, "tolerance", Replication.tolerance, 1e-9, 1.0, "replication."),
        validate.integer(raw, "trust_after", 0, 0, 100_000, "replication."),
        validate.number(raw, "spot_check", Replication.spot_check, 0.01, 1.0, "replication."),
        validate.number(raw, "bar_ratio", Replication.bar_ratio, 0.0, 1.0, "replication."),
        validate.integer(raw, "bar_after", Replication.bar_after, 1, 100_000, "replication."),
    )
    if replication.trust_after and replication.copies < 2:
        raise BadRequest("replication.trust_after needs copies 2: it decides which results get their second copy")
    return replication


def _local_steps(raw: Any, dataset: Dataset, strategy: Any, replication: Replication) -> LocalSteps | None:
    """{"steps": H, "optimizer": the volunteer's own optimizer, TF.js's (default sgd 0.01),
    "keep_state" (default false: the optimizer starts fresh each task), "decay_to" (default 1:
    a constant inner learning rate; below 1, a cosine decay to that fraction of it), and for a range of
    steps "min_steps" (default H) and "target_seconds" (default 20)}.
    A range weights results by their steps: only a running-sum rule takes
    weights, and two copies of one task may differ in their steps."""
    if raw is None:
        return None
    raw = validate.body_object(raw, "local_steps")
    validate.only_keys(
        raw, ("steps", "min_steps", "target_seconds", "optimizer", "keep_state", "decay_to"), "local_steps"
    )
    steps = validate.integer(raw, "steps", None, 1, MAX_LOCAL_STEPS, "local_steps.")
    least = validate.integer(raw, "min_steps", steps, 1, steps, "local_steps.")
    target = validate.number(raw, "target_seconds", LocalSteps.target_seconds, 1, MAX_TARGET_SECONDS, "local_steps.")
    inner = make_optimizer(raw.get("optimizer", {"name": "sgd", "learning_rate": 0.01}))
    if dataset.micro_batch != dataset.batch_size:
        raise BadRequest("local_steps takes one optimizer step per batch: leave dataset.micro_batch unset")
    if least < steps and not isinstance(strategy, RunningSum):
        raise BadRequest(
            f"local_steps.min_steps below steps weights each result by its steps, which {strategy.name} "
            f"cannot: use mean or clipped_mean, or one number of steps"
        )
    if least < steps and replication.copies > 1:
        raise BadRequest(
            "local_steps.min_steps below steps does not combine with replication: two copies of a task "
            "may train on different numbers of its batches"
        )
    keep = validate.flag(raw, "keep_state", False, "local_steps.")
    decay_to = validate.number(raw, "decay_to", LocalSteps.decay_to, 0, 1, "local_steps.")
    return LocalSteps(steps, {"name": inner.name, **inner.settings()}, least, target, keep, decay_to)


def _alphabet(raw: Any, x: TensorLayout) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, dict) or set(raw) != {"alphabet"} or not isinstance(raw["alphabet"], str):
        raise BadRequest("text must be an object with an alphabet string")
    if not x.one_hot or len(raw["alphabet"]) != x.one_hot:
        raise BadRequest("text.alphabet needs one character per token id (dataset.x.one_hot of them)")
    return raw["alphabet"]


# -- the model: a TF.js layers-model document (as TF.js or the converter saves it) --
