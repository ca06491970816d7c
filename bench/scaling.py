"""Scaling: training samples per second with 1, 2, 4, 8, 16 and 32 volunteers.

Each simulated volunteer does everything a browser does over HTTP against the
real local stack (lease, download weights and batch from the edge server,
upload through the presigned form, complete; the dispatcher runs the real
fold), except that its compute is a sleep of the measured step time, so that
this 2-core machine is not the limit of the volunteers' own compute. Scaling
efficiency(n) = rate(n) / (n x rate(1)). Target: 95 % or more at 32.

Three cases: the paper's model (sequence 1,024, a step as long as the
browser's measured in bench/overhead.py), a step as short as TF.js's
LSTM(128) text example's, which loads the coordination 30 times harder, and
that short step with 8 local steps per task (`local_steps`: a task is 8
batches, downloaded and stepped through, and one upload), one task at a time
and pipelined as the page does it (prefetch 1: the next task leased and
downloaded, and the last one delivered, while one computes). A volunteer's rate is
its completions in the window less one, over the time between its first and
last: no rounding to whole tasks, even when a step is a third of the window.
Volunteers arrive spread over one step; results the fold discards (too stale)
do not count as trained.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from bench import common
from crowdtrain.api import Api, ApiError, post_form
from crowdtrain.local.process import LocalCloudProcess


class Volunteer(threading.Thread):
    def __init__(
        self,
        api_url: str,
        name: str,
        step_seconds: float,
        arrive_seconds: float,
        stop: threading.Event,
        pipelined: bool = False,
    ):
        super().__init__(daemon=True)
        self.api, self.name_, self.step, self.stop = Api(api_url), name, step_seconds, stop
        self.token: str | None = None
        self.arrive, self.pipelined = arrive_seconds, pipelined
        self.http = requests.Session()
        self.done: list[tuple[float, int, float]] = []  # (when, samples, seconds of requests) per task
        self.computed = 0  # samples computed, whether the API took them or not
        self.measured = False  # whether it has timed a local step of its own (as the page has after one task)
        self.lost = 0
        self.errors = 0  # requests that failed (connection reset, 5xx, 429) and were retried

    def run(self) -> None:
        self.stop.wait(self.arrive)
        while not self.stop.is_set():
            try:
                self.pipeline() if self.pipelined else self.one_task()
            except (requests.RequestException, ApiError):  # a browser backs off and tries again
                self.errors += 1
                time.sleep(0.5)

    def acquire(self) -> tuple[dict, float] | None:
        """Lease a task and download what it needs: (task, seconds), or None after a short wait."""
        start = time.monotonic()
        if self.token is None:  # the page's identity, issued once (POST /volunteers)
            self.token = self.api.call("POST", "/volunteers", {"name": self.name_}, signed=False)["volunteer_token"]
        task = self.api.call("POST", "/tasks/lease", {"volunteer_token": self.token}, signed=False)
        if task is None:
            time.sleep(0.2)
            return None
        base = task["model_url"].rsplit("/", 1)[0]
        self.http.get(f"{base}/weights.bin", timeout=30).raise_for_status()
        task["steps"] = self.steps_for(task)
        for url in task["batch_urls"][: task["steps"]]:  # one, or one per local step
            self.http.get(url, timeout=30).raise_for_status()
        return task, time.monotonic() - start

    def steps_for(self, task: dict) -> int:
        """The page's choice (VolunteerLoop.stepsFor): all the task's batches, or
        with a range of local steps as many as fit the target at its step time,
        at most the budget the server gave the lease."""
        every = len(task["batch_urls"])
        local = task["spec"].get("local_steps")
        if not local or local["min_steps"] >= local["steps"]:
            return every
        most = min(every, task.get("steps", every))
        least = min(local["min_steps"], most)
        fit = int(local["target_seconds"] // self.step) if self.measured else least
        return max(least, min(fit, most))

    def compute(self, task: dict) -> None:
        time.sleep(self.step * task["steps"])  # the browser's gradient computation (or local steps)
        self.computed += task["spec"]["dataset"]["x"]["shape"][0] * task["steps"]
        self.measured = True

    def deliver(self, task: dict, seconds: float) -> None:
        """Upload and complete; the task counts with `seconds` of requests before its compute."""
        start = time.monotonic()
        post_form(task["upload"], np.zeros(task["upload_bytes"], np.uint8).tobytes())
        try:
            self.api.call(
                "POST",
                "/tasks/complete",
                {
                    "job_id": task["job_id"],
                    "lease_token": task["lease_token"],
                    "volunteer_token": self.token,
                    "loss": 1.0,
                    "steps": task["steps"],
                },
                signed=False,
            )
        except ApiError as err:
            if err.status not in (409, 410):
                raise
            self.lost += 1  # the lease ended first: part of the measurement
            return
        end = time.monotonic()
        samples = task["spec"]["dataset"]["x"]["shape"][0] * task["steps"]
        self.done.append((end, samples, seconds + end - start))

    def one_task(self) -> None:
        acquired = self.acquire()
        if acquired:
            self.compute(acquired[0])
            self.deliver(*acquired)

    def pipeline(self) -> None:
        """What the page does (prefetch 1): the next task is leased and downloaded,
        and the last one delivered, while one computes."""
        with ThreadPoolExecutor(2) as pool:
            nxt, delivering = pool.submit(self.acquire), None
            while not self.stop.is_set():
                acquired = nxt.result()
                nxt = pool.submit(self.acquire)
                if acquired:
                    self.compute(acquired[0])
                    if delivering:
                        delivering.result()
                    delivering = pool.submit(self.deliver, *acquired)
            if delivering:
                delivering.result()


def measure(stack: LocalCloudProcess, n: int, step: float, seconds: float, pipelined: bool = False) -> dict:
    stop = threading.Event()
    # volunteers arrive spread over one step, as people do: started together with
    # equal steps, they would hit the API in lock-step bursts for the whole run
    crowd = [Volunteer(stack.state["api"], f"sim-{n}-{i}", step, step * i / n, stop, pipelined) for i in range(n)]
    for v in crowd:
        v.start()
    warmup = step * 3 + 1
    time.sleep(warmup)
    start = time.monotonic()
    time.sleep(seconds)
    end = time.monotonic()
    stop.set()
    for v in crowd:
        v.join(timeout=step + 30)
    rate, request_times = 0.0, []
    for v in crowd:
        done = [d for d in v.done if start <= d[0] < end]
        if len(done) >= 2:
            rate += sum(size for _, size, _ in done[1:]) / (done[-1][0] - done[0][0])
        else:  # a volunteer slowed to under two tasks a window: count what it finished
            rate += sum(size for _, size, _ in done) / (end - start)
        request_times += [r for _, _, r in done]
    return {
        "volunteers": n,
        "samples_per_second": rate,
        "lost": sum(v.lost for v in crowd),
        "errors": sum(v.errors for v in crowd),
        "completed": sum(len(v.done) for v in crowd),
        "request_seconds_median": float(np.median(request_times)) if request_times else float("nan"),
        "request_seconds_p95": common.percentile(request_times, 95),
    }


def discarded(stack: LocalCloudProcess, job: str) -> int:
    """Results the fold threw away so far (stale ones, mostly): accepted by the API, yet not trained on.
    Read once the fold has caught up (version and discards unchanged for a second)."""

    def read() -> tuple[int, int]:
        status = stack.api.call("GET", f"/jobs/{job}")
        return status["version"], sum(status["discarded"].values())

    previous, deadline = read(), time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(1)
        current = read()
        if current == previous:
            break
        previous = current
    return previous[1]


def scale(
    case: str,
    seq_len: int,
    step_ms: float,
    counts: list[int],
    min_seconds: float,
    local_steps: int = 1,
    pipelined: bool = False,
) -> dict:
    # staleness 16: with 32 volunteers and K = 3 a result lands about 32 / 3 versions after its
    # lease, so a smaller bound discards work the crowd did (section 4 shows what S costs);
    # pipelined, a task is leased a task ahead of its compute, so results land about twice as far
    staleness = 32 if pipelined else 16
    """One case on a fresh local stack: rows of volunteers, samples/s, efficiency, lost leases."""
    task_ms = step_ms * local_steps
    seconds = max(min_seconds, 3 * task_ms / 1000 + 5)  # at least two completions per volunteer
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalCloudProcess(Path(tmp))
        try:
            local = {"local_steps": {"steps": local_steps}} if local_steps > 1 else {}
            job = stack.char_lstm_job(
                batches=400 * local_steps, epochs=500, k=3, seq_len=seq_len, batch_size=32, staleness=staleness, **local
            )
            for n in counts:
                before = discarded(stack, job)
                row = measure(stack, n, step_ms / 1000, seconds, pipelined)  # a task sleeps a step per batch
                # results the fold dropped were computed for nothing: only the rest count
                row["discarded"] = discarded(stack, job) - before
                row["trained_per_second"] = row["samples_per_second"] * (1 - row["discarded"] / row["completed"])
                rows.append(row)
                base = rows[0]["trained_per_second"]
                row["efficiency"] = row["trained_per_second"] / (n * base)
                print(
                    f"{case}: {n:>3} volunteers: {row['trained_per_second']:8.2f} samples/s trained "
                    f"({row['samples_per_second']:.2f} accepted), efficiency {row['efficiency']:.0%}, "
                    f"requests per task median {row['request_seconds_median']:.2f} s "
                    f"(p95 {row['request_seconds_p95']:.2f} s), lost leases {row['lost']}, errors {row['errors']}, "
                    f"discarded {row['discarded']} of {row['completed']}",
                    flush=True,
                )
        finally:
            stack.stop()
    return {
        "case": case,
        "seq_len": seq_len,
        "step_ms": step_ms,
        "local_steps": local_steps,
        "pipelined": pipelined,
        "staleness": staleness,
        "seconds_per_point": seconds,
        "rows": rows,
        "target_met": rows[-1]["efficiency"] >= 0.95,
    }


def measured_step_ms() -> float | None:
    """The paper model's browser step as bench/overhead.py last measured it."""
    path = common.RESULTS / "overhead.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["summary"]["compute"]["median"]


# name: (sequence length, step: the paper model's or the short one, local steps, pipelined)
CASES = {
    "paper model": (1024, "paper", 1, False),
    "short step": (128, "short", 1, False),
    "short step, 8 local steps": (128, "short", 8, False),
    "short step, 8 local steps, pipelined": (128, "short", 8, True),
}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--paper-step-ms",
        type=float,
        default=measured_step_ms(),
        help="simulated compute per task, paper model (default: bench/overhead.py's compute median "
        "at sequence 1,024, from bench/results/overhead.json)",
    )
    # 674 ms: one step of TF.js's LSTM(128) text example, batch 32, wasm (shared/paper/facts.md).
    p.add_argument("--fast-step-ms", type=float, default=674, help="simulated compute per task, short-step case")
    p.add_argument(
        "--case",
        action="append",
        choices=CASES,
        help="run only this case (repeatable); the others are kept from bench/results/scaling.json",
    )
    args = p.parse_args()
    if args.paper_step_ms is None and not args.quick:
        p.error("no bench/results/overhead.json: run bench/overhead.py first or pass --paper-step-ms")
    if args.quick:
        cases = [scale("short step", 128, args.fast_step_ms, [1, 2], 4)]
    else:
        counts = [1, 2, 4, 8, 16, 32]
        step_ms = {"paper": args.paper_step_ms, "short": args.fast_step_ms}
        kept = (
            {c["case"]: c for c in json.loads((common.RESULTS / "scaling.json").read_text())["cases"]}
            if args.case and (common.RESULTS / "scaling.json").exists()
            else {}
        )
        cases = [
            kept[name]
            if args.case and name not in args.case and name in kept
            else scale(name, seq, step_ms[step], counts, 20, local_steps=steps, pipelined=pipelined)
            for name, (seq, step, steps, pipelined) in CASES.items()
        ]
    for case in cases:
        last = case["rows"][-1]
        print(
            f"{case['case']}: target >= 95 % at {last['volunteers']}: {last['efficiency']:.0%} -> "
            f"{'met' if case['target_met'] else 'NOT met'}"
        )
    common.save("scaling", {"cases": cases, "target": 0.95}, args)


if __name__ == "__main__":
    main()
