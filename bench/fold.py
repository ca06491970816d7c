"""Fold capacity: milliseconds to fold K gradients into a new version, for
models of 0.1 M, 1 M and 10 M parameters and each codec.

What is timed is the fold's own work on one Lambda core: decoding and checking
K uploaded gradients, aggregating them, applying Adam, and encoding the new
weights and optimizer state for S3 (chalicelib's real functions). S3 and
DynamoDB latency is excluded: it is the same few requests whatever the model
(see bench/cost.py for their counts). Target: 8 gradients of 1 M parameters
in 50 ms or less.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench import common
from chalicelib.domain.codecs import CODECS
from chalicelib.domain.gradients import check_gradient
from chalicelib.domain.schema import parse_job
from chalicelib.domain.strategies import make_strategy
from chalicelib.domain.weights import WeightSpec, encode_tensors


def spec_for(parameters: int, codec: str):
    """A dense model of about `parameters` weights, as the fold sees it."""
    width = 1000
    rows = max(1, parameters // width)
    body = {
        "model": {
            "modelTopology": {
                "class_name": "Sequential",
                "config": {
                    "layers": [{"class_name": "Dense", "config": {"units": width, "batch_input_shape": [None, rows]}}]
                },
            },
            "weightsManifest": [
                {
                    "paths": [],
                    "weights": [
                        {"name": "dense/kernel", "shape": [rows, width], "dtype": "float32"},
                        {"name": "dense/bias", "shape": [width], "dtype": "float32"},
                    ],
                }
            ],
        },
        "dataset": {"batches": 1, "x": {"shape": [1, rows], "dtype": "float32"}, "y": {"shape": [1], "dtype": "int32"}},
        "optimizer": {"name": "adam"},
        "codec": codec,
        "gradients_per_update": 8,
    }
    return parse_job(body, 50_000_000, 10)


def time_fold(parameters: int, codec: str, k: int, repeats: int) -> dict:
    spec = spec_for(parameters, codec)
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=s.shape).astype(np.float32) * 0.01 for s in spec.weight_specs]
    uploads = [
        CODECS[codec].encode([rng.normal(size=s.shape).astype(np.float32) * 0.01 for s in spec.weight_specs])
        for _ in range(k)
    ]
    optimizer, strategy = spec.build_optimizer(), make_strategy("mean")
    state = optimizer.initial_state(weights)
    slot_specs = [WeightSpec(f"{slot}/{s.name}", s.shape) for slot in state.slots for s in spec.weight_specs]
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        grads = [check_gradient(spec, data) for data in uploads]
        combined = strategy.aggregate(grads)
        new_weights, new_state = optimizer.apply(weights, combined, state)
        encode_tensors(spec.weight_specs, new_weights)
        encode_tensors(slot_specs, [t for slot in new_state.slots.values() for t in slot])
        timings.append((time.perf_counter() - start) * 1000)
    return {
        "parameters": sum(s.size for s in spec.weight_specs),
        "codec": codec,
        "k": k,
        "ms_median": statistics.median(timings),
        "ms_min": min(timings),
        "upload_bytes": len(uploads[0]),
    }


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    sizes = [100_000, 1_000_000] if args.quick else [100_000, 1_000_000, 10_000_000]
    rows = []
    for parameters in sizes:
        for codec in CODECS:
            row = time_fold(parameters, codec, k=8, repeats=2 if args.quick else (3 if parameters > 5e6 else 7))
            row["folds_per_second"] = 1000 / row["ms_median"]
            rows.append(row)
            print(
                f"{row['parameters']:>10,} params  {codec:<5} K=8  {row['ms_median']:8.1f} ms per fold "
                f"({row['folds_per_second']:.1f} updates/s)"
            )
    target = next(r for r in rows if r["parameters"] >= 1_000_000 and r["codec"] == "fp32")
    print(
        f"target: 8 x 1M fp32 in <= 50 ms: {target['ms_median']:.1f} ms -> "
        f"{'met' if target['ms_median'] <= 50 else 'NOT met'}"
    )
    common.save("fold", {"rows": rows, "target_ms": 50, "target_met": target["ms_median"] <= 50}, args)


if __name__ == "__main__":
    main()
