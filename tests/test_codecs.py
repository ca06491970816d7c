"""Gradient codecs: round trips, exact lengths, and the 8-bit layout."""

import numpy as np
import pytest

from chalicelib.domain.codecs import CODECS, get_codec
from chalicelib.domain.errors import BadRequest

SHAPES = [(7, 5), (5,), (2, 3, 4)]


def tensors(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=s) * scale).astype(np.float32) for s in SHAPES]


@pytest.mark.parametrize("name", sorted(CODECS))
def test_round_trip_and_exact_length(name):
    codec = get_codec(name)
    values = tensors()
    data = codec.encode(values)
    assert len(data) == codec.size(SHAPES)
    decoded = codec.decode(data, SHAPES)
    assert [d.shape for d in decoded] == SHAPES and all(d.dtype == np.float32 for d in decoded)
    for original, back in zip(values, decoded):
        peak = np.abs(original).max()
        tolerance = {"fp32": 0, "fp16": peak * 2**-11, "int8": peak / 127 / 2 * 1.0001}[name]
        assert np.abs(original - back).max() <= tolerance
    for wrong in (data[:-1], data + b"\0", b""):
        with pytest.raises(BadRequest, match="exactly"):
            codec.decode(wrong, SHAPES)


def test_sizes():
    n = sum(int(np.prod(s)) for s in SHAPES)
    assert get_codec("fp32").size(SHAPES) == 4 * n
    assert get_codec("fp16").size(SHAPES) == 2 * n
    assert get_codec("int8").size(SHAPES) == n + 4 * len(SHAPES)


def test_int8_layout_is_scales_then_bytes():
    data = get_codec("int8").encode([np.array([0.5, -1.0, 0.25], np.float32), np.zeros(2, np.float32)])
    scales = np.frombuffer(data[:8], "<f4")
    assert scales[0] == np.float32(1.0 / 127) and scales[1] == 0
    assert list(np.frombuffer(data[8:], np.int8)) == [64, -127, 32, 0, 0]  # floor(x/scale + 0.5)


def test_fp16_overflow_becomes_infinite_not_clipped():
    decoded = get_codec("fp16").decode(get_codec("fp16").encode([np.array([1e6], np.float32)]), [(1,)])
    assert np.isinf(decoded[0][0])


def test_unknown_codec():
    with pytest.raises(BadRequest, match="unknown gradient codec"):
        get_codec("bf16")
