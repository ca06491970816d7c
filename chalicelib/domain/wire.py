"""The volunteer routes' bodies and answers, typed: each route parses its
JSON body once into a request record here (a clear 400 for anything else),
and each answer is a record serialized in one place (`json()`), so the
lease path works on fields, never on dicts checked key by key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from chalicelib.domain import validate
from chalicelib.domain.records import DataUsed
from chalicelib.domain.section_schema import MAX_LOCAL_STEPS

# Why a volunteer hands a task back (POST /tasks/release): its compute failed,
# its batches or model did not download, no TF.js backend of its browser can
# train the model, or it was stopped.
RELEASE_REASONS = ("compute_error", "download_error", "no_backend", "stopped")
# The TF.js backends a completion may say computed it (counted per job by the fold).
BACKENDS = ("webgpu", "wasm", "webgl", "cpu")
# The most bytes a completion may say its page used since the one before (1 TB: more is not a browser's).
MAX_BYTES_REPORTED = 10**12


def result_tag(lease_id: str) -> str:
    """A result's public name: a page knows its own results' tags and reads,
    in each lease, the tags of the results its base version folded, to tell a
    version made of its own moves alone (frontend/src/trajectory.js). A hash,
    so a tag names no lease."""
    return hashlib.sha256(lease_id.encode()).hexdigest()[:16]


def job_id(value: Any) -> str:
    return validate.identifier(value, "job id")


@dataclass(frozen=True)
class Registration:
    """POST /volunteers: the name an identity is issued under, if any."""

    name: str = ""

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "Registration":
        validate.only_keys(body, {"name"})
        return cls(validate.text(body, "name", "", max_len=64) if "name" in body else "")


@dataclass(frozen=True)
class Issued:
    """POST /volunteers' answer: the identity and the token that proves it."""

    volunteer_id: str
    volunteer_token: str
    name: str

    def json(self) -> dict[str, Any]:
        return {"volunteer_id": self.volunteer_id, "volunteer_token": self.volunteer_token, "name": self.name}


@dataclass(frozen=True)
class CreditRequest:
    """POST /volunteers/credit."""

    job_id: str
    volunteer_token: Any

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "CreditRequest":
        validate.only_keys(body, {"volunteer_token", "job_id"})
        return cls(job_id(body.get("job_id")), body.get("volunteer_token"))


@dataclass(frozen=True)
class TokenRequest:
    """A body that is a volunteer token only: POST /tasks/lease and POST /volunteers/renew."""

    volunteer_token: Any

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "TokenRequest":
        validate.only_keys(body, {"volunteer_token"})
        return cls(body.get("volunteer_token"))


@dataclass(frozen=True)
class HeldLease:
    """A lease its holder names: POST /tasks/heartbeat's body, and the head of a completion's and a release's."""

    job_id: str
    lease_token: Any
    volunteer_token: Any

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "HeldLease":
        validate.only_keys(body, {"job_id", "lease_token", "volunteer_token"})
        return cls.of(body)

    @classmethod
    def of(cls, body: dict[str, Any]) -> "HeldLease":
        return cls(job_id(body.get("job_id")), body.get("lease_token"), body.get("volunteer_token"))


@dataclass(frozen=True)
class Completion:
    """POST /tasks/complete: the loss (and a classifier's held-out accuracy), the
    local steps run where the job lets the volunteer choose, the TF.js backend
    that computed it and the bytes its page used, where said."""

    held: HeldLease
    loss: float
    steps: int | None = None
    backend: str = ""
    data: DataUsed | None = None
    accuracy: float | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "Completion":
        validate.only_keys(
            body,
            {
                "job_id",
                "lease_token",
                "volunteer_token",
                "loss",
                "steps",
                "backend",
                "bytes_down",
                "bytes_up",
                "accuracy",
            },
        )
        loss = validate.number(body, "loss", None, 0.0, 1e9)
        accuracy = validate.number(body, "accuracy", None, 0.0, 1.0) if "accuracy" in body else None
        steps = validate.integer(body, "steps", None, 1, MAX_LOCAL_STEPS) if "steps" in body else None
        backend = validate.choice(body, "backend", BACKENDS) if "backend" in body else ""
        data = (
            DataUsed(
                validate.integer(body, "bytes_down", 0, 0, MAX_BYTES_REPORTED),
                validate.integer(body, "bytes_up", 0, 0, MAX_BYTES_REPORTED),
            )
            if "bytes_down" in body or "bytes_up" in body
            else None
        )
        return cls(HeldLease.of(body), loss, steps, backend, data, accuracy)


@dataclass(frozen=True)
class Release:
    """POST /tasks/release."""

    held: HeldLease
    reason: str

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "Release":
        validate.only_keys(body, {"job_id", "lease_token", "volunteer_token", "reason"})
        reason = validate.choice(body, "reason", RELEASE_REASONS)
        return cls(HeldLease.of(body), reason)


@dataclass(frozen=True)
class TaskAnswer:
    """A lease's answer: a task to train (`upload` set) or to evaluate."""

    kind: str  # train | evaluate
    job_id: str
    task_id: str
    epoch: int
    batch: int
    base_version: int
    model_url: str
    batch_urls: list[str]  # local steps and evaluations: one batch per step
    lease_token: str
    lease_expires: float
    heartbeat_seconds: int
    spec: dict[str, Any]
    upload: dict[str, Any] | None = None
    upload_bytes: int | None = None
    local_learning_rate: float | None = None
    result_tag: str | None = None  # training tasks: this task's result, as base_folded will name it
    base_folded: tuple[str, ...] | None = None  # the tags of the results the base version folded, where known
    steps: int | None = None  # with a range of local steps: the most this lease's result may report

    def json(self) -> dict[str, Any]:
        head = {
            "kind": self.kind,
            "job_id": self.job_id,
            "task_id": self.task_id,
            "epoch": self.epoch,
            "batch": self.batch,
            "base_version": self.base_version,
            "model_url": self.model_url,
            "batch_url": self.batch_urls[0],
            "batch_urls": self.batch_urls,
        }
        upload = {} if self.upload is None else {"upload": self.upload, "upload_bytes": self.upload_bytes}
        local: dict[str, Any] = {}
        if self.local_learning_rate is not None:
            local["local_learning_rate"] = self.local_learning_rate
        if self.result_tag is not None:
            local["result_tag"] = self.result_tag
        if self.base_folded is not None:
            local["base_folded"] = list(self.base_folded)
        if self.steps is not None:
            local["steps"] = self.steps
        return {
            **head,
            **upload,
            "lease_token": self.lease_token,
            "lease_expires": self.lease_expires,
            "heartbeat_seconds": self.heartbeat_seconds,
            "spec": self.spec,
            **local,
        }


@dataclass(frozen=True)
class WaitAnswer:
    """A lease's answer while a synchronous job's round has no seat for the volunteer."""

    job_id: str
    base_version: int
    retry_after: int

    def json(self) -> dict[str, Any]:
        return {
            "kind": "wait",
            "job_id": self.job_id,
            "base_version": self.base_version,
            "retry_after": self.retry_after,
            "reason": f"waiting for version {self.base_version + 1}: this round has no seat for you "
            "(its tasks are handed out, or you hold your share of them)",
        }


@dataclass(frozen=True)
class Renewed:
    """A heartbeat's answer: the renewed token, and a training task's fresh upload form."""

    lease_token: str
    lease_expires: float
    upload: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        upload = {} if self.upload is None else {"upload": self.upload}
        return {"lease_token": self.lease_token, "lease_expires": self.lease_expires, **upload}


@dataclass(frozen=True)
class Accepted:
    """A completion's answer: a training task's batch, or an evaluation's version and what it settled."""

    job_id: str
    epoch: int = 0
    batch: int = 0
    evaluates: int | None = None
    held_out: Any = None

    def json(self) -> dict[str, Any]:
        if self.evaluates is None:
            return {"accepted": True, "job_id": self.job_id, "epoch": self.epoch, "batch": self.batch}
        return {"accepted": True, "job_id": self.job_id, "evaluates": self.evaluates, "held_out": self.held_out}


@dataclass(frozen=True)
class Released:
    """A release's answer."""

    job_id: str
    epoch: int
    batch: int

    def json(self) -> dict[str, Any]:
        return {"released": True, "job_id": self.job_id, "epoch": self.epoch, "batch": self.batch}
