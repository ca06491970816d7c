"""Gradient wire formats, one small codec per format, chosen by name.

A gradient is the list of tensors of a model's weights, in the order of the
weights manifest. On the wire it is one flat little-endian byte string; its
exact length follows from the shapes, so a decoder rejects any other length
instead of guessing. The browser encoder (frontend/src/codecs.js) produces the
same bytes for the same float32 values.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from chalicelib.domain.errors import BadRequest

Shape = Sequence[int]


def _sizes(shapes: Sequence[Shape]) -> list[int]:
    return [int(np.prod(s, dtype=np.int64)) for s in shapes]


def _split(flat: np.ndarray, shapes: Sequence[Shape]) -> list[np.ndarray]:
    out, start = [], 0
    for shape, size in zip(shapes, _sizes(shapes)):
        out.append(flat[start : start + size].reshape(shape))
        start += size
    return out


def _flatten(tensors: Sequence[np.ndarray]) -> np.ndarray:
    if not tensors:
        return np.zeros(0, np.float32)
    return np.concatenate([np.asarray(t, np.float32).ravel() for t in tensors])


class Codec:
    """Encodes a list of float32 tensors to bytes and back."""

    name: str = ""

    def size(self, shapes: Sequence[Shape]) -> int:
        """Exact encoded length in bytes for tensors of these shapes."""
        raise NotImplementedError

    def encode(self, tensors: Sequence[np.ndarray]) -> bytes:
        raise NotImplementedError

    def _decode(self, data: bytes, shapes: Sequence[Shape]) -> list[np.ndarray]:
        raise NotImplementedError

    def decode(self, data: bytes, shapes: Sequence[Shape]) -> list[np.ndarray]:
        """Decode to float32 tensors; the length must match exactly."""
        expected = self.size(shapes)
        if len(data) != expected:
            raise BadRequest(f"{self.name} gradient must be exactly {expected} bytes, got {len(data)}")
        return self._decode(data, shapes)


class Float32Codec(Codec):
    """Lossless: 4 bytes per value."""

    name = "fp32"

    def size(self, shapes: Sequence[Shape]) -> int:
        return 4 * sum(_sizes(shapes))

    def encode(self, tensors: Sequence[np.ndarray]) -> bytes:
        return _flatten(tensors).astype("<f4").tobytes()

    def _decode(self, data: bytes, shapes: Sequence[Shape]) -> list[np.ndarray]:
        return _split(np.frombuffer(data, "<f4").astype(np.float32, copy=False), shapes)


class Float16Codec(Codec):
    """IEEE half precision, round to nearest even: 2 bytes per value.

    Values beyond the half range become infinite and are then rejected by the
    fold's finiteness check, never silently clipped.
    """

    name = "fp16"

    def size(self, shapes: Sequence[Shape]) -> int:
        return 2 * sum(_sizes(shapes))

    def encode(self, tensors: Sequence[np.ndarray]) -> bytes:
        with np.errstate(over="ignore"):
            return _flatten(tensors).astype("<f2").tobytes()

    def _decode(self, data: bytes, shapes: Sequence[Shape]) -> list[np.ndarray]:
        return _split(np.frombuffer(data, "<f2").astype(np.float32), shapes)


class Int8Codec(Codec):
    """8-bit linear quantization with one float32 scale per tensor.

    Layout: one little-endian float32 scale per tensor, then every value as a
    signed byte q, with value = q * scale. The scale is max|x| / 127 rounded to
    float32, and q = floor(x / scale + 0.5) computed in float64: both steps
    are exact enough to be reproduced bit for bit in JavaScript.
    """

    name = "int8"

    def size(self, shapes: Sequence[Shape]) -> int:
        return 4 * len(shapes) + sum(_sizes(shapes))

    def encode(self, tensors: Sequence[np.ndarray]) -> bytes:
        scales = np.zeros(len(tensors), "<f4")
        quantized: list[np.ndarray] = []
        for i, tensor in enumerate(tensors):
            values = np.asarray(tensor, np.float32).ravel().astype(np.float64)
            peak = float(np.max(np.abs(values))) if values.size else 0.0
            scale = np.float32(peak / 127.0)
            scales[i] = scale
            if scale == 0 or not np.isfinite(scale):
                # Zeros stay zeros; a non-finite scale is kept so the fold rejects it.
                quantized.append(np.zeros(values.size, np.int8))
                continue
            q = np.floor(values / np.float64(scale) + 0.5)
            quantized.append(np.clip(q, -127, 127).astype(np.int8))
        body = np.concatenate(quantized) if quantized else np.zeros(0, np.int8)
        return scales.tobytes() + body.tobytes()

    def _decode(self, data: bytes, shapes: Sequence[Shape]) -> list[np.ndarray]:
        count = len(shapes)
        scales = np.frombuffer(data[: 4 * count], "<f4")
        values = np.frombuffer(data[4 * count :], np.int8).astype(np.float32)
        tensors = _split(values, shapes)
        return [t * np.float32(s) for t, s in zip(tensors, scales)]


CODECS: dict[str, Codec] = {c.name: c for c in (Float32Codec(), Float16Codec(), Int8Codec())}


def get_codec(name: str) -> Codec:
    """The codec registered under `name`, or a 400 naming the choices."""
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        raise BadRequest(f"unknown gradient codec {name!r}; choose one of {sorted(CODECS)}")
