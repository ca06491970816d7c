"""A job's model tried in TF.js before anything is uploaded: the page's own
Trainer loads it (Node, the frontend's packages, the cpu backend) and takes
one gradient on the job's first batch. A model TF.js cannot load or train
(a Keras 3 InputLayer, a shape that does not fit the data, a non-finite loss)
stops `crowdtrain create` with TF.js's error, before volunteers see it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from chalicelib.domain.keys import SHARD_NAME
from chalicelib.domain.models import model_topology, statistics
from crowdtrain.paths import ROOT

TOOL = ROOT / "frontend" / "tools" / "check_model.mjs"
TIMEOUT_SECONDS = 300


def check_in_tfjs(spec: dict[str, Any], weights: bytes, batch: bytes) -> float | None:
    """The loss of one forward and backward pass in TF.js; SystemExit with
    TF.js's error when it fails; None (with a warning) where Node or the
    frontend's packages are missing, so nothing could be checked."""
    result = _run(spec, weights, batch, gradient=False)
    return None if result is None else result["loss"]


def gradient_in_tfjs(spec: dict[str, Any], weights: bytes, batch: bytes) -> tuple[float, list[list[float]]]:
    """The loss and the gradient (one flat list per weight, in the manifest's
    order) of one forward and backward pass in TF.js: what tests compare with Keras."""
    result = _run(spec, weights, batch, gradient=True)
    if result is None:
        raise SystemExit("TF.js is not here to compute a gradient (needs node and `make frontend`)")
    return result["loss"], result["grads"]


def _run(spec: dict[str, Any], weights: bytes, batch: bytes, gradient: bool) -> dict[str, Any] | None:
    if not shutil.which("node") or not (ROOT / "frontend" / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        print("warning: the model was not tried in TF.js (needs node and `make frontend`)", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / SHARD_NAME).write_bytes(weights)
        (Path(tmp) / "batch.bin").write_bytes(batch)
        request = {
            "spec": spec,
            "weights": str(Path(tmp) / SHARD_NAME),
            "batch": str(Path(tmp) / "batch.bin"),
            "gradient": gradient,
            # the weights the model's layers update themselves, as the API marks them
            "statistics": statistics(model_topology(spec["model"])),
        }
        proc = subprocess.run(
            ["node", str(TOOL)], input=json.dumps(request), capture_output=True, text=True, timeout=TIMEOUT_SECONDS
        )
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"could not try the model in TF.js: {proc.stderr.strip()[-1000:]}")
    if not result["ok"]:
        raise SystemExit(f"TF.js cannot train this model on this data, so no volunteer could: {result['error']}")
    return result
