"""The immutable per-version model files.

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

from chalicelib.fold.optimizers import OptimizerState
from chalicelib.jobs.spec import JobSpec
from chalicelib.model.keys import SHARD_NAME, version_prefix
from chalicelib.model.weights import WeightSpec, decode_tensors, encode_tensors, model_json
from chalicelib.store.objects import ObjectStore


class VersionStore:
    def __init__(self, objects: ObjectStore):
        self.objects = objects

    def write(self, job_id: str, version: int, spec: JobSpec, weights: Sequence[np.ndarray],
              state: OptimizerState) -> None:
        """Write every file of a version; model.json, the browsers' entry point, last.

        Writing the same version twice with the same inputs writes the same
        bytes (the fold is deterministic), which is what makes a retried fold safe.
        """
        prefix = version_prefix(job_id, version)
        specs = list(spec.weight_specs)
        slot_names = sorted(state.slots)
        slot_specs = [WeightSpec(f"{slot}/{s.name}", s.shape) for slot in slot_names for s in specs]
        slot_tensors = [t for slot in slot_names for t in state.slots[slot]]
        self.objects.put(prefix + SHARD_NAME, encode_tensors(specs, weights))
        self.objects.put(prefix + "optimizer.bin", encode_tensors(slot_specs, slot_tensors))
        meta = {"optimizer": spec.optimizer["name"], "step": state.step, "scalars": state.scalars, "slots": slot_names}
        self.objects.put(prefix + "optimizer.json", json.dumps(meta).encode(), "application/json")
        self.objects.put(prefix + "model.json", model_json(spec.topology, specs), "application/json")

    def read_weights(self, job_id: str, version: int, spec: JobSpec) -> list[np.ndarray]:
        return decode_tensors(spec.weight_specs, self.objects.get(version_prefix(job_id, version) + SHARD_NAME))

    def read_state(self, job_id: str, version: int, spec: JobSpec) -> OptimizerState:
        prefix = version_prefix(job_id, version)
        meta = json.loads(self.objects.get(prefix + "optimizer.json"))
        specs = list(spec.weight_specs)
        slot_specs = [WeightSpec(f"{slot}/{s.name}", s.shape) for slot in meta["slots"] for s in specs]
        tensors = decode_tensors(slot_specs, self.objects.get(prefix + "optimizer.bin")) if slot_specs else []
        n = len(specs)
        slots = {slot: tensors[i * n:(i + 1) * n] for i, slot in enumerate(meta["slots"])}
        return OptimizerState(step=meta["step"], scalars=meta["scalars"], slots=slots)
