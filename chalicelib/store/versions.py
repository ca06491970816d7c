"""The immutable per-version model files.

Version N of a job is a folder `jobs/<job>/versions/<N>/` holding
`model.json` + `weights.bin` (the TF.js layers format, so a browser loads it
with tf.loadLayersModel) and the optimizer state beside it
(`optimizer.bin`: a JSON header of the step, scalars and slot names, then
the slots' tensors). A version's files are written before
DynamoDB points at it and never change after, so they are cached forever.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from chalicelib.domain.keys import SHARD_NAME, version_prefix
from chalicelib.domain.optimizers import OptimizerState
from chalicelib.domain.spec import JobSpec
from chalicelib.domain.statistics import trained
from chalicelib.domain.weights import WeightSpec, decode_tensors, encode_tensors, model_json
from chalicelib.store.objects import ObjectStore


class VersionStore:
    """A version's files. Reads of the newest versions are kept in memory
    (versions never change), so a warm fold reads a version it wrote itself
    from memory instead of S3."""

    CACHED_VERSIONS = 4

    def __init__(self, objects: ObjectStore, threads: int = 4):
        self.objects = objects
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="version-io")
        self._cache: OrderedDict[tuple[str, int], tuple[list[np.ndarray], OptimizerState]] = OrderedDict()

    def write(
        self, job_id: str, version: int, spec: JobSpec, weights: Sequence[np.ndarray], state: OptimizerState
    ) -> None:
        """Write every file of a version, in parallel: no browser reads a
        version before META names it, which happens only after this returns.

        Writing the same version twice with the same inputs writes the same
        bytes (the fold is deterministic), which is what makes a retried fold safe.
        """
        prefix = version_prefix(job_id, version)
        specs = list(spec.weight_specs)
        slot_names = sorted(state.slots)  # the optimizer's, for the trained weights only
        slot_specs = [WeightSpec(f"{slot}/{s.name}", s.shape) for slot in slot_names for s in trained(specs, specs)]
        slot_tensors = [t for slot in slot_names for t in state.slots[slot]]
        header = json.dumps(
            {"optimizer": spec.optimizer["name"], "step": state.step, "scalars": state.scalars, "slots": slot_names}
        ).encode()
        optimizer = len(header).to_bytes(4, "little") + header + encode_tensors(slot_specs, slot_tensors)
        puts = [
            (prefix + SHARD_NAME, encode_tensors(specs, weights), "application/octet-stream"),
            (prefix + "optimizer.bin", optimizer, "application/octet-stream"),
            (prefix + "model.json", model_json(spec.topology, specs), "application/json"),
        ]
        for done in [self._pool.submit(self.objects.put, *put) for put in puts]:
            done.result()
        self._remember(job_id, version, list(weights), state)

    def read(self, job_id: str, version: int, spec: JobSpec) -> tuple[list[np.ndarray], OptimizerState]:
        """A version's weights and optimizer state (the two shards read in parallel)."""
        cached = self._cache.get((job_id, version))
        if cached is not None:
            return cached
        prefix = version_prefix(job_id, version)
        shard, optimizer = (
            self._pool.submit(self.objects.get, prefix + name) for name in (SHARD_NAME, "optimizer.bin")
        )
        weights = decode_tensors(spec.weight_specs, shard.result())
        data = optimizer.result()
        length = int.from_bytes(data[:4], "little")
        meta = json.loads(data[4 : 4 + length])
        specs = trained(spec.weight_specs, spec.weight_specs)
        slot_specs = [WeightSpec(f"{slot}/{s.name}", s.shape) for slot in meta["slots"] for s in specs]
        tensors = decode_tensors(slot_specs, data[4 + length :]) if slot_specs else []
        n = len(specs)
        slots = {slot: tensors[i * n : (i + 1) * n] for i, slot in enumerate(meta["slots"])}
        state = OptimizerState(step=meta["step"], scalars=meta["scalars"], slots=slots)
        self._remember(job_id, version, weights, state)
        return weights, state

    def _remember(self, job_id: str, version: int, weights: list[np.ndarray], state: OptimizerState) -> None:
        self._cache[(job_id, version)] = (weights, state)
        while len(self._cache) > self.CACHED_VERSIONS:
            self._cache.popitem(last=False)
