"""`CREDIT#<volunteer id>` in one of the job's credit shards (`JOB#<id>#C<n>`,
store/table.py), `LEADERS` and `TALLY` in its partition: each identity's
credit for its folded work (atomic ADDs by the job's credit tally,
fold/credit.py), the job's top identities, which the public status document
shows without a query over every volunteer, and how far the tally got."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from decimal import Decimal

from boto3.dynamodb.conditions import Key

from chalicelib.store.table import Records, job_key, job_partitions, shard_key

LEADERS = 20
ADD_THREADS = 16


def display_name(volunteer_id: str) -> str:
    """What a leaderboard shows for an identity: the display name it chose
    and the start of its random part (names need not be unique); an
    identity that chose none is shown as anonymous."""
    name, _, tag = volunteer_id.rpartition(".")
    return f"{'anonymous' if name in ('', 'v') else name} ({tag[:4]})"


@dataclass(frozen=True)
class Credit:
    volunteer_id: str
    credit: float = 0.0  # samples x parameters / 1e6 over its folded results
    results: int = 0
    samples: int = 0

    def public(self) -> dict:
        return {
            "name": display_name(self.volunteer_id),
            "credit": round(self.credit, 6),
            "results": self.results,
            "samples": self.samples,
        }


def _credit(volunteer_id: str, item: dict) -> Credit:
    return Credit(volunteer_id, float(item.get("credit", 0)), int(item.get("results", 0)), int(item.get("samples", 0)))


def credit_key(job_id: str, volunteer_id: str) -> dict[str, str]:
    """An identity's credit item, in one of the job's credit shards (store/table.py)."""
    return shard_key(job_id, "C", volunteer_id, f"CREDIT#{volunteer_id}")


class Credits(Records):
    def add(self, job_id: str, earned: dict[str, Credit], through: int) -> list[Credit]:
        """Add each identity's credit earned up to version `through`; their new
        totals. An identity whose item already counts `through` (a retried
        tally of the same range) keeps what it has."""

        def add_one(volunteer_id: str, c: Credit) -> Credit:
            try:
                reply = self._table.update_item(
                    Key=credit_key(job_id, volunteer_id),
                    UpdateExpression="ADD credit :c, results :r, samples :s SET tallied = :t",
                    ConditionExpression="attribute_not_exists(tallied) OR tallied < :t",
                    ExpressionAttributeValues={
                        ":c": Decimal(repr(round(c.credit, 9))),
                        ":r": c.results,
                        ":s": c.samples,
                        ":t": through,
                    },
                    ReturnValues="ALL_NEW",
                )
                return _credit(volunteer_id, reply["Attributes"])
            except self._condition_failed:
                return self.of(job_id, volunteer_id)

        if not earned:
            return []
        # one write per identity, ADD_THREADS at once: a pass over 10,000 identities takes seconds, not a minute
        with ThreadPoolExecutor(min(ADD_THREADS, len(earned)), thread_name_prefix="credit") as pool:
            return list(pool.map(lambda item: add_one(*item), earned.items()))

    def of(self, job_id: str, volunteer_id: str) -> Credit:
        item = self._table.get_item(Key=credit_key(job_id, volunteer_id)).get("Item") or {}
        return _credit(volunteer_id, item)

    def all(self, job_id: str) -> list[Credit]:
        """Every identity's credit, most first (a query: for the admin export)."""
        items = [i for pk in job_partitions(job_id, "C") for i in self._query(Key("pk").eq(pk))]
        return sorted((_credit(i["sk"][len("CREDIT#") :], i) for i in items), key=lambda c: (-c.credit, c.volunteer_id))

    def leaders(self, job_id: str) -> list[Credit]:
        item = self._table.get_item(Key=job_key(job_id, "LEADERS")).get("Item")
        return [Credit(**c) for c in json.loads(item["leaders"])] if item else []

    def rank(self, job_id: str, totals: list[Credit]) -> None:
        """Merge new totals into the job's top LEADERS. Only the job's credit
        tally, which runs one pass at a time (its own message group), writes it."""
        merged = {c.volunteer_id: c for c in self.leaders(job_id)}
        merged.update({c.volunteer_id: c for c in totals})
        top = sorted(merged.values(), key=lambda c: (-c.credit, c.volunteer_id))[:LEADERS]
        self._table.put_item(
            Item={**job_key(job_id, "LEADERS"), "leaders": json.dumps([asdict(c) for c in top], separators=(",", ":"))}
        )


@dataclass(frozen=True)
class TallyState:
    through: int  # the last version whose credit is tallied
    open_end: int | None  # the last version of the range a pass under way took


class CreditTallies(Records):
    """`TALLY` in a job's partition: how far the credit tally got, and the
    range a pass under way took, which a retried pass takes again rather
    than a longer one (fold/credit.py)."""

    def read(self, job_id: str) -> TallyState:
        item = self._table.get_item(Key=job_key(job_id, "TALLY"), ConsistentRead=True).get("Item") or {}
        return TallyState(int(item.get("through", 0)), int(item["open_end"]) if "open_end" in item else None)

    def begin(self, job_id: str, state: TallyState, latest: int, most: int) -> tuple[int, int]:
        """(through, end) from `state` as read: tally versions through+1 to end
        (end == through: nothing to do). A range already taken is taken again."""
        for _ in range(3):
            if state.open_end is not None:
                return state.through, state.open_end
            end = min(latest, state.through + most)
            if end <= state.through:
                return state.through, state.through
            try:
                self._table.update_item(
                    Key=job_key(job_id, "TALLY"),
                    UpdateExpression="SET open_end = :e",
                    ConditionExpression=(
                        "attribute_not_exists(open_end) AND (attribute_not_exists(through) OR through = :t)"
                    ),
                    ExpressionAttributeValues={":e": end, ":t": state.through},
                )
                return state.through, end
            except self._condition_failed:  # another pass began since `state` was read: take its range
                state = self.read(job_id)
        raise RuntimeError(f"job {job_id}: the credit tally's range kept changing")

    def finish(self, job_id: str, end: int) -> None:
        """Record the range up to `end` as tallied, unless another pass already did."""
        try:
            self._table.update_item(
                Key=job_key(job_id, "TALLY"),
                UpdateExpression="SET through = :e REMOVE open_end",
                ConditionExpression="open_end = :e",
                ExpressionAttributeValues={":e": end},
            )
        except self._condition_failed:
            pass
