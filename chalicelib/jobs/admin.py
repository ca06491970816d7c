"""Job administration: create, start, status, pause, resume, delete.

A job is created in two steps, so large models and datasets never pass
through API Gateway's 10 MB body limit: POST /jobs validates the spec and
answers with presigned upload forms for the initial weights and the batch
files; POST /jobs/<id>/start checks every upload, writes version 0 and
queues the first epoch.
"""

from __future__ import annotations

import secrets
import time
import zlib
from dataclasses import dataclass, replace
from typing import Any, Callable, TypeVar

import numpy as np

from chalicelib.domain.errors import BadRequest, Conflict
from chalicelib.domain.keys import batch_key, data_prefix, initial_weights_key, job_prefixes
from chalicelib.domain.schema import parse_job
from chalicelib.domain.spec import JobSpec
from chalicelib.domain.statistics import initial_state
from chalicelib.domain.weights import decode_tensors
from chalicelib.publish.status import StatusBoard
from chalicelib.store.awaiting import AwaitingCopies
from chalicelib.store.jobs import JobRecords
from chalicelib.store.meta import JobMeta, MetaStore, StaleState
from chalicelib.store.objects import IMMUTABLE, ObjectStore
from chalicelib.store.queues import TaskQueue
from chalicelib.store.versions import VersionStore
from chalicelib.tasks.epochs import EpochQueue

UPLOAD_SECONDS = 6 * 3600
ADMIN_ATTEMPTS = 5  # reads of META an admin action makes while the fold moves it (then a 409)
T = TypeVar("T")
# A DELETE deletes for about this long, a page of DELETE_PAGE records at a time (far below API Gateway's 29 s).
DELETE_SECONDS, DELETE_PAGE = 10.0, 1000


@dataclass(frozen=True)
class JobLimits:
    """The deployment's limits on what a job may ask for (chalicelib/domain/config.py)."""

    max_parameters: int
    max_batches: int
    fold_memory_bytes: int
    default_fold_groups: int = 1  # a job naming none, where it can be folded in parts (deploy --volunteers)


@dataclass(frozen=True)
class InFlight:
    """Work under way, which a job's admin status adds: its tasks waiting
    and in flight (its task queue's own counts: no lease record is
    read, however many leases are out), and the job's first copies awaiting a check."""

    tasks: TaskQueue
    awaiting: AwaitingCopies

    def figures(self, job_id: str) -> dict[str, Any]:
        return {"tasks": self.tasks.depth(job_id), "awaiting_replica": self.awaiting.count(job_id)}


class JobAdmin:
    def __init__(
        self,
        jobs: JobRecords,
        meta: MetaStore,
        in_flight: InFlight,
        board: StatusBoard,
        versions: VersionStore,
        epochs: EpochQueue,
        objects: ObjectStore,
        limits: JobLimits,
    ):
        self.jobs, self.meta, self.in_flight, self.board = jobs, meta, in_flight, board
        self.versions, self.epochs, self.objects, self.limits = versions, epochs, objects, limits

    def create(self, body: Any) -> dict[str, Any]:
        limits = self.limits
        spec = parse_job(
            body, limits.max_parameters, limits.max_batches, limits.fold_memory_bytes, limits.default_fold_groups
        )
        job_id = f"j-{secrets.token_hex(6)}"
        self.jobs.create(job_id, spec)
        weight_bytes = spec.weight_bytes
        dataset = spec.dataset
        return {
            "job_id": job_id,
            "status": "uploading",
            "upload": {
                "weights": self.objects.presigned_post(initial_weights_key(job_id), weight_bytes, UPLOAD_SECONDS),
                "weights_bytes": weight_bytes,
                # One form for every batch: POST each file with key = prefix + "batch-NNNNNN.bin",
                # gzip-compressed where batch_encoding says so (batch_bytes is the inflated size).
                "batches": self.objects.presigned_post(
                    data_prefix(job_id),
                    dataset.upload_bytes,
                    UPLOAD_SECONDS,
                    prefix=True,
                    content_encoding=dataset.encoding,
                    cache_control=IMMUTABLE,
                ),
                "batch_key_prefix": data_prefix(job_id),
                "batch_bytes": dataset.batch_bytes,
                "batch_encoding": dataset.encoding,
                "batches_expected": spec.stored_batches,  # the held-out ones after the training ones
            },
            "gradient_bytes": spec.gradient_bytes,
        }

    def start(self, job_id: str) -> dict[str, Any]:
        meta, spec = self.meta.get(job_id), self.jobs.spec(job_id)
        if meta.status != "uploading":
            raise Conflict(f"job {job_id} is already {meta.status}")
        if self.objects.size(initial_weights_key(job_id)) != spec.weight_bytes:
            raise BadRequest(f"initial weights are missing or not exactly {spec.weight_bytes} bytes")
        self._check_batches(job_id, spec)
        weights = decode_tensors(spec.weight_specs, self.objects.get(initial_weights_key(job_id)))
        if not all(np.isfinite(w).all() for w in weights):
            raise BadRequest("initial weights contain NaN or infinite values")
        state = initial_state(spec.build_optimizer(), spec.weight_specs, weights)
        self.versions.write(job_id, 0, spec, weights, state)
        self.epochs.tasks.open(job_id)
        meta = self.meta.save(meta, replace(meta, status="running"))
        evaluation = spec.evaluation
        # where training starts from, for the held-out curve
        if evaluation is not None and spec.evaluates(0, finished=False):
            self.epochs.tasks.enqueue_evaluation(job_id, 0, evaluation.copies)
        return self._published(self.epochs.queue(meta, spec), spec)

    def _check_batches(self, job_id: str, spec: JobSpec) -> None:
        """Every batch file is there with an acceptable size. A gzip file's
        inflated size is only known by reading it: batch 0 is inflated here to
        catch a wrong layout or an uncompressed upload, and volunteers check
        every batch's size again before they train on it."""
        dataset = spec.dataset
        least, most = dataset.upload_bytes
        sizes = self.objects.sizes(data_prefix(job_id))
        wrong = [b for b in range(spec.stored_batches) if not least <= sizes.get(batch_key(job_id, b), -1) <= most]
        if wrong:
            wanted = (
                f"exactly {dataset.batch_bytes} bytes"
                if least == most
                else f"{least}-{most} bytes of {dataset.encoding}"
            )
            raise BadRequest(
                f"{len(wrong)} of {spec.stored_batches} batch files are missing or not {wanted} "
                f"(first: batch {wrong[0]})"
            )
        if dataset.encoding == "gzip":
            inflated = inflate(self.objects.get(batch_key(job_id, 0)), dataset.batch_bytes + 1)
            if inflated is None or len(inflated) != dataset.batch_bytes:
                found = "is not gzip data" if inflated is None else f"inflates to {len(inflated)} bytes"
                raise BadRequest(
                    f"batch 0 {found}; dataset.encoding gzip needs each file to inflate to "
                    f"exactly {dataset.batch_bytes} bytes"
                )

    def status(self, job_id: str) -> dict[str, Any]:
        """The public document, read fresh, with the stage's tasks waiting and
        in flight and the first copies awaiting a check (which the public one
        leaves out: counting them queries the job's records)."""
        meta, spec = self.meta.get(job_id), self.jobs.spec(job_id)
        return {**self.board.document(meta, spec), **self.in_flight.figures(job_id)}

    def list(self) -> list[dict[str, Any]]:
        return [
            {**meta.public(), "name": self.jobs.spec(meta.job_id).name}
            for meta in (self.meta.get(job_id) for job_id in self.jobs.ids())
        ]

    def set_paused(self, job_id: str, paused: bool) -> dict[str, Any]:
        """Pause: leases stop asking the job's queue, which keeps its tasks.
        Resume: leases ask it again, and what is left of the epoch is queued
        (all of it again, from META, where the queue itself is gone)."""
        return retried(job_id, "pausing" if paused else "resuming", lambda: self._set_paused(job_id, paused))

    def _set_paused(self, job_id: str, paused: bool) -> dict[str, Any]:
        meta = self.meta.get(job_id)
        source, target = ("running", "paused") if paused else ("paused", "running")
        if meta.status != source:
            raise Conflict(
                f"job {job_id} is {meta.status}; only a {source} job can be {'paused' if paused else 'resumed'}"
            )
        spec = self.jobs.spec(job_id)
        if paused:
            return self._published(self.meta.save(meta, replace(meta, status=target)), spec)
        resumed = replace(meta, status=target, paused_reason="")
        if self.epochs.tasks.open(job_id) or not any(self.epochs.tasks.depth(job_id).values()):
            # its queue is gone or empty (a teardown; a resume that failed after making it; SQS's 14 days'
            # retention): the epoch is queued again from META, folded and pending batches skipped
            resumed = self.epochs.requeue(resumed)
        meta = self.meta.save(meta, resumed)
        return self._published(self.epochs.queue(meta, spec), spec)

    def _published(self, meta: JobMeta, spec: JobSpec) -> dict[str, Any]:
        """META's public view, after publishing the job's document and the job list."""
        self.board.publish(meta, spec, force=True)
        self.board.publish_index()
        return meta.public()

    def _deleting(self, job_id: str) -> JobMeta:
        """META marked `deleting` (once)."""
        meta = self.meta.get(job_id)  # 404 for an unknown job
        if meta.status != "deleting":
            meta = self.meta.save(meta, replace(meta, status="deleting"))
            self.board.publish_index()
        self.epochs.tasks.close(job_id)  # its tasks go with it
        return meta

    def delete(self, job_id: str) -> dict[str, Any]:
        """One bounded step of deleting a job: marked `deleting` and its task
        queue deleted first (the fold drops its results), then its records and files a
        page at a time for about DELETE_SECONDS, and last its SPEC, META and
        index entry. `deleted` false: call again (the CLI does) to go on."""
        retried(job_id, "deleting", lambda: self._deleting(job_id))
        until = time.time() + DELETE_SECONDS
        records, done = self.jobs.delete_page(job_id, until, DELETE_PAGE)
        files = 0
        for prefix in job_prefixes(job_id):
            if done:
                deleted, done = self.objects.delete_page(prefix, until, time.time)
                files += deleted
        if done:
            records += 3  # its SPEC, its META and its entry in the index
            self.jobs.forget(job_id)
            self.meta.forget(job_id)
            self.board.publish_index()
        return {
            "job_id": job_id,
            "deleted": done,
            "status": "deleted" if done else "deleting",
            "records": records,
            "files": files,
        }


def retried(job_id: str, doing: str, action: Callable[[], T]) -> T:
    """An admin action's META write, read and tried again while the fold's
    writes move META under it (StaleState); a 409, never a 5xx, if it keeps moving."""
    for _ in range(ADMIN_ATTEMPTS):
        try:
            return action()
        except StaleState:
            continue
    raise Conflict(f"job {job_id} changed {ADMIN_ATTEMPTS} times while {doing} it (its fold is busy); try again")


def inflate(data: bytes, limit: int) -> bytes | None:
    """At most `limit` bytes of a gzip stream inflated, or None where `data`
    is not gzip; the limit keeps a tiny file from inflating without end."""
    try:
        return zlib.decompressobj(wbits=31).decompress(data, limit)
    except zlib.error:
        return None
