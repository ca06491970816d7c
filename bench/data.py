"""Data per trained sample and per volunteer-hour: the demo job at
`crowdtrain create`'s defaults beside the settings it was chosen from.

For the demo's model (LSTM(128), sequences of 40, batches of 32: 148,096
parameters) a task moves its version (model.json and weights.bin, fp32, as
the fold writes them), its batches (KJV text as stored, gzip-encoded, as
the edge sends them) and its upload (the codec's size). Per trained sample:
all three over the samples the task trains. Alone, a volunteer of a job
whose versions are its moves summed (frontend/src/trajectory.js) fetches
no version after its first; in a crowd it fetches one a task. Per hour of
compute (an upper bound: requests and pauses only lower it): at the local
step time bench/speedup.py measured with one volunteer (TF.js wasm in Node
on this machine). The bytes are counted, not modelled: the same
tests/test_local_steps.py measures from a lease of the default job.
"""

from __future__ import annotations

import gzip
import json

import numpy as np

from bench import common
from chalicelib.domain.codecs import get_codec
from chalicelib.domain.weights import WeightSpec, model_json
from crowdtrain.jobs.charlstm import CharLSTM
from crowdtrain.jobs.corpus import kjv_text

# (name, local steps H (0: a gradient per task), codec, whether a lone volunteer skips versions)
SETTINGS = [
    ("a gradient per task, fp32 (the default before)", 0, "fp32", False),
    ("a gradient per task, fp16", 0, "fp16", False),
    ("H = 8, fp16", 8, "fp16", True),
    ("H = 32, fp32", 32, "fp32", True),
    ("H = 32, fp16 (the default)", 32, "fp16", True),
    ("H = 32, int8", 32, "int8", True),
    ("H = 64, fp16", 64, "fp16", True),
]
TARGET = 1500  # bytes per trained sample (issue 38: the per-batch default moved 37,000)
STEP_SECONDS = 0.2  # where bench/speedup.py has not run: about a browser's step on 2 cores


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    model = CharLSTM(units=(128,), seq_len=40, batch_size=32)
    specs = [WeightSpec(w["name"], tuple(w["shape"])) for w in model.weight_specs()]
    shapes = [s.shape for s in specs]
    version = len(model_json(model.topology(), specs)) + 4 * sum(s.size for s in specs)
    x, y = model.batches(kjv_text("gen1:1-jude1:25"), 16 if args.quick else 256, seed=0)
    batch = float(np.mean([len(gzip.compress(model.batch_file(x[b], y[b]), mtime=0)) for b in range(len(x))]))
    speedup = common.RESULTS / "speedup.json"
    measured = json.loads(speedup.read_text())["runs"].get("default-h32-n1") if speedup.exists() else None
    step = measured["measured"]["step_seconds"] if measured else STEP_SECONDS
    rows = []
    for name, h, codec, skips in SETTINGS:
        steps = max(1, h)
        upload = get_codec(codec).size(shapes)
        samples = steps * model.batch_size
        crowd = (version + steps * batch + upload) / samples
        alone = ((0 if skips else version) + steps * batch + upload) / samples
        rows.append(
            {
                "setting": name,
                "local_steps": h,
                "codec": codec,
                "bytes_per_task": {"version": version, "batches": steps * batch, "upload": upload},
                "per_sample_crowd": crowd,
                "per_sample_alone": alone,
                "mb_per_compute_hour_alone": alone * samples / (steps * step) * 3600 / 1e6,
                "mb_per_compute_hour_crowd": crowd * samples / (steps * step) * 3600 / 1e6,
            }
        )
        print(
            f"{name:48} {crowd:8.0f} B/sample in a crowd, {alone:8.0f} alone, "
            f"{rows[-1]['mb_per_compute_hour_alone']:7.0f} MB per compute-hour alone",
            flush=True,
        )
    default = next(r for r in rows if "(the default)" in r["setting"])
    goal = {"per_sample": default["per_sample_crowd"], "target": TARGET}
    met = goal["per_sample"] <= TARGET
    print(f"target: <= {TARGET:,} bytes per trained sample at the defaults -> {'met' if met else 'NOT met'}")
    common.save(
        "data",
        {
            "goals": [{**goal, "met": goal["per_sample"] <= TARGET}],
            "step_seconds": step,
            "step_from": "bench/speedup.py" if measured else "assumed",
            "version_bytes": version,
            "batch_bytes": batch,
            "rows": rows,
        },
        args,
    )


if __name__ == "__main__":
    main()
