"""A job's model document (TF.js layers format: topology and weights
manifest): which layers the fold can train, and the weights it moves."""

from __future__ import annotations

from typing import Any

from chalicelib.domain import validate
from chalicelib.domain.errors import BadRequest
from chalicelib.domain.weights import WeightSpec

MODEL_CLASSES = ("Sequential", "Model", "Functional")
# How an InputLayer's config gives its shape so that TF.js 4.22 can build it.
INPUT_SHAPE_KEYS = {"batch_input_shape", "batchInputShape", "input_shape", "inputShape"}
# Options of a supported layer that the page's layer has only at these values
# (the first its default): attention over a sequence's steps with no dropout.
OPTIONS: dict[str, dict[str, tuple[Any, ...]]] = {
    "MultiHeadAttention": {
        "dropout": (0, 0.0),
        "attention_axes": (None, [1], 1),
        "output_shape": (None,),
        "use_gate": (False,),
        "sliding_window": (None,),
    },
    "LayerNormalization": {"rms_scaling": (False,)},
}
# The weights a layer updates itself as it trains, by layer type: weight name -> what it is.
STATISTICS = {"BatchNormalization": {"moving_mean": "mean", "moving_variance": "variance"}}
# Layers the page trains: every weight by gradient, except the statistics a
# layer keeps itself (STATISTICS), which travel with a result as the change
# the layer made to them and are folded by their own rule (domain/statistics.py).
TRAINABLE_LAYERS = {
    "BatchNormalization",
    "InputLayer",
    "Dense",
    "Dropout",
    "Activation",
    "Flatten",
    "Reshape",
    "Permute",
    "RepeatVector",
    "Embedding",
    "LSTM",
    "GRU",
    "SimpleRNN",
    "Bidirectional",
    "TimeDistributed",
    "Conv1D",
    "Conv2D",
    "DepthwiseConv2D",
    "SeparableConv2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "ZeroPadding2D",
    "Cropping2D",
    "UpSampling2D",
    "Concatenate",
    "Add",
    "Multiply",
    "Average",
    "LayerNormalization",
    "MultiHeadAttention",
    "SpatialDropout1D",
    "GaussianNoise",
    "LeakyReLU",
    "ReLU",
    "Softmax",
}


def parse_model(document: Any, max_values: int) -> tuple[dict[str, Any], tuple[WeightSpec, ...]]:
    """The topology and weight specs of a model.json document."""
    if not isinstance(document, dict):
        raise BadRequest("model must be a TF.js model.json object")
    topology = model_topology(document)
    if not isinstance(topology, dict) or not isinstance(topology.get("class_name"), str):
        raise BadRequest("modelTopology must be a Keras model config with a class_name")
    _check_layers(topology)
    manifest = document.get("weightsManifest")
    if not isinstance(manifest, list) or not manifest:
        raise BadRequest("model.json has no weightsManifest")
    entries = []
    for group in manifest:
        if not isinstance(group, dict) or not isinstance(group.get("weights"), list):
            raise BadRequest("each weightsManifest group needs a weights list")
        paths = group.get("paths", [])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise BadRequest("weightsManifest paths must be a list of file names")
        entries.extend(group["weights"])
    return topology, _weight_specs(entries, max_values, statistics(topology))


def model_topology(document: dict[str, Any]) -> Any:
    """A model.json's Keras config (the converter nests it in model_config)."""
    topology = document.get("modelTopology")
    return topology["model_config"] if isinstance(topology, dict) and "model_config" in topology else topology


def _layers(topology: dict[str, Any]) -> Any:
    """A topology's layer list (a Sequential's config may be the list itself)."""
    config = topology.get("config")
    return config.get("layers") if isinstance(config, dict) else config


def statistics(topology: Any) -> dict[str, str]:
    """The weights of a topology that its layers update themselves, by
    manifest name (`<layer>/<weight>`, as TF.js and import-keras name them)."""
    layers = _layers(topology) if isinstance(topology, dict) else None
    found = {}
    for layer in layers if isinstance(layers, list) else []:
        settings = layer.get("config") if isinstance(layer, dict) else None
        if isinstance(settings, dict) and isinstance(settings.get("name"), str):
            for weight, state in STATISTICS.get(layer.get("class_name"), {}).items():
                found[f"{settings['name']}/{weight}"] = state
    return found


def _check_layers(topology: dict[str, Any]) -> None:
    """400 for a model kind or layer type crowdtrain cannot train (the first of them)."""
    problems = untrainable(topology)
    if problems:
        raise BadRequest(problems[0])


def untrainable(topology: dict[str, Any]) -> list[str]:
    """Every model kind, layer type and layer option of a topology that the
    page cannot train, one sentence each: what the API refuses (the first)
    and `crowdtrain import-keras` lists (all) before it writes anything."""
    if topology.get("class_name") not in MODEL_CLASSES:
        return [f"model class {topology.get('class_name')!r} is not supported; use one of {sorted(MODEL_CLASSES)}"]
    layers = _layers(topology)
    if not isinstance(layers, list) or not layers:
        return ["modelTopology.config must list the model's layers"]
    problems = []
    for layer in layers:
        kind = layer.get("class_name") if isinstance(layer, dict) else None
        settings = layer.get("config") if isinstance(layer, dict) else None
        name = settings.get("name") if isinstance(settings, dict) else None
        if kind not in TRAINABLE_LAYERS:
            problems.append(
                f"layer type {kind!r} is not supported{f' (layer {name!r})' if name else ''}: the page trains "
                f"{', '.join(sorted(TRAINABLE_LAYERS))}"
            )
        elif kind == "InputLayer" and not (isinstance(settings, dict) and INPUT_SHAPE_KEYS & set(settings)):
            problems.append(
                "an InputLayer needs batch_input_shape, which TF.js reads; Keras 3 writes batch_shape, "
                "which TF.js 4.22 cannot load: convert Keras files with `crowdtrain import-keras`"
            )
        elif kind in OPTIONS and isinstance(settings, dict) and (options := _options(kind, settings)):
            problems.append(f"layer {name!r}: {kind} {options} does not train in the page (frontend/src/layers.js)")
        elif (
            kind == "GRU"
            and isinstance(settings, dict)
            and settings.get("reset_after", settings.get("resetAfter"))
            and (settings.get("dropout") or settings.get("recurrent_dropout", settings.get("recurrentDropout")))
        ):
            problems.append(
                f"layer {name!r}: a GRU with reset_after=True (Keras 3's default) trains in the page "
                "(frontend/src/layers.js) without dropout only; build it with dropout=0 and recurrent_dropout=0"
            )
    return problems


def _options(kind: str, settings: dict[str, Any]) -> str:
    """A layer's options the page's layer does not have, as `name=value` (empty: none)."""
    wrong = []
    for option, allowed in OPTIONS[kind].items():
        value = settings.get(option, settings.get(_camel(option), allowed[0]))
        if value not in allowed:
            wrong.append(f"{option}={value!r}")
    return ", ".join(wrong)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _weight_specs(entries: list[Any], max_values: int, statistics: dict[str, str]) -> tuple[WeightSpec, ...]:
    """A manifest's weight entries (float32 only: they are trained), each
    marked with the statistic it is where a layer updates it itself."""
    if not entries:
        raise BadRequest("weights manifest must list at least one weight")
    specs: list[WeightSpec] = []
    names: set[str] = set()
    total = 0
    for i, entry in enumerate(entries):
        entry = validate.body_object(entry, f"weight {i}")
        name = entry.get("name")
        if not isinstance(name, str) or not name or len(name) > 256:
            raise BadRequest(f"weight {i} needs a name of 1-256 characters")
        if name in names:
            raise BadRequest(f"weight name {name!r} appears twice")
        if "quantization" in entry:
            raise BadRequest(f"weight {name!r} is quantized; save the model with float32 weights")
        if entry.get("dtype", "float32") != "float32":
            raise BadRequest(f"weight {name!r} has dtype {entry.get('dtype')!r}; only float32 weights can be trained")
        shape = entry.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) > 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2**31 for d in shape)
        ):
            raise BadRequest(f"weight {name!r} needs a shape of up to 8 positive integers")
        spec = WeightSpec(name, tuple(shape), state=statistics.get(name, ""))
        total += spec.size
        if total > max_values:
            raise BadRequest(f"model has more than the allowed {max_values} parameters")
        names.add(name)
        specs.append(spec)
    return tuple(specs)
