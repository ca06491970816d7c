"""Where a job's files live in S3: the one home of the key layout.

- `jobs/<job>/init/weights.bin`: the initial weights as uploaded.
- `jobs/<job>/data/batch-NNNNNN.bin`: the batch files.
- `jobs/<job>/versions/NNNNNNNN/`: one immutable folder per model version.
- `jobs/<job>/status.json` and `jobs/index.json`: the public status
  documents the pages poll (jobs/status.py).
- `grads/<job>/EEEEEE/BBBBBB/<lease>.bin`: one uploaded gradient per lease,
  under its own top-level prefix so that one S3 lifecycle rule
  (infra/template.yaml) expires every job's gradients.
- `grads/<job>/EEEEEE/sums/<sha256>.bin`: a partial sum of gradients
  (written by a fold in parts, fold/partials.py), named by its digest; the
  same rule expires them. Volunteers' upload forms name one exact gradient
  key, so no volunteer can write here.
"""

from __future__ import annotations

SHARD_NAME = "weights.bin"  # the one weights shard a version's model.json names


def job_prefixes(job_id: str) -> tuple[str, str]:
    """Every prefix holding a job's files: its data and versions, and its gradients."""
    return f"jobs/{job_id}/", gradient_prefix(job_id)


def gradient_prefix(job_id: str) -> str:
    return f"grads/{job_id}/"


def initial_weights_key(job_id: str) -> str:
    return f"jobs/{job_id}/init/{SHARD_NAME}"


def data_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/data/"


def batch_key(job_id: str, batch: int) -> str:
    return f"{data_prefix(job_id)}batch-{batch:06d}.bin"


def version_prefix(job_id: str, version: int) -> str:
    return f"jobs/{job_id}/versions/{version:08d}/"


def model_key(job_id: str, version: int) -> str:
    return version_prefix(job_id, version) + "model.json"


def gradient_key(job_id: str, epoch: int, batch: int, lease_id: str) -> str:
    return f"{gradient_prefix(job_id)}{epoch:06d}/{batch:06d}/{lease_id}.bin"


def partial_sum_key(job_id: str, epoch: int, digest: str) -> str:
    return f"{gradient_prefix(job_id)}{epoch:06d}/sums/{digest}.bin"


INDEX_KEY = "jobs/index.json"


def status_key(job_id: str) -> str:
    return f"jobs/{job_id}/status.json"
