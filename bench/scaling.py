"""Scaling: training samples per second with 1, 2, 4, 8, 16 and 32 volunteers.

Each simulated volunteer does everything a browser does over HTTP against the
real local stack (lease, download weights and batch from the edge server,
upload through the presigned form, complete; the dispatcher runs the real
fold), except that its compute is a sleep of the measured step time, so that
this 2-core machine is not the limit of the volunteers' own compute. Scaling
efficiency(n) = rate(n) / (n x rate(1)). Target: 95 % or more at 32.
"""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

import common
from tests.localstack import StackProcess
from crowdtrain.api import Api, post_form


class Volunteer(threading.Thread):
    def __init__(self, api_url: str, name: str, step_seconds: float, stop: threading.Event, log: list):
        super().__init__(daemon=True)
        self.api, self.name_, self.step, self.stop, self.log = Api(api_url), name, step_seconds, stop, log
        self.http = requests.Session()

    def run(self) -> None:
        while not self.stop.is_set():
            task = self.api.call("POST", "/tasks/lease", {"volunteer_id": self.name_}, signed=False)
            if task is None:
                time.sleep(0.2)
                continue
            base = task["model_url"].rsplit("/", 1)[0]
            self.http.get(f"{base}/weights.bin", timeout=30).raise_for_status()
            self.http.get(task["batch_url"], timeout=30).raise_for_status()
            time.sleep(self.step)  # the browser's gradient computation
            post_form(task["upload"], np.zeros(task["upload_bytes"], np.uint8).tobytes())
            try:
                self.api.call("POST", "/tasks/complete",
                              {"job_id": task["job_id"], "lease_token": task["lease_token"], "loss": 1.0}, signed=False)
            except Exception as err:  # a lost lease is part of the measurement
                self.log.append(("lost", time.monotonic(), str(err)))
                continue
            self.log.append(("done", time.monotonic(), task["job"]["batch_size"]))


def measure(stack: StackProcess, n: int, step: float, seconds: float) -> dict:
    stop, log = threading.Event(), []
    crowd = [Volunteer(stack.state["api"], f"sim-{n}-{i}", step, stop, log) for i in range(n)]
    for v in crowd:
        v.start()
    warmup = step * 2 + 1
    time.sleep(warmup)
    start = time.monotonic()
    time.sleep(seconds)
    end = time.monotonic()
    stop.set()
    for v in crowd:
        v.join(timeout=30)
    samples = sum(size for kind, t, size in log if kind == "done" and start <= t < end)
    return {"volunteers": n, "samples_per_second": samples / (end - start),
            "lost": sum(1 for kind, *_ in log if kind == "lost")}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    # 674 ms: one gradient step of TF.js's LSTM(128) text example (batch 32) on
    # wasm in headless Chromium on this kind of machine (shared/paper/facts.md).
    # The paper's tiny model at sequence 1024 is far slower per step (see
    # bench/overhead.py), which only makes the coordination load lighter.
    p.add_argument("--step-ms", type=float, default=674, help="simulated compute per task")
    args = p.parse_args()
    step = args.step_ms
    counts, seconds = ([1, 2], 4) if args.quick else ([1, 2, 4, 8, 16, 32], 20)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stack = StackProcess(Path(tmp))
        try:
            stack.char_lstm_job(batches=20 if args.quick else 400, epochs=500, k=3, seq_len=128, batch_size=32)
            for n in counts:
                row = measure(stack, n, step / 1000, seconds)
                rows.append(row)
                base = rows[0]["samples_per_second"]
                row["efficiency"] = row["samples_per_second"] / (n * base) if base else float("nan")
                print(f"{n:>3} volunteers: {row['samples_per_second']:8.1f} samples/s, "
                      f"efficiency {row['efficiency']:.0%}, lost leases {row['lost']}", flush=True)
        finally:
            stack.stop()
    last = rows[-1]
    print(f"target >= 95 % at {last['volunteers']}: {last['efficiency']:.0%} -> "
          f"{'met' if last['efficiency'] >= 0.95 else 'NOT met'}")
    common.save("scaling", {"step_ms": step, "seconds_per_point": seconds, "rows": rows,
                            "target": 0.95, "target_met": last["efficiency"] >= 0.95}, args)


if __name__ == "__main__":
    main()
