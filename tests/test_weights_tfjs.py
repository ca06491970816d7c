"""The TF.js layers format written by numpy loads in TF.js, and TF.js's saved
models read back in numpy, with identical values (TF.js runs under Node)."""

import functools
import http.server
import json
import threading

import numpy as np
import pytest

from chalicelib.domain.errors import BadRequest
from chalicelib.domain.models import parse_model
from chalicelib.domain.weights import WeightSpec, decode_tensors, encode_tensors, model_json
from tests.harness import softmax_topology
from tests.tfjs import tfjs


def lstm_topology(vocab: int, units: int, seq: int) -> dict:
    """A small char-LSTM, the kind of model crowdtrain's demo trains."""
    return {
        "class_name": "Sequential",
        "config": {
            "name": "char_lstm",
            "layers": [
                {
                    "class_name": "LSTM",
                    "config": {
                        "name": "lstm",
                        "units": units,
                        "return_sequences": False,
                        "recurrent_initializer": {"class_name": "GlorotUniform", "config": {}},
                        "batch_input_shape": [None, seq, vocab],
                        "dtype": "float32",
                    },
                },
                {"class_name": "Dense", "config": {"name": "out", "units": vocab, "activation": "softmax"}},
            ],
        },
        "keras_version": "tfjs-layers 4.22.0",
        "backend": "tensor_flow.js",
    }


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server over tmp_path, as CloudFront serves a version's folder."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    "topology,specs",
    [
        (softmax_topology(6, 4), [WeightSpec("dense/kernel", (6, 4)), WeightSpec("dense/bias", (4,))]),
        (
            lstm_topology(12, 8, 5),
            [
                WeightSpec("lstm/kernel", (12, 32)),
                WeightSpec("lstm/recurrent_kernel", (8, 32)),
                WeightSpec("lstm/bias", (32,)),
                WeightSpec("out/kernel", (8, 12)),
                WeightSpec("out/bias", (12,)),
            ],
        ),
    ],
    ids=["dense", "lstm"],
)
def test_numpy_written_weights_load_in_tfjs(served, topology, specs):
    folder, url = served
    rng = np.random.default_rng(3)
    tensors = [rng.normal(size=s.shape).astype(np.float32) for s in specs]
    (folder / "model.json").write_bytes(model_json(topology, specs))
    (folder / "weights.bin").write_bytes(encode_tensors(specs, tensors))
    loaded = tfjs("load", f"{url}/model.json")
    assert loaded["names"] == [s.name for s in specs]
    for spec, ours, shape, theirs in zip(specs, tensors, loaded["shapes"], loaded["values"]):
        assert tuple(shape) == spec.shape
        assert np.array_equal(np.asarray(theirs, np.float32), ours.ravel()), spec.name


def test_tfjs_saved_weights_read_back_in_numpy(tmp_path):
    saved = tfjs("save", str(tmp_path), payload={"topology": lstm_topology(10, 6, 4)})
    document = json.loads((tmp_path / "model.json").read_text())
    topology, specs = parse_model(document, max_values=10**6)
    assert [s.name for s in specs] == saved["names"] and document["weightsManifest"][0]["paths"] == ["weights.bin"]
    tensors = decode_tensors(specs, (tmp_path / "weights.bin").read_bytes())
    for ours, theirs in zip(tensors, saved["values"]):
        assert np.array_equal(ours.ravel(), np.asarray(theirs, np.float32))
    assert topology["class_name"] == "Sequential"


def test_decode_checks_length_and_encode_checks_shapes():
    specs = [WeightSpec("w", (2, 2))]
    with pytest.raises(BadRequest, match="exactly 16 bytes"):
        decode_tensors(specs, b"\0" * 12)
    with pytest.raises(ValueError, match="shape"):
        encode_tensors(specs, [np.zeros((4,), np.float32)])
    with pytest.raises(BadRequest, match="more than the allowed 3 parameters"):
        parse_model(
            {
                "modelTopology": softmax_topology(2, 2),
                "weightsManifest": [{"paths": [], "weights": [s.to_json() for s in specs]}],
            },
            3,
        )
