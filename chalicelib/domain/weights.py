"""The TF.js layers-model format, read and written with numpy alone.

A model is `model.json` (the Keras-style topology plus a weights manifest
naming each tensor's name, shape and dtype) and binary shards holding the
tensors back to back as little-endian values. Writing exactly this format is
what lets a browser call `tf.loadLayersModel(url)` on a version's files with
no conversion step; reading it lets an operator start a job from a model that
TF.js (or tensorflowjs_converter) saved (jobs/schema.py validates it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from chalicelib.domain.errors import BadRequest
from chalicelib.domain.keys import SHARD_NAME

DTYPES = {"float32": "<f4", "int32": "<i4"}


@dataclass(frozen=True)
class WeightSpec:
    """One tensor of the weights manifest. `state` is empty for a weight
    trained by gradient, else which of a layer's own statistics it is
    (BatchNormalization's "mean" or "variance"): the layer moves those
    itself as it trains, and the fold applies the change volunteers measured
    (fold/updates.py), never the optimizer."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    state: str = ""

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return 4 * self.size

    def to_json(self) -> dict[str, Any]:
        """The manifest entry (TF.js's fields only)."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def public(self) -> dict[str, Any]:
        """What a volunteer's page reads: the manifest entry, and what moves the weight."""
        return {**self.to_json(), "state": self.state} if self.state else self.to_json()


def encode_tensors(specs: Sequence[WeightSpec], tensors: Sequence[np.ndarray]) -> bytes:
    """Tensors back to back in manifest order, shapes checked."""
    if len(specs) != len(tensors):
        raise ValueError(f"{len(specs)} weight specs but {len(tensors)} tensors")
    parts = []
    for spec, tensor in zip(specs, tensors):
        array = np.asarray(tensor)
        if tuple(array.shape) != spec.shape:
            raise ValueError(f"tensor {spec.name} has shape {array.shape}, manifest says {spec.shape}")
        parts.append(array.astype(DTYPES[spec.dtype]).tobytes())
    return b"".join(parts)


def decode_tensors(specs: Sequence[WeightSpec], data: bytes) -> list[np.ndarray]:
    """Split a shard (or the concatenation of all shards) into tensors."""
    expected = sum(spec.nbytes for spec in specs)
    if len(data) != expected:
        raise BadRequest(f"weights must be exactly {expected} bytes, got {len(data)}")
    tensors, offset = [], 0
    for spec in specs:
        chunk = np.frombuffer(data, DTYPES[spec.dtype], count=spec.size, offset=offset)
        tensors.append(chunk.astype(np.float32 if spec.dtype == "float32" else np.int32).reshape(spec.shape))
        offset += spec.nbytes
    return tensors


def model_json(topology: dict[str, Any], specs: Sequence[WeightSpec], shard: str = SHARD_NAME) -> bytes:
    """The `model.json` that `tf.loadLayersModel` expects, pointing at one shard."""
    document = {
        "format": "layers-model",
        "generatedBy": "crowdtrain",
        "convertedBy": None,
        "modelTopology": topology,
        "weightsManifest": [{"paths": [shard], "weights": [s.to_json() for s in specs]}],
    }
    return json.dumps(document, separators=(",", ":")).encode()
