"""What a lease and a heartbeat answer: a task's URLs, its signed token and
upload form, built from the lease and the job's spec (domain/wire.py says
how each answer is serialized)."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.keys import batch_key, gradient_key, model_key
from chalicelib.domain.records import Lease
from chalicelib.domain.spec import JobSpec
from chalicelib.domain.wire import Renewed, TaskAnswer, result_tag
from chalicelib.store.objects import ObjectStore
from chalicelib.tasks.tokens import TokenSigner


class Answers:
    def __init__(self, objects: ObjectStore, signer: TokenSigner):
        self.objects, self.signer = objects, signer

    def task(self, lease: Lease, spec: JobSpec, base_folded: tuple[str, ...] | None = None) -> TaskAnswer:
        """A training task (a gradient to upload) or an evaluation (the
        version's forward pass over the held-out batches; nothing to upload).
        `base_folded`: the tags of the results the base version folded."""
        evaluates = lease.evaluates is not None
        batches = spec.held_out if evaluates else spec.task_batches(lease.batch)
        local = spec.local_learning_rate(lease.base_version) if spec.local_steps and not evaluates else None
        return TaskAnswer(
            kind="evaluate" if evaluates else "train",
            job_id=lease.job_id,
            task_id=f"evaluate-{lease.evaluates}" if evaluates else f"{lease.epoch}-{lease.batch}",
            epoch=lease.epoch,
            batch=lease.batch,
            base_version=lease.base_version,
            model_url=self.objects.public_url(model_key(lease.job_id, lease.base_version)),
            batch_urls=[self.objects.public_url(batch_key(lease.job_id, b)) for b in batches],
            lease_token=self.signer.sign(lease),
            lease_expires=lease.expires,
            heartbeat_seconds=max(1, spec.lease_seconds // 3),
            spec=spec.public(),
            upload=None if evaluates else self.upload_form(lease, spec),
            upload_bytes=None if evaluates else spec.gradient_bytes,
            local_learning_rate=local,
            result_tag=None if evaluates else result_tag(lease.lease_id),
            base_folded=None if evaluates else base_folded,
            steps=lease.steps if spec.local_steps and spec.local_steps.varies and not evaluates else None,
        )

    def renewed(self, lease: Lease, spec: JobSpec) -> Renewed:
        """A renewed lease's token, and a training task's fresh upload form
        (the first expires lease_seconds after the lease was taken)."""
        upload = None if lease.evaluates is not None else self.upload_form(lease, spec)
        return Renewed(self.signer.sign(lease), lease.expires, upload)

    def upload_form(self, lease: Lease, spec: JobSpec) -> dict[str, Any]:
        key = gradient_key(lease.job_id, lease.epoch, lease.batch, lease.lease_id)
        return self.objects.presigned_post(key, spec.gradient_bytes, spec.lease_seconds)
