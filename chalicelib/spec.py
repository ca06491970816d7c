"""What a job is: its model, dataset layout and hyperparameters, validated once
at creation and immutable afterwards (so every Lambda may cache it)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from chalicelib import validate
from chalicelib.aggregation import Strategy, make_strategy
from chalicelib.codecs import get_codec
from chalicelib.errors import BadRequest
from chalicelib.optimizers import Optimizer, make_optimizer
from chalicelib.weights import WeightSpec, parse_model_json

LOSSES = ("sparseCategoricalCrossentropy", "categoricalCrossentropy", "meanSquaredError")
# bytes per value in a batch file; uint8 is for token ids below 256 (a char
# vocabulary), a quarter of int32's bytes for the volunteers to download
BATCH_DTYPES = {"int32": 4, "float32": 4, "uint8": 1}
MAX_BATCH_BYTES = 64 * 1024 * 1024
# How batch files are stored and served (HTTP Content-Encoding): "gzip" files
# are uploaded compressed, CloudFront serves them as they are, and the
# browser's fetch inflates them, so volunteers download a third of the bytes.
BATCH_ENCODINGS = ("identity", "gzip")
# A fold holds this many gradients in the Lambda's memory, and META lists them
# while they are pending (a DynamoDB item holds 400 KB at most).
MAX_GRADIENTS_PER_UPDATE = 64

JOB_FIELDS = {"name", "model", "loss", "dataset", "optimizer", "gradients_per_update", "staleness",
              "epochs", "lease_seconds", "codec", "max_grad_norm", "aggregation", "seed", "text",
              "replication"}
# Replication compares two volunteers' gradients of the same batch on the same
# version; browsers on different backends (wasm, webgl, cpu) agree to about 1e-4.
DEFAULT_REPLICA_TOLERANCE = 1e-2


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


def _layout(raw: Any, what: str) -> TensorLayout:
    if not isinstance(raw, dict):
        raise BadRequest(f"dataset.{what} must be an object with shape and dtype")
    validate.only_keys(raw, {"shape", "dtype", "one_hot"}, f"dataset.{what}")
    shape = raw.get("shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 4
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1_000_000 for d in shape)):
        raise BadRequest(f"dataset.{what}.shape must be 1-4 positive integers, batch size first")
    dtype = raw.get("dtype")
    if dtype not in BATCH_DTYPES:
        raise BadRequest(f"dataset.{what}.dtype must be one of {list(BATCH_DTYPES)}")
    one_hot = validate.integer(raw, "one_hot", 0, 0, 65_536)
    if one_hot and dtype == "float32":
        raise BadRequest(f"dataset.{what}.one_hot needs integer token ids (int32 or uint8)")
    if one_hot > 256 and dtype == "uint8":
        raise BadRequest(f"dataset.{what}.one_hot is {one_hot}, but uint8 token ids stop at 255: use int32")
    return TensorLayout(tuple(shape), dtype, one_hot)


@dataclass(frozen=True)
class JobSpec:
    name: str
    topology: dict[str, Any]
    weight_specs: tuple[WeightSpec, ...]
    loss: str
    num_batches: int
    x: TensorLayout
    y: TensorLayout
    optimizer: str
    optimizer_settings: dict[str, Any]
    gradients_per_update: int
    staleness: int
    epochs: int
    lease_seconds: int
    codec: str
    max_grad_norm: float
    aggregation: dict[str, Any]  # {"name": ..., settings}
    seed: int = 0
    # For text jobs: character i of the alphabet is token id i, so pages can
    # show what the model writes.
    alphabet: str = ""
    # BOINC-style replication: 2 = each accepted gradient is checked against a
    # second volunteer's on the same version before it may be folded.
    replicas: int = 1
    replica_tolerance: float = DEFAULT_REPLICA_TOLERANCE
    batch_encoding: str = "identity"
    # Local accumulation: volunteers compute a batch's gradient this many
    # samples at a time, so a large batch, which spreads each task's fixed
    # requests over more samples, fits a browser's memory. (0 in specs stored
    # before the field existed: the whole batch at once.)
    micro_batch: int = 0

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def batch_bytes(self) -> int:
        return self.x.nbytes + self.y.nbytes

    @property
    def batch_upload_bytes(self) -> tuple[int, int]:
        """Smallest and largest batch file S3 accepts: exact for identity; for
        gzip, room for what deflate adds to data it cannot shrink (zlib's
        deflateBound is about 0.03 % plus a header and trailer)."""
        if self.batch_encoding == "gzip":
            return 20, self.batch_bytes + self.batch_bytes // 1000 + 64
        return self.batch_bytes, self.batch_bytes

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [s.shape for s in self.weight_specs]

    @property
    def gradient_bytes(self) -> int:
        return get_codec(self.codec).size(self.shapes)

    def build_optimizer(self) -> Optimizer:
        return make_optimizer(self.optimizer, self.optimizer_settings)

    def build_strategy(self) -> Strategy:
        return make_strategy(self.aggregation)

    def public(self) -> dict[str, Any]:
        """What a volunteer needs to compute a gradient (no secrets in a spec)."""
        return {
            "name": self.name, "loss": self.loss, "codec": self.codec, "batch_size": self.batch_size,
            "batch_encoding": self.batch_encoding, "micro_batch": self.micro_batch or self.batch_size,
            "x": {"shape": list(self.x.shape), "dtype": self.x.dtype, "one_hot": self.x.one_hot},
            "y": {"shape": list(self.y.shape), "dtype": self.y.dtype, "one_hot": self.y.one_hot},
            "weights": [s.to_json() for s in self.weight_specs],
            "num_batches": self.num_batches, "epochs": self.epochs,
            "gradients_per_update": self.gradients_per_update, "staleness": self.staleness,
            "optimizer": {"name": self.optimizer, **self.optimizer_settings},
            "aggregation": self.aggregation, "lease_seconds": self.lease_seconds, "replicas": self.replicas,
            "text": {"alphabet": self.alphabet} if self.alphabet else None,
        }

    def to_json(self) -> str:
        data = asdict(self)
        data["weight_specs"] = [s.to_json() for s in self.weight_specs]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        data = json.loads(text)
        data["weight_specs"] = tuple(WeightSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in data["weight_specs"])
        data["x"] = TensorLayout(tuple(data["x"]["shape"]), data["x"]["dtype"], data["x"]["one_hot"])
        data["y"] = TensorLayout(tuple(data["y"]["shape"]), data["y"]["dtype"], data["y"]["one_hot"])
        return cls(**data)


def parse_job(body: Any, max_parameters: int, max_batches: int) -> JobSpec:
    """Validate a POST /jobs body; every mistake is a 400 naming the field."""
    body = validate.body_object(body)
    validate.only_keys(body, JOB_FIELDS, "job")
    model = parse_model_json(body.get("model"), max_parameters)
    loss = body.get("loss", "sparseCategoricalCrossentropy")
    if loss not in LOSSES:
        raise BadRequest(f"loss must be one of {list(LOSSES)}")
    dataset = body.get("dataset")
    if not isinstance(dataset, dict):
        raise BadRequest("dataset must be an object with batches, x and y")
    validate.only_keys(dataset, {"batches", "x", "y", "encoding", "micro_batch"}, "dataset")
    encoding = dataset.get("encoding", "identity")
    if encoding not in BATCH_ENCODINGS:
        raise BadRequest(f"dataset.encoding must be one of {list(BATCH_ENCODINGS)}")
    x, y = _layout(dataset.get("x"), "x"), _layout(dataset.get("y"), "y")
    if x.shape[0] != y.shape[0]:
        raise BadRequest("dataset.x and dataset.y must have the same batch size (first dimension)")
    if x.nbytes + y.nbytes > MAX_BATCH_BYTES:
        raise BadRequest(f"a batch may hold at most {MAX_BATCH_BYTES} bytes")
    micro_batch = validate.integer(dataset, "micro_batch", x.shape[0], 1, x.shape[0])
    if x.shape[0] % micro_batch:
        raise BadRequest(f"dataset.micro_batch ({micro_batch}) must divide the batch size ({x.shape[0]})")
    optimizer = body.get("optimizer", {"name": "adam"})
    if not isinstance(optimizer, dict):
        raise BadRequest("optimizer must be an object with a name and its settings")
    settings = {k: v for k, v in optimizer.items() if k != "name"}
    resolved = make_optimizer(optimizer.get("name"), settings).settings()
    codec = get_codec(body.get("codec", "fp32")).name
    strategy = make_strategy(body.get("aggregation", "mean"))
    alphabet = _alphabet(body.get("text"), x)
    replicas, tolerance = _replication(body.get("replication"))
    return JobSpec(
        name=validate.text(body, "name", "job"),
        topology=model.topology,
        weight_specs=tuple(model.specs),
        loss=loss,
        num_batches=validate.integer(dataset, "batches", None, 1, max_batches),
        x=x, y=y,
        optimizer=optimizer["name"],
        optimizer_settings=resolved,
        gradients_per_update=validate.integer(body, "gradients_per_update", 1, 1, MAX_GRADIENTS_PER_UPDATE),
        staleness=validate.integer(body, "staleness", 4, 0, 1000),
        epochs=validate.integer(body, "epochs", 1, 1, 10_000),
        lease_seconds=validate.integer(body, "lease_seconds", 120, 10, 43_200),
        codec=codec,
        max_grad_norm=validate.number(body, "max_grad_norm", 1e4, 1e-6, 1e12),
        aggregation={"name": strategy.name, **strategy.settings()},
        seed=validate.integer(body, "seed", 0, 0, 2**31 - 1),
        alphabet=alphabet,
        replicas=replicas,
        replica_tolerance=tolerance,
        batch_encoding=encoding,
        micro_batch=micro_batch,
    )


def _replication(raw: Any) -> tuple[int, float]:
    """{"copies": 1 or 2, "tolerance": relative L2 difference two copies may have}."""
    if raw is None:
        return 1, DEFAULT_REPLICA_TOLERANCE
    if not isinstance(raw, dict):
        raise BadRequest("replication must be an object with copies (1 or 2) and an optional tolerance")
    validate.only_keys(raw, {"copies", "tolerance"}, "replication")
    copies = validate.integer(raw, "copies", 1, 1, 2)
    return copies, validate.number(raw, "tolerance", DEFAULT_REPLICA_TOLERANCE, 1e-9, 1.0)


def _alphabet(raw: Any, x: TensorLayout) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, dict) or set(raw) != {"alphabet"} or not isinstance(raw["alphabet"], str):
        raise BadRequest("text must be an object with an alphabet string")
    if not x.one_hot or len(raw["alphabet"]) != x.one_hot:
        raise BadRequest("text.alphabet needs one character per token id (dataset.x.one_hot of them)")
    return raw["alphabet"]
