"""Job administration: create, start, status, pause, resume, delete.

A job is created in two steps, so large models and datasets never pass
through API Gateway's 10 MB body limit: POST /jobs validates the spec and
answers with presigned upload forms for the initial weights and the batch
files; POST /jobs/<id>/start checks every upload, writes version 0 and
queues the first epoch.
"""
from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

import numpy as np

from chalicelib.epochs import queue_epoch
from chalicelib.errors import BadRequest, Conflict
from chalicelib.jobstore import JobStore
from chalicelib.objects import ObjectStore
from chalicelib.queues import TaskQueue
from chalicelib.spec import parse_job
from chalicelib.versions import (VersionStore, batch_key, data_prefix, initial_weights_key, job_prefixes,
                                 model_key)
from chalicelib.weights import decode_tensors

UPLOAD_SECONDS = 6 * 3600
HISTORY_POINTS = 500


class JobAdmin:
    def __init__(self, jobs: JobStore, versions: VersionStore, tasks: TaskQueue, objects: ObjectStore,
                 max_parameters: int, max_batches: int):
        self.jobs, self.versions, self.tasks, self.objects = jobs, versions, tasks, objects
        self.max_parameters, self.max_batches = max_parameters, max_batches

    def create(self, body: Any) -> dict[str, Any]:
        spec = parse_job(body, self.max_parameters, self.max_batches)
        job_id = f"j-{secrets.token_hex(6)}"
        self.jobs.create(job_id, spec)
        weight_bytes = sum(s.nbytes for s in spec.weight_specs)
        return {
            "job_id": job_id, "status": "uploading",
            "upload": {
                "weights": self.objects.presigned_post(initial_weights_key(job_id), weight_bytes, UPLOAD_SECONDS),
                "weights_bytes": weight_bytes,
                # One form for every batch: POST each file with key = prefix + "batch-NNNNNN.bin".
                "batches": self.objects.presigned_post(data_prefix(job_id), spec.batch_bytes, UPLOAD_SECONDS,
                                                       prefix=True),
                "batch_key_prefix": data_prefix(job_id), "batch_bytes": spec.batch_bytes,
                "batches_expected": spec.num_batches,
            },
            "gradient_bytes": spec.gradient_bytes,
        }

    def start(self, job_id: str) -> dict[str, Any]:
        meta, spec = self.jobs.meta(job_id), self.jobs.spec(job_id)
        if meta.status != "uploading":
            raise Conflict(f"job {job_id} is already {meta.status}")
        weight_bytes = sum(s.nbytes for s in spec.weight_specs)
        if self.objects.size(initial_weights_key(job_id)) != weight_bytes:
            raise BadRequest(f"initial weights are missing or not exactly {weight_bytes} bytes")
        sizes = self.objects.sizes(data_prefix(job_id))
        wrong = [b for b in range(spec.num_batches) if sizes.get(batch_key(job_id, b)) != spec.batch_bytes]
        if wrong:
            raise BadRequest(f"{len(wrong)} of {spec.num_batches} batch files are missing or not exactly "
                             f"{spec.batch_bytes} bytes (first: batch {wrong[0]})")
        weights = decode_tensors(spec.weight_specs, self.objects.get(initial_weights_key(job_id)))
        if not all(np.isfinite(w).all() for w in weights):
            raise BadRequest("initial weights contain NaN or infinite values")
        optimizer = spec.build_optimizer()
        self.versions.write(job_id, 0, spec, weights, optimizer.initial_state(weights))
        meta = self.jobs.save(meta, replace(meta, status="running"))
        meta = queue_epoch(self.jobs, self.tasks, meta, spec)
        return meta.public()

    def status(self, job_id: str) -> dict[str, Any]:
        """Everything about a job's progress. None of it is secret: the public
        progress routes serve the same view to volunteer pages and dashboards."""
        meta, spec = self.jobs.meta(job_id), self.jobs.spec(job_id)
        counters = self.jobs.counters(job_id)
        volunteers = self.jobs.active_leases(job_id)
        return {
            **meta.public(),
            "spec": spec.public(),
            "model_url": self.objects.public_url(model_key(job_id, meta.version)) if meta.status != "uploading" else None,
            "active_leases": len(volunteers),
            "active_volunteers": len(set(volunteers)),
            "discarded": {k[len("discarded_"):]: v for k, v in counters.items() if k.startswith("discarded_")},
            "counters": counters,
            "history": self.jobs.history(meta, HISTORY_POINTS),
        }

    def list(self) -> list[dict[str, Any]]:
        return [{**meta.public(), "name": self.jobs.spec(meta.job_id).name}
                for meta in (self.jobs.meta(job_id) for job_id in self.jobs.job_ids())]

    def set_paused(self, job_id: str, paused: bool) -> dict[str, Any]:
        meta = self.jobs.meta(job_id)
        source, target = ("running", "paused") if paused else ("paused", "running")
        if meta.status != source:
            raise Conflict(f"job {job_id} is {meta.status}; only a {source} job can be "
                           f"{'paused' if paused else 'resumed'}")
        return self.jobs.save(meta, replace(meta, status=target)).public()

    def delete(self, job_id: str) -> dict[str, Any]:
        """Remove the job's records, then its files. Its queued tasks are
        dropped as volunteers meet them (the lease finds no job)."""
        self.jobs.meta(job_id)  # 404 for an unknown job
        items = self.jobs.delete(job_id)
        files = sum(self.objects.delete_prefix(prefix) for prefix in job_prefixes(job_id))
        return {"job_id": job_id, "deleted": True, "records": items, "files": files}
