"""Builds the app's parts from settings, lazily and once per process.

boto3 clients are created on first use and reused by every request a warm
Lambda serves. Tests call `reset()` after changing the environment (and
inside moto's mock) so the next request builds fresh parts.
"""
from __future__ import annotations

from functools import cached_property

import boto3

from chalicelib.admin import JobAdmin
from chalicelib.auth import AdminGuard
from chalicelib.config import Settings, settings
from chalicelib.fold import Folder
from chalicelib.jobstore import JobStore
from chalicelib.leases import LeaseService
from chalicelib.objects import ObjectStore
from chalicelib.queues import ResultQueue, TaskQueue
from chalicelib.tokens import TokenSigner
from chalicelib.versions import VersionStore


class Services:
    def __init__(self, config: Settings):
        self.config = config

    @cached_property
    def _sqs(self):
        return boto3.client("sqs")

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(boto3.resource("dynamodb").Table(self.config.table_name))

    @cached_property
    def objects(self) -> ObjectStore:
        return ObjectStore(boto3.client("s3"), self.config.bucket_name, self.config.public_base_url)

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
    def _lease_secret(self) -> bytes:
        if self.config.lease_secret_id:
            reply = boto3.client("secretsmanager").get_secret_value(SecretId=self.config.lease_secret_id)
            return reply["SecretString"].encode()
        if self.config.lease_secret:
            return self.config.lease_secret.encode()
        raise RuntimeError("no lease secret: set LEASE_SECRET_ID (Secrets Manager) or LEASE_SECRET")

    @cached_property
    def signer(self) -> TokenSigner:
        return TokenSigner(lambda: self._lease_secret)

    @cached_property
    def leases(self) -> LeaseService:
        return LeaseService(self.jobs, self.tasks, self.results, self.objects, self.signer,
                            self.config.lease_wait_seconds, self.config.paused_retry_seconds,
                            self.config.max_leases_per_volunteer)

    @cached_property
    def folder(self) -> Folder:
        return Folder(self.jobs, self.versions, self.tasks, self.objects)

    @cached_property
    def admin(self) -> JobAdmin:
        return JobAdmin(self.jobs, self.versions, self.tasks, self.objects,
                        self.config.max_parameters, self.config.max_batches)

    @cached_property
    def guard(self) -> AdminGuard:
        return AdminGuard(self.config.admin_token)


_current: Services | None = None


def services() -> Services:
    global _current
    if _current is None:
        _current = Services(settings())
    return _current


def reset() -> None:
    """Forget settings and clients (tests change the environment between runs)."""
    global _current
    _current = None
    settings.cache_clear()
