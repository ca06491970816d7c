"""Keras files in and out, through Keras 3 itself (no TensorFlow, no tensorflowjs).

In: `crowdtrain import-keras` reads a Keras 3 `.keras` or `.h5` file, or a
Keras 2 `.h5` (Keras 3 reads those through its legacy loader), and writes
TF.js layers files. Keras 3 serializes its config differently from the
Keras 2 format TF.js reads (an InputLayer's `batch_shape`, dtype policies as
objects, `module`/`registered_name`/`build_config` on every object, call
arguments as `__keras_tensor__` objects), which is why the official
converter's output does not load in TF.js; `tfjs_topology` rewrites it.

Out: `crowdtrain export-keras` writes TF.js files (a downloaded version) as a
Keras 2 format `.h5` (that is TF.js's own topology format), has Keras 3 load
it, and saves what Keras 3 loaded: a `.keras` file (or `.h5`) Keras 3 opens.

Keras needs a backend: KERAS_BACKEND if set, else the first of jax,
tensorflow and torch that imports (the `keras` extra installs jax's CPU build).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from chalicelib.domain.keys import SHARD_NAME
from chalicelib.domain.models import statistics, untrainable
from chalicelib.domain.weights import WeightSpec, decode_tensors, encode_tensors, model_json

BACKENDS = ("jax", "tensorflow", "torch")
# Keras 3's bookkeeping on serialized objects, which TF.js does not read.
KERAS3_ONLY = {"module", "registered_name", "build_config", "compile_config", "shared_object_id"}
# InputLayer fields Keras 3 adds and TF.js's InputLayer has no use for.
INPUT_LAYER_ONLY = {"ragged", "optional"}


class KerasFileError(ValueError):
    pass


def keras():
    """Keras 3 on an installed backend, imported on first use."""
    if "KERAS_BACKEND" not in os.environ:
        found = next((b for b in BACKENDS if importlib.util.find_spec(b)), None)
        if found is None:
            raise KerasFileError("Keras needs a backend: pip install -e '.[keras]' (Keras 3 with jax's CPU build)")
        os.environ["KERAS_BACKEND"] = found
    try:
        import keras as module
    except ImportError:
        raise KerasFileError("Keras import/export needs the optional extra: pip install -e '.[keras]'")
    if not module.__version__.startswith("3."):
        raise KerasFileError(f"crowdtrain reads and writes Keras files with Keras 3; this is {module.__version__}")
    return module


def _node_args(node: dict[str, Any]) -> list[list[Any]]:
    """A Keras 3 call node ({args: [tensor or [tensors]], kwargs}) in Keras 2's form:
    [[layer, node index, tensor index, kwargs], ...]."""
    tensors: list[dict[str, Any]] = []
    for arg in node.get("args", []):
        tensors += arg if isinstance(arg, list) else [arg]
    out = []
    for tensor in tensors:
        if not (isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__"):
            raise KerasFileError(f"a layer call with a non-tensor argument TF.js cannot express: {tensor!r}")
        layer, node_index, tensor_index = tensor["config"]["keras_history"]
        out.append([layer, node_index, tensor_index, {}])
    return out


def _causal(layer: dict[str, Any]) -> bool:
    """An attention layer's use_causal_mask, a call argument in Keras and a
    config field in TF.js (which drops call arguments; frontend/src/layers.js)."""
    for node in layer["inbound_nodes"]:
        others = set(node.get("kwargs", {})) - {"use_causal_mask", "training"}
        if others or len(node.get("args", [])) < 2:
            raise KerasFileError(
                f"layer {layer['config']['name']!r}: the page's MultiHeadAttention takes query and value (and key) "
                f"as arguments and use_causal_mask, not {sorted(others) or 'its tensors by keyword'}"
            )
    masks = {bool(node.get("kwargs", {}).get("use_causal_mask")) for node in layer["inbound_nodes"]}
    if len(masks) > 1:
        raise KerasFileError(f"layer {layer['config']['name']!r} is called both with and without a causal mask")
    return masks == {True}


def weight_names(layer: Any) -> list[str]:
    """A layer's weights as TF.js names them: `<layer>/<weight>`, and for
    attention, whose four projections each have a kernel and a bias, their
    Keras path, `<layer>/query/kernel` (as frontend/src/layers.js names them)."""
    if type(layer).__name__ == "MultiHeadAttention":
        return [v.path if v.path.startswith(f"{layer.name}/") else f"{layer.name}/{v.path}" for v in layer.weights]
    return [f"{layer.name}/{v.name}" for v in layer.weights]


def _tensor_refs(value: Any) -> list[list[Any]]:
    """A model's input_layers/output_layers: Keras 3 writes one as a flat [name, node, index]."""
    return [value] if value and isinstance(value[0], str) else value


def _convert(value: Any) -> Any:
    if isinstance(value, list):
        return [_convert(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("class_name") == "DTypePolicy":
        return value["config"]["name"]
    out = {k: _convert(v) for k, v in value.items() if k not in KERAS3_ONLY}
    if "inbound_nodes" in value:
        out["inbound_nodes"] = [_node_args(node) for node in value["inbound_nodes"]]
    if value.get("class_name") == "MultiHeadAttention" and "inbound_nodes" in value:
        out["config"]["use_causal_mask"] = _causal(value)
    if value.get("class_name") == "InputLayer":
        config = {k: v for k, v in out["config"].items() if k not in INPUT_LAYER_ONLY}
        if "batch_shape" in config:
            config["batch_input_shape"] = config.pop("batch_shape")
        out["config"] = config
    if value.get("class_name") in ("Functional", "Model"):
        out["class_name"] = "Model"
        for key in ("input_layers", "output_layers"):
            out["config"][key] = _tensor_refs(out["config"][key])
    return out


def tfjs_topology(model: Any) -> dict[str, Any]:
    """The model's config as TF.js's layers format reads it (Keras 2's)."""
    topology = _convert(json.loads(model.to_json()))
    return {
        "class_name": topology["class_name"],
        "config": topology["config"],
        "keras_version": f"keras {keras().__version__} via crowdtrain",
        "backend": "tensor_flow.js",
    }


def tfjs_weights(model: Any) -> tuple[list[WeightSpec], list[np.ndarray]]:
    """Every weight as TF.js names it, `<layer>/<weight>`, in the layers' order."""
    specs, values = [], []
    for layer in model.layers:
        for name, variable in zip(weight_names(layer), layer.weights):
            value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
            if value.dtype not in (np.float32, np.int32):
                raise KerasFileError(f"weight {name} is {value.dtype}; TF.js files hold float32 and int32")
            specs.append(WeightSpec(name, tuple(value.shape), str(value.dtype)))
            values.append(value)
    return specs, values


# How each kind of Keras file starts: a .keras file is a zip archive, a .h5 file HDF5.
SIGNATURES = {".keras": b"PK\x03\x04", ".h5": b"\x89HDF\r\n\x1a\n"}


def import_keras(source: Path, out: Path) -> Path:
    """`source` (.keras or .h5) -> out/model.json and out/weights.bin, once
    everything in it is something the page trains (each thing that is not,
    one line, and nothing written)."""
    if source.suffix not in SIGNATURES:
        raise KerasFileError(f"{source}: a Keras model file ends in .keras or .h5")
    try:
        with source.open("rb") as f:
            head = f.read(8)
    except OSError as err:
        raise KerasFileError(f"{source}: {err.strerror}")
    if not head.startswith(SIGNATURES[source.suffix]):
        kind = "a zip archive" if source.suffix == ".keras" else "an HDF5 file"
        raise KerasFileError(f"{source} is not a Keras file (a {source.suffix} file is {kind})")
    k = keras()
    try:
        model = k.models.load_model(source, compile=False)
    except (ValueError, OSError, TypeError) as err:
        raise KerasFileError(f"Keras {k.__version__} cannot read {source}: {err}")
    topology = tfjs_topology(model)
    specs, values = tfjs_weights(model)
    problems = untrainable(topology)
    names = [s.name for s in specs]
    problems += [f"weight name {n!r} is used {names.count(n)} times" for n in sorted(set(names)) if names.count(n) > 1]
    own = statistics(topology)  # BatchNormalization's moving statistics: they travel with results
    frozen = [name for layer in model.layers for name, w in zip(weight_names(layer), layer.weights) if not w.trainable]
    if [name for name in frozen if name not in own]:
        problems.append(
            "weights that are not trained (a frozen layer?), which the fold would move: "
            f"{sorted(name for name in frozen if name not in own)}"
        )
    if problems:
        raise KerasFileError("\n".join(problems))
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_bytes(model_json(topology, specs))
    (out / SHARD_NAME).write_bytes(encode_tensors(specs, values))
    return out / "model.json"


def _read_tfjs(model_path: Path) -> tuple[dict[str, Any], list[WeightSpec], list[np.ndarray]]:
    document = json.loads(model_path.read_text())
    specs = [
        WeightSpec(w["name"], tuple(w["shape"]), w.get("dtype", "float32"))
        for group in document["weightsManifest"]
        for w in group["weights"]
    ]
    data = b"".join(
        (model_path.parent / shard).read_bytes() for group in document["weightsManifest"] for shard in group["paths"]
    )
    return document["modelTopology"], specs, decode_tensors(specs, data)


def _with_input_layer(topology: dict[str, Any]) -> dict[str, Any]:
    """A Sequential whose first layer carries batch_input_shape (as TF.js and
    Keras 2 allow) with that shape as an InputLayer of its own instead, which
    is how Keras 3's legacy reader builds it correctly."""
    layers = topology["config"]["layers"]
    if topology["class_name"] != "Sequential" or not layers or layers[0]["class_name"] == "InputLayer":
        return topology
    first = dict(layers[0], config=dict(layers[0]["config"]))
    shape = first["config"].pop("batch_input_shape", None)
    if shape is None:
        return topology
    dtype = first["config"].get("dtype", "float32")
    given = {
        "class_name": "InputLayer",
        "config": {
            "batch_input_shape": shape,
            "dtype": dtype,
            "sparse": False,
            "name": f"{first['config']['name']}_input",
        },
    }
    return {**topology, "config": {**topology["config"], "layers": [given, first, *layers[1:]]}}


def _with_call_arguments(topology: dict[str, Any]) -> dict[str, Any]:
    """Attention layers' use_causal_mask back where Keras takes it, in the
    call: their nodes in Keras 3's form (which its reader of Keras 2 files
    takes too), since Keras 2's form calls a layer on one list of tensors."""

    def tensor(name: str, node: int, index: int) -> dict[str, Any]:
        return {"class_name": "__keras_tensor__", "config": {"shape": [None], "dtype": "float32",
                                                                "keras_history": [name, node, index]}}  # fmt: skip

    layers = []
    for layer in topology["config"]["layers"]:
        if layer["class_name"] == "MultiHeadAttention":
            config = dict(layer["config"])
            causal = bool(config.pop("use_causal_mask", False))
            nodes = [
                {"args": [tensor(*ref[:3]) for ref in node], "kwargs": {"use_causal_mask": causal}}
                for node in layer["inbound_nodes"]
            ]
            layer = {**layer, "config": config, "inbound_nodes": nodes}
        layers.append(layer)
    return {**topology, "config": {**topology["config"], "layers": layers}}


def _write_keras2_h5(path: Path, topology: dict[str, Any], specs: list[WeightSpec], values: list[np.ndarray]) -> None:
    """The Keras 2 HDF5 layout: model_config, then model_weights/<layer>/<weight> in layer order."""
    import h5py

    topology = _with_call_arguments(_with_input_layer(topology))
    layers: dict[str, list[tuple[str, np.ndarray]]] = {}
    for spec, value in zip(specs, values):
        layer = spec.name.split("/", 1)[0]
        layers.setdefault(layer, []).append((spec.name, value))
    names = [layer["config"]["name"] for layer in topology["config"]["layers"]]
    unknown = set(layers) - set(names)
    if unknown:
        raise KerasFileError(f"weights of layers the topology does not have: {sorted(unknown)}")
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": topology["class_name"], "config": topology["config"]})
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = np.array([n.encode() for n in names])
        group.attrs["backend"], group.attrs["keras_version"] = "tensorflow", "2.15.0"
        for name in names:
            weights = layers.get(name, [])
            layer = group.create_group(name)
            layer.attrs["weight_names"] = np.array([f"{w}:0".encode() for w, _ in weights])
            for weight, value in weights:
                layer.create_dataset(f"{weight}:0", data=value)


def export_keras(model_path: Path, out: Path) -> Path:
    """TF.js files (model.json and its shards) -> a Keras 3 file (.keras or .h5)."""
    if out.suffix not in (".keras", ".h5"):
        raise KerasFileError(f"{out}: name the Keras file .keras (Keras 3's format) or .h5")
    topology, specs, values = _read_tfjs(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        legacy = Path(tmp) / "model.h5"
        _write_keras2_h5(legacy, topology, specs, values)
        try:
            model = keras().models.load_model(legacy, compile=False)
        except (ValueError, TypeError, KeyError) as err:
            raise KerasFileError(f"Keras 3 cannot build this model from its TF.js topology: {err}")
    loaded = {name for layer in model.layers for name in weight_names(layer)}
    if loaded != {s.name for s in specs}:
        raise KerasFileError(
            f"Keras built other weights than the files hold: {sorted(loaded ^ {s.name for s in specs})}"
        )
    model.save(out)
    return out
