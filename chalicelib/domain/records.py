"""The records that travel along the task path, typed from end to end: a
task message (SQS tasks queue), a lease (inside the signed token), a
result (SQS results queue, then the fold) and, for a job folded in several
message groups, a partial sum of results (the results queue again, to the
job's top-level fold). Each field means the same in the
JSON it travels as."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from chalicelib.domain.keys import partial_sum_key


def _load(cls: type, raw: Any, added: frozenset[str] = frozenset()) -> Any:
    """`cls` from a decoded JSON object: exactly its fields, but those `added`
    since records were first written may be missing (TypeError otherwise)."""
    names = {f.name for f in fields(cls)}
    if not isinstance(raw, dict) or not names - added <= set(raw) <= names:
        raise TypeError(f"not a {cls.__name__} record")
    return cls(**raw)


# An evaluation task or lease has no epoch or batch: both are this.
NO_BATCH = -1


@dataclass(frozen=True)
class Task:
    """One (epoch, batch) of a job on the task queue, or (`evaluates`) a
    held-out evaluation of one version; `receipt` is the SQS receipt handle
    of the delivery that leased it."""

    job_id: str
    epoch: int
    batch: int
    receipt: str = ""
    pin: int | None = None  # a replica check: compute on this version, not the newest
    evaluates: int | None = None  # the version whose held-out loss is asked for
    # the identity that handed this task back, and until when it is not offered
    # to it again (when its lease would have ended): cycling lease -> release
    # to pick a task gains a client nothing over letting the lease run out
    not_for: str = ""
    not_for_until: float = 0.0

    @classmethod
    def evaluation(cls, job_id: str, version: int) -> "Task":
        return cls(job_id, NO_BATCH, NO_BATCH, evaluates=version)

    def message(self) -> str:
        if self.evaluates is not None:
            return json.dumps({"job_id": self.job_id, "evaluates": self.evaluates})
        body: dict[str, Any] = {"job_id": self.job_id, "epoch": self.epoch, "batch": self.batch}
        if self.pin is not None:
            body["pin"] = self.pin
        if self.not_for:
            body["not_for"], body["not_for_until"] = self.not_for, self.not_for_until
        return json.dumps(body)

    @classmethod
    def from_message(cls, body: str, receipt: str) -> "Task":
        data = json.loads(body)
        if "evaluates" in data:
            return replace(cls.evaluation(data["job_id"], int(data["evaluates"])), receipt=receipt)
        pin, not_for, until = data.get("pin"), str(data.get("not_for", "")), float(data.get("not_for_until", 0))
        pinned = None if pin is None else int(pin)
        return cls(data["job_id"], int(data["epoch"]), int(data["batch"]), receipt, pinned, None, not_for, until)


@dataclass(frozen=True)
class Lease:
    """What a lease token stands for: the task, the version to compute on,
    the lease id, when the task was received (SQS keeps a message out of
    sight at most 12 hours from then) and when the token stops being valid.
    The SQS receipt handle stays server-side, in the lease's record."""

    job_id: str
    epoch: int
    batch: int
    base_version: int
    lease_id: str
    received: float
    expires: float
    evaluates: int | None = None  # an evaluation lease: the version (base_version) to evaluate
    volunteer_id: str = ""  # the identity that took it: only that identity may extend, complete or release it
    steps: int = 0  # the local steps its result may report at most, set at lease (0: all the task's batches)

    def task(self, receipt: str) -> Task:
        """The task this lease took, as received with `receipt` (kept server-side)."""
        return Task(self.job_id, self.epoch, self.batch, receipt, evaluates=self.evaluates)

    @classmethod
    def from_json(cls, raw: Any) -> "Lease":
        return _load(cls, raw, frozenset({"steps"}))  # a token signed before budgets still verifies


@dataclass(frozen=True)
class Volunteer:
    """What a volunteer token stands for: an identity the API issued
    (POST /volunteers), and when. Unforgeable, so its leases and answers are
    its own; issued at a limited rate per source address, so it costs
    something to hold many."""

    volunteer_id: str
    issued: float

    @classmethod
    def from_json(cls, raw: Any) -> "Volunteer":
        return _load(cls, raw)


@dataclass(frozen=True)
class DataUsed:
    """The bytes a volunteer's page says it used since its last completion
    (everything it downloaded and uploaded: model, batches, status, API),
    sent with a completion and summed per job for the dashboard."""

    down: int
    up: int


@dataclass(frozen=True)
class Result:
    """A completed task: built by LeaseService.complete, sent by ResultQueue,
    applied by the fold."""

    job_id: str
    epoch: int
    batch: int
    lease_id: str
    base_version: int
    key: str  # the uploaded gradient's S3 key
    loss: float
    samples: int
    volunteer_id: str
    backend: str = ""  # the TF.js backend that computed it, where the volunteer said
    # SHA-256 of the bytes `complete` checked: the fold folds only those (the
    # upload form stays valid until the lease ends, so the object could change)
    digest: str = ""
    data: DataUsed | None = None  # where the volunteer's page said
    # the source address it was leased from (a replica check must come from
    # another; one address's share of an update is capped)
    address: str = ""

    @classmethod
    def of(
        cls,
        lease: Lease,
        key: str,
        loss: float,
        samples: int,
        volunteer_id: str,
        backend: str,
        digest: str,
        data: DataUsed | None = None,
        address: str = "",
    ) -> "Result":
        return cls(
            lease.job_id,
            lease.epoch,
            lease.batch,
            lease.lease_id,
            lease.base_version,
            key,
            loss,
            samples,
            volunteer_id,
            backend,
            digest,
            data,
            address,
        )

    def message(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: Any) -> "Result":
        if isinstance(raw, dict) and "address" not in raw:
            raw = {**raw, "address": ""}  # sent before results carried it
        result = _load(cls, raw)
        return result if result.data is None else replace(result, data=_load(DataUsed, result.data))


@dataclass(frozen=True)
class PartialSum:
    """Some accepted results of one job and epoch, summed: by a group's fold
    (level 1, up to 10 results, on its way to a middle fold) or by a middle
    fold from up to 10 such sums (level 2, on its way to the job's top-level
    fold). The sum's bytes (float32, manifest order) are stored under
    `digest` (model/keys.py partial_sum_key)."""

    job_id: str
    epoch: int
    level: int
    digest: str  # sha256 of the stored sum: only these bytes are used
    results: tuple[Result, ...]

    @property
    def key(self) -> str:
        return partial_sum_key(self.job_id, self.epoch, self.digest)

    def message(self) -> str:
        return json.dumps(
            {
                "job_id": self.job_id,
                "epoch": self.epoch,
                "level": self.level,
                "digest": self.digest,
                "results": [asdict(r) for r in self.results],
            }
        )

    @classmethod
    def from_json(cls, raw: Any) -> "PartialSum":
        if not isinstance(raw, dict) or set(raw) != {f.name for f in fields(cls)} or raw["level"] not in (1, 2):
            raise TypeError("not a PartialSum record")
        return cls(
            raw["job_id"],
            int(raw["epoch"]),
            raw["level"],
            raw["digest"],
            tuple(Result.from_json(r) for r in raw["results"]),
        )


@dataclass(frozen=True)
class CreditDue:
    """A job's credit is due a tally (fold/credit.py): sent by its fold after
    a commit, in a message group of its own so that tallies run one at a time
    per job beside the fold, never in its way."""

    job_id: str

    def message(self) -> str:
        return json.dumps({"job_id": self.job_id, "credit_due": True})


def fold_message(body: str) -> Result | PartialSum | CreditDue:
    """A results queue message: a result, a partial sum (it names `results`) or a credit tally's turn."""
    raw = json.loads(body)
    if isinstance(raw, dict) and raw.get("credit_due") is True and isinstance(raw.get("job_id"), str):
        return CreditDue(raw["job_id"])
    return PartialSum.from_json(raw) if isinstance(raw, dict) and "results" in raw else Result.from_json(raw)
