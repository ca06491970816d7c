"""The job document's sections (dataset, held-out evaluation, replication,
local steps, text), each validated into its record: domain/schema.py's
parse_job calls them; every mistake is a 400 naming the field."""

from __future__ import annotations

from typing import Any

from chalicelib.domain import validate
from chalicelib.domain.errors import BadRequest
from chalicelib.domain.optimizers import make_optimizer
from chalicelib.domain.sections import BATCH_DTYPES, Dataset, Evaluation, LocalSteps, Replication, TensorLayout
from chalicelib.domain.strategies import RunningSum

MAX_BATCH_BYTES = 64 * 1024 * 1024
# How batch files are stored and served (HTTP Content-Encoding): "gzip" files
# are uploaded compressed, CloudFront serves them as they are, and the
# browser's fetch inflates them, so volunteers download a third of the bytes.
BATCH_ENCODINGS = ("identity", "gzip")
MAX_LOCAL_STEPS = 1024
# Held-out batches one evaluation task covers (a volunteer downloads them all),
# and the most volunteers an evaluation may ask to agree.
MAX_HELD_OUT_BATCHES = 64
MAX_EVALUATION_COPIES = 3
# The longest a volunteer should aim to spend on one task of a range of local steps.
MAX_TARGET_SECONDS = 3600


def layout(raw: Any, what: str) -> TensorLayout:
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


def dataset(raw: Any, max_batches: int) -> Dataset:
    if not isinstance(raw, dict):
        raise BadRequest("dataset must be an object with batches, x and y")
    validate.only_keys(raw, ("batches", "x", "y", "encoding", "micro_batch"), "dataset")
    encoding = raw.get("encoding", "identity")
    if encoding not in BATCH_ENCODINGS:
        raise BadRequest(f"dataset.encoding must be one of {list(BATCH_ENCODINGS)}")
    x, y = layout(raw.get("x"), "x"), layout(raw.get("y"), "y")
    if x.shape[0] != y.shape[0]:
        raise BadRequest("dataset.x and dataset.y must have the same batch size (first dimension)")
    if x.nbytes + y.nbytes > MAX_BATCH_BYTES:
        raise BadRequest(f"a batch may hold at most {MAX_BATCH_BYTES} bytes")
    micro_batch = validate.integer(raw, "micro_batch", x.shape[0], 1, x.shape[0], "dataset.")
    if x.shape[0] % micro_batch:
        raise BadRequest(f"dataset.micro_batch ({micro_batch}) must divide the batch size ({x.shape[0]})")
    return Dataset(validate.integer(raw, "batches", None, 1, max_batches, "dataset."), x, y, encoding, micro_batch)


def evaluation(raw: Any, dataset: Dataset, max_batches: int) -> Evaluation | None:
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


def replication(raw: Any) -> Replication:
    """{"copies": 1 or 2, "tolerance": relative L2 difference two copies may
    have, "trust_after": agreeing results before an identity is only
    spot-checked (0: never), "spot_check": the least share of its results then
    checked, "bar_ratio", "bar_after" and "bar_judges": when an often outvoted identity loses its standing}."""
    if raw is None:
        return Replication()
    if not isinstance(raw, dict):
        raise BadRequest("replication must be an object with copies (1 or 2) and an optional tolerance")
    validate.only_keys(
        raw, ("copies", "tolerance", "trust_after", "spot_check", "bar_ratio", "bar_after", "bar_judges"), "replication"
    )
    replication = Replication(
        validate.integer(raw, "copies", 1, 1, 2, "replication."),
        validate.number(raw, "tolerance", Replication.tolerance, 1e-9, 1.0, "replication."),
        validate.integer(raw, "trust_after", 0, 0, 100_000, "replication."),
        validate.number(raw, "spot_check", Replication.spot_check, 0.01, 1.0, "replication."),
        validate.number(raw, "bar_ratio", Replication.bar_ratio, 0.0, 1.0, "replication."),
        validate.integer(raw, "bar_after", Replication.bar_after, 1, 100_000, "replication."),
        validate.integer(raw, "bar_judges", Replication.bar_judges, 1, 100, "replication."),
    )
    if replication.trust_after and replication.copies < 2:
        raise BadRequest("replication.trust_after needs copies 2: it decides which results get their second copy")
    return replication


def local_steps(raw: Any, dataset: Dataset, strategy: Any, replication: Replication) -> LocalSteps | None:
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


def alphabet(raw: Any, x: TensorLayout) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, dict) or set(raw) != {"alphabet"} or not isinstance(raw["alphabet"], str):
        raise BadRequest("text must be an object with an alphabet string")
    if not x.one_hot or len(raw["alphabet"]) != x.one_hot:
        raise BadRequest("text.alphabet needs one character per token id (dataset.x.one_hot of them)")
    return raw["alphabet"]


# -- the model: a TF.js layers-model document (as TF.js or the converter saves it) --
