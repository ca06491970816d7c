"""The page's gradient encoders (frontend/src/codecs.js) write the same bytes as chalicelib's."""

import json
import subprocess

import numpy as np
import pytest

from chalicelib.domain.codecs import CODECS
from crowdtrain.paths import ROOT

ORACLE = ROOT / "frontend" / "test" / "oracle" / "codec.mjs"


def js_encode(codec: str, tensors: list[np.ndarray]) -> bytes:
    payload = json.dumps({"codec": codec, "tensors": [t.ravel().tolist() for t in tensors]})
    out = subprocess.run(["node", str(ORACLE)], input=payload, capture_output=True, text=True, check=True, timeout=60)
    return bytes.fromhex(out.stdout)


def cases():
    rng = np.random.default_rng(11)
    yield "normal", [rng.normal(size=(40, 7)).astype(np.float32), rng.normal(size=13).astype(np.float32) * 1e-3]
    yield "wide range", [(rng.normal(size=500) * 10.0 ** rng.integers(-9, 5, size=500)).astype(np.float32)]
    yield (
        "edges",
        [
            np.array(
                [0, -0.0, 65504, 65520, 1e6, -1e6, 2**-24, 2**-25, 3 * 2**-26, 1 + 2**-11, 6.1e-5, -5.96e-8, 0.5, -1],
                np.float32,
            ),
            np.zeros(4, np.float32),
        ],
    )
    yield "halfway", [np.array([1.5, -2.5, 0.5, 127.5], np.float32) / np.float32(127.5)]


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("name,tensors", list(cases()), ids=[c[0] for c in cases()])
def test_page_and_server_codecs_write_identical_bytes(codec, name, tensors):
    ours = CODECS[codec].encode(tensors)
    theirs = js_encode(codec, tensors)
    assert len(theirs) == len(ours)
    assert theirs == ours, (
        f"{codec}/{name}: first difference at byte {next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)}"
    )
