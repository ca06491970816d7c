"""`SPEC` (the immutable job document) and the `JOBS` index (one item per
job, so jobs are listed without a scan); creating and deleting a job."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key

from chalicelib.domain.errors import BadRequest, Conflict, NotFound
from chalicelib.domain.schema import load_spec
from chalicelib.domain.spec import JobSpec
from chalicelib.store.meta import JobMeta, meta_item
from chalicelib.store.table import Records, job_key, job_partitions

MAX_SPEC_BYTES = 350_000  # DynamoDB's item limit is 400 KB


class JobRecords(Records):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._specs: dict[str, JobSpec] = {}

    def create(self, job_id: str, spec: JobSpec) -> JobMeta:
        """SPEC, META and the index entry in one transaction (the only one:
        a job is created once; nothing else needs more than one item)."""
        document = json.dumps(spec.to_json(), separators=(",", ":"))
        if len(document.encode()) > MAX_SPEC_BYTES:
            raise BadRequest(
                f"the job's spec is {len(document.encode()) // 1000} KB stored; at most "
                f"{MAX_SPEC_BYTES // 1000} KB fit in one DynamoDB item (400 KB less room): "
                "shorten the model's topology (layer names, configs)"
            )
        now = self._clock()
        meta = JobMeta(job_id=job_id, status="uploading", created=now, updated=now)
        items: list[dict[str, dict[str, Any]]] = [
            {
                "Put": {
                    "Item": {**job_key(job_id, "SPEC"), "spec": document},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Put": {"Item": meta_item(meta), "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"Item": {"pk": "JOBS", "sk": job_id, "name": spec.name, "created": Decimal(str(now))}}},
        ]
        # The resource's client serializes plain Python values itself.
        named = [{kind: dict(body, TableName=self._table.name)} for entry in items for kind, body in entry.items()]
        try:
            self._client.transact_write_items(TransactItems=named)
        except self._client.exceptions.TransactionCanceledException:
            raise Conflict(f"job {job_id} already exists")
        return meta

    def spec(self, job_id: str) -> JobSpec:
        """The job's spec; cached for the life of the process since it never changes."""
        if job_id not in self._specs:
            item = self._table.get_item(Key=job_key(job_id, "SPEC"), ConsistentRead=True).get("Item")
            if not item:
                raise NotFound(f"no job {job_id}")
            self._specs[job_id] = load_spec(item["spec"])
        return self._specs[job_id]

    def ids(self) -> list[str]:
        return [item["sk"] for item in self._query(Key("pk").eq("JOBS"))]

    def delete_page(self, job_id: str, until: float, page: int) -> tuple[int, bool]:
        """Delete the job's items, all but its SPEC and META, `page` at a time
        until the clock passes `until` (one page at least): (how many, whether
        none is left). A job of any size is so deleted in calls that each end in seconds."""
        done = 0
        for pk in job_partitions(job_id):
            start: dict[str, Any] | None = None
            while True:
                if done and self._clock() >= until:  # a call ends having deleted something, so calls progress
                    return done, False
                args: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq(pk), "Limit": page}
                if start:
                    args["ExclusiveStartKey"] = start
                reply = self._table.query(ProjectionExpression="pk, sk", ConsistentRead=True, **args)
                keys = [{"pk": i["pk"], "sk": i["sk"]} for i in reply["Items"] if i["sk"] not in ("SPEC", "META")]
                with self._table.batch_writer() as batch:
                    for key in keys:
                        batch.delete_item(Key=key)
                done += len(keys)
                start = reply.get("LastEvaluatedKey")
                if not start:
                    break
        return done, True

    def forget(self, job_id: str) -> None:
        """The job's last items: its SPEC, its META and its entry in the index."""
        with self._table.batch_writer() as batch:
            for key in (job_key(job_id, "SPEC"), job_key(job_id, "META"), {"pk": "JOBS", "sk": job_id}):
                batch.delete_item(Key=key)
        self._specs.pop(job_id, None)
