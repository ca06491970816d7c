"""`EVAL#<version>`: one item per evaluated version. Each volunteer's claim
(its held-out loss and accuracy) is an attribute of its own, added by a
write conditional on that volunteer having none yet, so one volunteer
counts once however often it answers; `accepted` is set once, by a write
conditional on its absence, when enough different volunteers agree
(tasks/evaluations.py)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key

from chalicelib.domain.errors import Conflict
from chalicelib.store.table import Records, job_key

CLAIM = "claim:"  # + volunteer id: one attribute per volunteer's claim


@dataclass(frozen=True)
class Claim:
    volunteer_id: str
    loss: float
    accuracy: float | None = None
    address: str = ""  # the network it answered from (domain/addresses.py): votes count one per address


@dataclass(frozen=True)
class HeldOut:
    """An accepted evaluation: the agreeing volunteers' median."""

    version: int
    loss: float
    accuracy: float | None
    volunteers: int  # how many agreed

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "loss": self.loss, "accuracy": self.accuracy, "volunteers": self.volunteers}


def _sort_key(version: int) -> str:
    return f"EVAL#{version:08d}"


def _number(value: Any) -> Decimal:
    return Decimal(repr(float(value)))


class EvaluationRecords(Records):
    def claim(self, job_id: str, version: int, claim: Claim) -> list[Claim]:
        """Add a volunteer's claim; every claim on the version so far. 409 if
        this volunteer has claimed this version already."""
        value = {
            "loss": _number(claim.loss),
            **({} if claim.accuracy is None else {"accuracy": _number(claim.accuracy)}),
            **({"address": claim.address} if claim.address else {}),
        }
        try:
            item = self._table.update_item(
                Key=job_key(job_id, _sort_key(version)),
                UpdateExpression="SET #c = :c",
                ConditionExpression="attribute_not_exists(#c)",
                ExpressionAttributeNames={"#c": CLAIM + claim.volunteer_id},
                ExpressionAttributeValues={":c": value},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except self._condition_failed:
            raise Conflict(
                f"volunteer {claim.volunteer_id!r} has evaluated version {version} already; another volunteer must"
            )
        return [
            Claim(
                name[len(CLAIM) :],
                float(v["loss"]),
                float(v["accuracy"]) if "accuracy" in v else None,
                str(v.get("address", "")),
            )
            for name, v in item.items()
            if name.startswith(CLAIM)
        ]

    def claimed_by(self, job_id: str, version: int, volunteer_id: str) -> bool:
        item = self._table.get_item(
            Key=job_key(job_id, _sort_key(version)),
            ConsistentRead=True,
            ProjectionExpression="#c",
            ExpressionAttributeNames={"#c": CLAIM + volunteer_id},
        )
        return bool(item.get("Item"))

    def accept(self, job_id: str, version: int, held_out: HeldOut) -> bool:
        """Record the accepted evaluation; False if one was accepted already."""
        value = {
            "loss": _number(held_out.loss),
            "volunteers": held_out.volunteers,
            **({} if held_out.accuracy is None else {"accuracy": _number(held_out.accuracy)}),
        }
        try:
            self._table.update_item(
                Key=job_key(job_id, _sort_key(version)),
                UpdateExpression="SET accepted = :a",
                ConditionExpression="attribute_not_exists(accepted)",
                ExpressionAttributeValues={":a": value},
            )
            return True
        except self._condition_failed:
            return False

    def accepted(self, job_id: str) -> list[HeldOut]:
        """Every accepted evaluation of the job, by version."""
        out = []
        for item in self._query(Key("pk").eq(f"JOB#{job_id}") & Key("sk").begins_with("EVAL#")):
            if "accepted" in item:
                a = item["accepted"]
                out.append(
                    HeldOut(
                        int(item["sk"][len("EVAL#") :]),
                        float(a["loss"]),
                        float(a["accuracy"]) if "accuracy" in a else None,
                        int(a["volunteers"]),
                    )
                )
        return out
