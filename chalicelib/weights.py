"""The TF.js layers-model format, read and written with numpy alone.

A model is `model.json` (the Keras-style topology plus a weights manifest
naming each tensor's name, shape and dtype) and binary shards holding the
tensors back to back as little-endian values. Writing exactly this format is
what lets a browser call `tf.loadLayersModel(url)` on a version's files with
no conversion step; reading it lets an operator start a job from a model that
TF.js (or tensorflowjs_converter) saved.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from chalicelib.errors import BadRequest

SHARD_NAME = "weights.bin"
MODEL_CLASSES = {"Sequential", "Model", "Functional"}
# Layers whose every weight is trained by gradients. Layers with state that is
# not learned by gradient (BatchNormalization's moving statistics) would be
# corrupted by the fold, which moves every weight of the manifest.
TRAINABLE_LAYERS = {
    "InputLayer", "Dense", "Dropout", "Activation", "Flatten", "Reshape", "Permute", "RepeatVector",
    "Embedding", "LSTM", "GRU", "SimpleRNN", "Bidirectional", "TimeDistributed", "Conv1D", "Conv2D",
    "DepthwiseConv2D", "SeparableConv2D", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D",
    "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D", "UpSampling2D", "Concatenate", "Add", "Multiply",
    "Average", "LayerNormalization", "SpatialDropout1D", "GaussianNoise", "LeakyReLU", "ReLU", "Softmax",
}
DTYPES = {"float32": "<f4", "int32": "<i4"}


@dataclass(frozen=True)
class WeightSpec:
    """One tensor of the weights manifest."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return 4 * self.size

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def parse_specs(raw: Any, max_values: int) -> list[WeightSpec]:
    """Validate a manifest's weight entries (float32 only: they are trained)."""
    if not isinstance(raw, list) or not raw:
        raise BadRequest("weights manifest must list at least one weight")
    specs, total, names = [], 0, set()
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise BadRequest(f"weight {i} must be an object with name, shape and dtype")
        name, shape, dtype = entry.get("name"), entry.get("shape"), entry.get("dtype", "float32")
        if not isinstance(name, str) or not name or len(name) > 256:
            raise BadRequest(f"weight {i} needs a name of 1-256 characters")
        if name in names:
            raise BadRequest(f"weight name {name!r} appears twice")
        if "quantization" in entry:
            raise BadRequest(f"weight {name!r} is quantized; save the model with float32 weights")
        if dtype != "float32":
            raise BadRequest(f"weight {name!r} has dtype {dtype!r}; only float32 weights can be trained")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2**31 for d in shape)):
            raise BadRequest(f"weight {name!r} needs a shape of up to 8 positive integers")
        spec = WeightSpec(name, tuple(shape), dtype)
        total += spec.size
        if total > max_values:
            raise BadRequest(f"model has more than the allowed {max_values} parameters")
        names.add(name)
        specs.append(spec)
    return specs


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


@dataclass(frozen=True)
class ModelDocument:
    """A parsed model.json: topology, weight specs and the shard file names."""

    topology: dict[str, Any]
    specs: list[WeightSpec]
    paths: list[str]


def check_topology(topology: dict[str, Any]) -> None:
    """400 for a model kind or layer type crowdtrain cannot train."""
    if topology["class_name"] not in MODEL_CLASSES:
        raise BadRequest(f"model class {topology['class_name']!r} is not supported; use one of {sorted(MODEL_CLASSES)}")
    config = topology.get("config")
    layers = config.get("layers") if isinstance(config, dict) else config
    if not isinstance(layers, list) or not layers:
        raise BadRequest("modelTopology.config must list the model's layers")
    for layer in layers:
        kind = layer.get("class_name") if isinstance(layer, dict) else None
        if kind not in TRAINABLE_LAYERS:
            raise BadRequest(f"layer type {kind!r} is not supported: crowdtrain trains every weight by "
                             f"gradient (supported: {', '.join(sorted(TRAINABLE_LAYERS))})")


def parse_model_json(document: Any, max_values: int) -> ModelDocument:
    """Validate a TF.js layers-model document (as saved by TF.js or the converter)."""
    if not isinstance(document, dict):
        raise BadRequest("model must be a TF.js model.json object")
    topology = document.get("modelTopology")
    if not isinstance(topology, dict):
        raise BadRequest("model.json has no modelTopology object")
    if "model_config" in topology:  # the converter nests the Keras config one level down
        topology = topology["model_config"]
    if not isinstance(topology, dict) or not isinstance(topology.get("class_name"), str):
        raise BadRequest("modelTopology must be a Keras model config with a class_name")
    check_topology(topology)
    manifest = document.get("weightsManifest")
    if not isinstance(manifest, list) or not manifest:
        raise BadRequest("model.json has no weightsManifest")
    raw_specs, paths = [], []
    for group in manifest:
        if not isinstance(group, dict) or not isinstance(group.get("weights"), list):
            raise BadRequest("each weightsManifest group needs a weights list")
        raw_specs.extend(group["weights"])
        group_paths = group.get("paths", [])
        if not isinstance(group_paths, list) or not all(isinstance(p, str) for p in group_paths):
            raise BadRequest("weightsManifest paths must be a list of file names")
        paths.extend(group_paths)
    return ModelDocument(topology, parse_specs(raw_specs, max_values), paths)
