"""`REP#<volunteer id>` in a job's partition: an identity's record in a
replicated job (BOINC's adaptive replication): how many of its copies
agreed with another volunteer's since it was last outvoted, how many of
its copies were judged (compared with another's), how often it was
outvoted, and by which judges (a string set: two hostile clients outvoting
an honest identity again and again are two judges, not a majority).
Counted by atomic updates; a fold retried after a crash may count a
judgement twice, which only moves a rate a little."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.store.table import Records, job_key


@dataclass(frozen=True)
class Standing:
    agreed: int = 0  # since it was last outvoted
    outvoted: int = 0
    judged: int = 0
    judges: int = 0  # the different judges that outvoted it


LEGACY_JUDGES = 1_000_000


def _key(job_id: str, volunteer_id: str) -> dict[str, str]:
    return job_key(job_id, f"REP#{volunteer_id}")


class Reputations(Records):
    def get(self, job_id: str, volunteer_id: str) -> Standing:
        item = self._table.get_item(Key=_key(job_id, volunteer_id), ConsistentRead=True).get("Item") or {}
        outvoted = int(item.get("outvoted", 0))
        # a record from before judges were kept: its verdicts count as many judges' (it was barred then)
        judges = len(item["judges"]) if "judges" in item else (LEGACY_JUDGES if outvoted else 0)
        return Standing(int(item.get("agreed", 0)), outvoted, int(item.get("judged", 0)), judges)

    def agreed(self, job_id: str, volunteer_ids: list[str]) -> None:
        """Each of these identities' copies agreed with another's."""
        for volunteer_id in volunteer_ids:
            self._table.update_item(
                Key=_key(job_id, volunteer_id),
                UpdateExpression="ADD agreed :one, judged :one",
                ExpressionAttributeValues={":one": 1},
            )

    def outvoted(self, job_id: str, volunteer_id: str, judges: set[str]) -> None:
        """The identity's copy lost a dispute to `judges` (the keys of the
        copies that outvoted it): its record starts over."""
        self._table.update_item(
            Key=_key(job_id, volunteer_id),
            UpdateExpression="SET agreed = :zero ADD outvoted :one, judged :one, judges :judges",
            ExpressionAttributeValues={":zero": 0, ":one": 1, ":judges": judges},
        )
