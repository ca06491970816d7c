"""What makes an uploaded gradient acceptable. One check, used both when a
volunteer completes a task (to answer 400 at once) and again by the fold
(which never trusts what it did not check itself)."""

from __future__ import annotations

import hashlib

import numpy as np

from chalicelib.domain.codecs import get_codec
from chalicelib.domain.errors import BadRequest
from chalicelib.domain.spec import JobSpec


def digest(data: bytes) -> str:
    """What pins a gradient (or a partial sum) to the bytes that were checked."""
    return hashlib.sha256(data).hexdigest()


def check_gradient(spec: JobSpec, data: bytes) -> list[np.ndarray]:
    """Decode a gradient; 400 unless it has the exact size, only finite values
    and a global L2 norm within the job's bound."""
    tensors = get_codec(spec.codec).decode(data, spec.shapes)
    # One dot product per tensor: NaN or infinity anywhere makes it non-finite
    # (then the slower scan says which); otherwise it is the squared norm.
    squares = [float(np.dot(t.ravel(), t.ravel())) for t in tensors]
    if not all(np.isfinite(sq) for sq in squares) and not all(np.isfinite(t).all() for t in tensors):
        raise BadRequest("gradient contains NaN or infinite values")
    norm = float(np.sqrt(sum(squares)))
    if norm > spec.max_grad_norm:
        raise BadRequest(f"gradient norm {norm:.4g} exceeds the job's bound {spec.max_grad_norm:.4g}")
    return tensors
