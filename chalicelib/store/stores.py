"""Every AWS store of the app, built from settings once per process and
handed the same boto3 clients: one DynamoDB table for every record class,
one SQS client for both queues (chalicelib/services.py builds the services
on them)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.domain.config import Settings
from chalicelib.store.awaiting import AwaitingCopies
from chalicelib.store.credits import Credits
from chalicelib.store.evaluations import EvaluationRecords
from chalicelib.store.foldlog import FoldLogStore
from chalicelib.store.jobs import JobRecords
from chalicelib.store.leases import LeaseRecords
from chalicelib.store.meta import MetaStore
from chalicelib.store.objects import ObjectStore
from chalicelib.store.quarantine import QuarantineRecords
from chalicelib.store.queues import ResultQueue, TaskQueue
from chalicelib.store.secrets import SecretsManagerKeys, StaticKeys
from chalicelib.store.stats import Counters
from chalicelib.store.versions import VersionStore
from chalicelib.store.volunteers import VolunteerSlots

# Upload forms must be SigV4 (S3 refuses SigV2 for buckets made since June 2020)
# and name the bucket's own region: boto3 signs presigned POSTs with SigV2 and
# the global endpoint unless told otherwise.
S3_CONFIG = Config(signature_version="s3v4", s3={"us_east_1_regional_endpoint": "regional"})


class Stores:
    def __init__(self, config: Settings):
        self.config = config

    @cached_property
    def _sqs(self) -> Any:
        return boto3.client("sqs")

    @cached_property
    def _table(self) -> Any:
        return boto3.resource("dynamodb").Table(self.config.table_name)

    @cached_property
    def jobs(self) -> JobRecords:
        return JobRecords(self._table)

    @cached_property
    def meta(self) -> MetaStore:
        return MetaStore(self._table)

    @cached_property
    def leases(self) -> LeaseRecords:
        return LeaseRecords(self._table)

    @cached_property
    def slots(self) -> VolunteerSlots:
        return VolunteerSlots(self._table)

    @cached_property
    def counters(self) -> Counters:
        return Counters(self._table)

    @cached_property
    def fold_log(self) -> FoldLogStore:
        return FoldLogStore(self._table)

    @cached_property
    def objects(self) -> ObjectStore:
        return ObjectStore(boto3.client("s3", config=S3_CONFIG), self.config.bucket_name, self.config.public_base_url)

    @cached_property
    def versions(self) -> VersionStore:
        return VersionStore(self.objects)

    @cached_property
    def tasks(self) -> TaskQueue:
        return TaskQueue(self._sqs, self.config.task_queue_url)

    @cached_property
    def results(self) -> ResultQueue:
        return ResultQueue(self._sqs, self.config.results_queue_url)

    @cached_property
    def _lease_keys(self) -> SecretsManagerKeys | StaticKeys:
        if self.config.lease_secret_id:
            return SecretsManagerKeys(boto3.client("secretsmanager"), self.config.lease_secret_id)
        if self.config.lease_secret:
            return StaticKeys(self.config.lease_secret.encode())
        raise RuntimeError("no lease secret: set LEASE_SECRET_ID (Secrets Manager) or LEASE_SECRET")

    @cached_property
    def credits(self) -> Credits:
        return Credits(self._table)

    @cached_property
    def quarantine(self) -> QuarantineRecords:
        return QuarantineRecords(self._table)

    @cached_property
    def awaiting(self) -> AwaitingCopies:
        return AwaitingCopies(self._table)

    @cached_property
    def evaluation_records(self) -> EvaluationRecords:
        return EvaluationRecords(self._table)
