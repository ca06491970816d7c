"""Where a job's files live in S3, and the immutable per-version model files.

Version N of a job is a folder `jobs/<job>/versions/<N>/` holding
`model.json` + `weights.bin` (the TF.js layers format, so a browser loads it
with tf.loadLayersModel) and the optimizer state beside it
(`optimizer.json` + `optimizer.bin`). A version's files are written before
DynamoDB points at it and never change after, so they are cached forever.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from chalicelib.objects import ObjectStore
from chalicelib.optimizers import OptimizerState
from chalicelib.spec import JobSpec
from chalicelib.weights import SHARD_NAME, WeightSpec, decode_tensors, encode_tensors, model_json


def job_prefixes(job: str) -> tuple[str, str]:
    """Every prefix holding a job's files: its data and versions, and its gradients."""
    return f"jobs/{job}/", gradient_prefix(job)


def gradient_prefix(job: str) -> str:
    # Gradients sit under their own top-level prefix so that one S3 lifecycle
    # rule (infra/template.yaml) expires them for every job.
    return f"grads/{job}/"


def initial_weights_key(job: str) -> str:
    return f"jobs/{job}/init/{SHARD_NAME}"


def data_prefix(job: str) -> str:
    return f"jobs/{job}/data/"


def batch_key(job: str, batch: int) -> str:
    return f"{data_prefix(job)}batch-{batch:06d}.bin"


def version_prefix(job: str, version: int) -> str:
    return f"jobs/{job}/versions/{version:08d}/"


def model_key(job: str, version: int) -> str:
    return version_prefix(job, version) + "model.json"


def gradient_key(job: str, epoch: int, batch: int, lease_id: str) -> str:
    return f"{gradient_prefix(job)}{epoch:06d}/{batch:06d}/{lease_id}.bin"


class VersionStore:
    def __init__(self, objects: ObjectStore):
        self.objects = objects

    def write(self, job: str, version: int, spec: JobSpec, weights: Sequence[np.ndarray],
              state: OptimizerState) -> None:
        """Write every file of a version; model.json, the browsers' entry point, last.

        Writing the same version twice with the same inputs writes the same
        bytes (the fold is deterministic), which is what makes a retried fold safe.
        """
        prefix = version_prefix(job, version)
        specs = list(spec.weight_specs)
        slot_names = sorted(state.slots)
        slot_specs = [WeightSpec(f"{slot}/{s.name}", s.shape) for slot in slot_names for s in specs]
        slot_tensors = [t for slot in slot_names for t in state.slots[slot]]
        self.objects.put(prefix + SHARD_NAME, encode_tensors(specs, weights))
        self.objects.put(prefix + "optimizer.bin", encode_tensors(slot_specs, slot_tensors))
        meta = {"optimizer": spec.optimizer, "step": state.step, "scalars": state.scalars, "slots": slot_names}
        self.objects.put(prefix + "optimizer.json", json.dumps(meta).encode(), "application/json")
        self.objects.put(prefix + "model.json", model_json(spec.topology, specs), "application/json")

    def read_weights(self, job: str, version: int, spec: JobSpec) -> list[np.ndarray]:
        return decode_tensors(spec.weight_specs, self.objects.get(version_prefix(job, version) + SHARD_NAME))

    def read_state(self, job: str, version: int, spec: JobSpec) -> OptimizerState:
        prefix = version_prefix(job, version)
        meta = json.loads(self.objects.get(prefix + "optimizer.json"))
        specs = list(spec.weight_specs)
        slot_specs = [WeightSpec(f"{slot}/{s.name}", s.shape) for slot in meta["slots"] for s in specs]
        tensors = decode_tensors(slot_specs, self.objects.get(prefix + "optimizer.bin")) if slot_specs else []
        n = len(specs)
        slots = {slot: tensors[i * n:(i + 1) * n] for i, slot in enumerate(meta["slots"])}
        return OptimizerState(step=meta["step"], scalars=meta["scalars"], slots=slots)
