"""Wasted work: the share of computed samples that never reach the model, with
16 volunteers of mixed speed (a quarter of them 4x slower).

The simulated volunteers of bench/scaling.py (every request real, against the
local stack; compute a sleep of the step time; pipelined as the page is,
prefetch 1) train one job to its end. Wasted = samples computed − samples
folded (status `samples`), over samples computed: results discarded as
stale or otherwise, and leases lost before completion. The same K and S in
every case; the slow volunteers' results land about four times later than
the fast ones'. Cases: one mini-batch per task (today's per-batch tasks),
H = 8 local steps for everyone, and a range of 2 to 8 steps with a target
task time (each volunteer picks its steps as the page does, so a slow device
does about a quarter as many). Target: ≤ 5 % with the range.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from bench import common
from bench.scaling import Volunteer
from crowdtrain.local.process import LocalCloudProcess

VOLUNTEERS, SLOW, SLOWDOWN = 16, 4, 4
# S = 16: a fast volunteer's pipelined result lands about 7 versions after its lease in every case
K, STALENESS = 4, 16


def run_case(case: str, step: float, batches: int, epochs: int, local_steps: dict | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalCloudProcess(Path(tmp))
        try:
            extra = {"local_steps": local_steps} if local_steps else {}
            # leases long enough for a slow volunteer's 8 steps: these volunteers do not heartbeat
            job = stack.char_lstm_job(
                batches=batches,
                epochs=epochs,
                k=K,
                seq_len=20,
                batch_size=32,
                staleness=STALENESS,
                lease_seconds=600,
                **extra,
            )
            stop = threading.Event()
            crowd = [
                Volunteer(
                    stack.state["api"],
                    f"{'slow' if i < SLOW else 'fast'}-{i}",
                    step * (SLOWDOWN if i < SLOW else 1),
                    step * i / VOLUNTEERS,
                    stop,
                    pipelined=True,
                )
                for i in range(VOLUNTEERS)
            ]
            started = time.monotonic()
            for v in crowd:
                v.start()
            status = stack.wait_for(job, lambda s: s["status"] == "finished", timeout=1800)
            stop.set()
            for v in crowd:
                v.join(timeout=step * SLOWDOWN * 8 + 30)
            seconds = time.monotonic() - started
        finally:
            stack.stop()
    computed = sum(v.computed for v in crowd)
    slow_computed = sum(v.computed for v in crowd[:SLOW])
    folded = status["samples"]
    row = {
        "case": case,
        "local_steps": local_steps,
        "computed": computed,
        "folded": folded,
        "wasted_share": (computed - folded) / computed,
        "slow_share_of_computed": slow_computed / computed,
        "discarded": status["discarded"],
        "lost_leases": sum(v.lost for v in crowd),
        "versions": status["version"],
        "seconds": seconds,
    }
    print(
        f"{case}: wasted {row['wasted_share']:.1%} of {computed:,} computed samples "
        f"({folded:,} folded; the slow quarter computed {row['slow_share_of_computed']:.0%}); "
        f"discarded {row['discarded']}, lost leases {row['lost_leases']}, {seconds:.0f} s",
        flush=True,
    )
    return row


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    # 2 s: slow enough that this machine's moto keeps up with 16 volunteers' per-batch tasks; a
    # faster step backs the results queue up until results go stale waiting in it, which AWS's fold would not
    p.add_argument("--step-ms", type=float, default=None, help="a fast volunteer's simulated step (2,000; quick: 100)")
    args = p.parse_args()
    args.step_ms = args.step_ms or (100 if args.quick else 2000)
    step = args.step_ms / 1000
    scale = 0.1 if args.quick else 1.0
    ranged = {"steps": 8, "min_steps": 2, "target_seconds": max(1.0, 8 * step)}  # the API takes 1 s or more
    cases = [
        ("per-batch tasks (H = 1)", int(240 * scale), 1, None),
        ("H = 8 for every volunteer", int(192 * scale), 2, {"steps": 8}),
        ("H from 2 to 8 by step time", int(192 * scale), 4, ranged),
    ]
    rows = [run_case(name, step, batches, epochs, local) for name, batches, epochs, local in cases]
    met = rows[-1]["wasted_share"] <= 0.05
    print(f"range of H: wasted {rows[-1]['wasted_share']:.1%} (target <= 5 %) -> {'met' if met else 'NOT met'}")
    common.save(
        "wasted",
        {
            "volunteers": VOLUNTEERS,
            "slow": SLOW,
            "slowdown": SLOWDOWN,
            "k": K,
            "staleness": STALENESS,
            "step_ms": args.step_ms,
            "rows": rows,
            "target": 0.05,
            "target_met": met,
        },
        args,
    )


if __name__ == "__main__":
    main()
