"""Time to loss: how much sooner N volunteers reach the held-out loss that one
TF.js process reaches after 1,200 and 2,400 steps.

The model and data are the demo's (LSTM(128), sequences of 40, batches of 32,
400 batches of KJV Genesis to Jude; the loss held out on 8 batches of
Revelation). One process: frontend/tools/sequential.mjs, Adam 0.01, 2,400
steps, its held-out loss every 100. A crowd: N Node volunteers running the
page's own loop (frontend/tools/volunteer.mjs, TF.js wasm) on the local
stack, in a job folded by the rule named (RULES) with H local steps, until it
reaches the 2,400-step loss or spends --budget times the sequential run's
samples; then the held-out loss of its versions, as samples go.

The clock is modelled, since N volunteers share this machine's 2 cores. A
volunteer's task takes tau = H t + o + b: t is a local step's compute time
and o what a task's requests and the fold add where the page waits for
them, both measured by the default rule's run with one volunteer (its loop's
compute time over its steps, and its wall time less its compute over its
tasks); b, in synchronous rounds only, is the round's barrier: the waits its
volunteers were told to make (a full round's answer, or an empty queue's
retry while the fold queues the next round), per volunteer and round, in
the crowd's own run (on 2 shared cores the fold is slower than alone, so b
errs long). N volunteers of this speed each deliver a task every tau: the
v-th version folds K results and lands at v K tau / N (asynchronous, K = 1:
N versions a task time; rounds, K = N: one). One process takes s steps in
s t. Speed-up at a target: s t over the crowd's time to the first version at
or below that loss (interpolated between the versions evaluated). A crowd
whose loss climbs DIVERGED above its first version's is stopped there.

Runs are long on 2 cores: one crowd per invocation (`--volunteers N
--rule R`), each kept in bench/results/speedup.json; the sequential run is
made once and kept.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import common
from bench.quality import ADAM, TOOLS, held_out_job, initial_weights, node, sequential_run, urls, validation_curve
from crowdtrain.api import ApiError
from crowdtrain.jobs.charlstm import CharLSTM
from crowdtrain.jobs.corpus import kjv_text
from crowdtrain.local.process import LocalCloudProcess

STEPS = (1200, 2400)  # the sequential steps whose losses are the targets
TARGET, TARGET_CROWD = 8, 16  # a speed-up of 8x or more with 16 volunteers
BATCHES, HELD_OUT_BATCHES = 400, 8
POLL_SECONDS = 20  # between checks of a crowd's newest version (--quick: 2)
NOISE_BATCHES = 64  # single batches whose gradients estimate the noise scale
DIVERGED = 0.5  # nats/char above the first version's loss: the crowd diverged, the run stops
# How a crowd's results are folded: the demo's default (each move applied as it lands), FedAvg's rounds
# (the mean of a round of N), and DiLoCo's (a round's mean through outer Nesterov momentum).
RULES = {
    "default": {"k": "1", "optimizer": {"name": "sgd", "learning_rate": 1.0}, "synchronous": False},
    # rounds' epochs are whole rounds: 512 batches for 16 volunteers of H = 32 (crowd_batches)
    "rounds": {"k": "n", "optimizer": {"name": "sgd", "learning_rate": 1.0}, "synchronous": True},
    "diloco": {
        "k": "n",
        "optimizer": {"name": "momentum", "learning_rate": 0.7, "momentum": 0.9, "use_nesterov": True},
        "synchronous": True,
    },
}


def crowd_batches(rule: str, volunteers: int, local_steps: int, base: int) -> int:
    """A crowd's epoch: `base` batches, or in rounds of N tasks of H, a whole number of rounds (an
    update takes K results or the rest of its epoch: a round cut short would leave volunteers idle)."""
    if RULES[rule]["k"] == "1":
        return base
    round_ = volunteers * local_steps
    return -(-base // round_) * round_


def crowd_spec(model: CharLSTM, rule: str, volunteers: int, local_steps: int, epochs: int, batches: int) -> dict:
    r = RULES[rule]
    k = 1 if r["k"] == "1" else volunteers
    return model.job_spec(
        batches,
        optimizer=r["optimizer"],
        gradients_per_update=k,
        synchronous=r["synchronous"],
        staleness=0 if r["synchronous"] else 2 * volunteers,
        epochs=epochs,
        lease_seconds=600,
        codec="fp16",
        local_steps={"steps": local_steps, "optimizer": ADAM, "keep_state": True},
    )


def run_crowd(
    stack, job_id: str, volunteers: int, target: float, eval_urls: list[str], spec: dict, poll_seconds: float
) -> dict:
    """N Node volunteers on the job until its newest version is at or below
    `target` (then the job is paused and they stop) or the job finishes."""
    procs = [
        subprocess.Popen(
            ["node", str(TOOLS / "volunteer.mjs"), stack.state["api"], f"node-{i}", job_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(volunteers)
    ]
    started, checked, first, diverged = time.monotonic(), -1, None, False
    while any(p.poll() is None for p in procs):
        time.sleep(poll_seconds)
        status = stack.api.call("GET", f"/jobs/{job_id}")
        if status["status"] != "running" or status["version"] == checked:
            continue
        checked = status["version"]
        loss = node(
            "evaluate.mjs",
            payload={"spec": spec, "model_urls": urls(stack, job_id, "model", [checked]), "eval_urls": eval_urls},
        )[0]
        print(f"  {time.monotonic() - started:5.0f} s: version {checked}, held-out loss {loss:.4f}", flush=True)
        first = loss if first is None else first
        diverged = diverged or (checked > 0 and loss > first + DIVERGED)
        if loss <= target or diverged:  # reached, or no longer learning: the run ends
            try:
                stack.api.call("POST", f"/jobs/{job_id}/pause")
            except ApiError as err:  # it finished while that version was evaluated: nothing to pause
                if err.status != 409:
                    raise
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    status = stack.api.call("GET", f"/jobs/{job_id}")
    return {"status": status, "volunteers": reports, "seconds": time.monotonic() - started, "diverged": diverged}


def noise_scale(stack, job_id: str, spec: dict, version: int, batches: int) -> dict:
    """B_simple = tr(Σ) / |G|² at one version (McCandlish et al. 2018, appendix A): from the
    mean squared norm of `batches` single batches' gradients (B = 32) and the squared norm of
    their mean (B = 32 × batches), each an unbiased estimate of |G|² + tr(Σ)/B."""
    m = node(
        "noise.mjs",
        payload={
            "spec": spec,
            "model_url": urls(stack, job_id, "model", [version])[0],
            "batch_urls": urls(stack, job_id, "batch", range(batches)),
        },
    )
    small, big = m["batch_size"], m["batch_size"] * m["batches"]
    g2 = (big * m["big"] - small * m["small"]) / (big - small)
    trace = (m["small"] - m["big"]) / (1 / small - 1 / big)
    return {"version": version, "gradient_norm2": g2, "trace": trace, "b_simple": trace / g2}


def time_to(curve: list[list[float]], target: float) -> float | None:
    """The first point (in the curve's x) at or below `target`, interpolated
    linearly from the point before; None if never."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if y1 <= target:
            return x1 if y0 <= target or y0 == y1 else x0 + (x1 - x0) * (y0 - target) / (y0 - y1)
    return None


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--volunteers", type=int, default=1, help="the crowd's size, N")
    p.add_argument("--rule", choices=sorted(RULES), default="default", help="how its results are folded")
    p.add_argument("--local-steps", type=int, default=32, help="H")
    p.add_argument("--budget", type=float, default=3.0, help="the most samples, in sequential runs of 2,400 steps")
    p.add_argument(
        "--noise-scale",
        action="store_true",
        help="also measure the gradient noise scale at the crowd's first and last versions "
        "(how many samples a step can use)",
    )
    args = p.parse_args()
    steps = (12, 24) if args.quick else STEPS
    base, poll_seconds = (32, 2) if args.quick else (BATCHES, POLL_SECONDS)  # --quick: a smoke run
    path = common.results_path("speedup", args)
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    results.pop("machine", None)
    results.pop("quick", None)
    model = CharLSTM(units=(16,) if args.quick else (128,), seq_len=40, batch_size=32)
    x, y = model.batches(kjv_text("gen1:1-jude1:25"), base, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalCloudProcess(Path(tmp))
        try:
            eval_urls = urls(stack, held_out_job(stack, model, HELD_OUT_BATCHES), "batch", range(HELD_OUT_BATCHES))
            weights = initial_weights(model)
            if "sequential" not in results:
                # one task of all the batches: a lease skips a stopped job's queued tasks only a few at a time
                serving = stack.api.create_job(
                    model.job_spec(base, optimizer=ADAM, local_steps={"steps": base}),
                    weights,
                    (model.batch_file(x[b], y[b]) for b in range(base)),
                )
                stack.api.call("POST", f"/jobs/{serving}/pause")  # it only serves its version 0 and batches
                started = time.monotonic()
                out = sequential_run(stack, serving, base, -(-steps[-1] // base), eval_urls, eval_every=steps[0] // 12)
                curve = [[s // 32, loss] for s, loss in out["val"] if s // 32 <= steps[-1]]
                results["sequential"] = {
                    "curve": curve,
                    "seconds": time.monotonic() - started,
                    "targets": {str(s): float(np.interp(s, *zip(*curve))) for s in steps},
                }
                common.save("speedup", results, args)
                # gone, not paused: a paused job's queued tasks would stand in front of the crowd's
                while not stack.api.call("DELETE", f"/jobs/{serving}")["deleted"]:
                    pass
            targets = {int(s): v for s, v in results["sequential"]["targets"].items()}
            name = f"{args.rule}-h{args.local_steps}-n{args.volunteers}"
            one = results["runs"].get(f"default-h{args.local_steps}-n1")
            if (args.volunteers > 1 or args.rule != "default") and one is None:
                raise SystemExit(
                    f"run --volunteers 1 --local-steps {args.local_steps} first: "
                    "its task time is the clock of every crowd"
                )
            batches = crowd_batches(args.rule, args.volunteers, args.local_steps, base)
            if batches != base:  # the same text, more sequences of it
                x, y = model.batches(kjv_text("gen1:1-jude1:25"), batches, seed=0)
            epochs = max(1, round(args.budget * steps[-1] / batches))
            spec = crowd_spec(model, args.rule, args.volunteers, args.local_steps, epochs, batches)
            job_id = stack.api.create_job(spec, weights, (model.batch_file(x[b], y[b]) for b in range(batches)))
            print(f"{name}: {args.volunteers} volunteers, up to {epochs} epochs", flush=True)
            run = run_crowd(
                stack,
                job_id,
                args.volunteers,
                targets[steps[-1]],
                eval_urls,
                stack.api.call("GET", f"/jobs/{job_id}")["spec"],
                poll_seconds,
            )
            curve = validation_curve(
                stack, job_id, run["status"], eval_urls, points=min(61, run["status"]["version"] + 1)
            )
            reports = run["volunteers"]
            tasks = sum(r["tasks"] for r in reports)
            measured = {
                "step_seconds": sum(r["compute_ms"] for r in reports) / 1000 / max(1, tasks * args.local_steps),
                "overhead_seconds": sum(r["seconds"] - r["compute_ms"] / 1000 for r in reports) / max(1, tasks),
            }
            clock = one["measured"] if one else measured
            k = 1 if RULES[args.rule]["k"] == "1" else args.volunteers
            # a round's barrier: the waits its volunteers were told to make (a full round's, and an empty
            # queue's retry: the next round's tasks are queued by its fold), per volunteer and round
            rounds = max(1, run["status"]["version"])
            barrier = 0.0
            if RULES[args.rule]["synchronous"]:
                barrier = sum(r["idle_ms"] for r in reports) / 1000 / args.volunteers / rounds
            tau = args.local_steps * clock["step_seconds"] + clock["overhead_seconds"] + barrier
            per_sample = tau / (args.volunteers * args.local_steps * 32)  # the crowd's seconds per sample folded
            reached = {}
            for s, target in targets.items():
                samples = time_to([[c[0], c[1]] for c in curve], target)
                crowd = None if samples is None else samples * per_sample
                reached[str(s)] = {
                    "target": target,
                    "samples": samples,
                    "seconds": crowd,
                    "sequential_seconds": s * clock["step_seconds"],
                    "speedup": None if crowd is None else s * clock["step_seconds"] / crowd,
                }
            if args.noise_scale:  # at the crowd's first version and its last, on the job's first batches
                results["noise_scale"] = [
                    noise_scale(stack, job_id, run["status"]["spec"], v, 8 if args.quick else NOISE_BATCHES)
                    for v in (0, run["status"]["version"])
                ]
                print(
                    "gradient noise scale B_simple: "
                    + ", ".join(
                        f"{n['b_simple']:,.0f} samples at version {n['version']}" for n in results["noise_scale"]
                    )
                )
            results["runs"][name] = {
                "rule": args.rule,
                "volunteers": args.volunteers,
                "local_steps": args.local_steps,
                "k": k,
                "measured": measured,
                "tau_seconds": tau,
                "barrier_seconds": barrier,
                "diverged": run["diverged"],
                "curve": curve,
                "reached": reached,
                "tasks": tasks,
                "fetched": {
                    key: sum(r["fetched"].get(key, 0) for r in reports)
                    for key in {key for r in reports for key in r["fetched"]}
                },
                "round_waits": sum(r["round_waits"] for r in reports),
                "discarded": run["status"]["discarded"],
                "wall_seconds": run["seconds"],
            }
            for s, r in reached.items():
                print(
                    f"{name}: to the loss of {s} sequential steps ({r['target']:.4f}): "
                    + (
                        "not reached"
                        if r["speedup"] is None
                        else f"{r['samples']:.0f} samples, speed-up {r['speedup']:.2f}x"
                    ),
                    flush=True,
                )
        finally:
            stack.stop()
    results["rows"], results["goals"] = table_rows(results["runs"]), goals(results["runs"], steps[0])
    goal = results["goals"][0]
    print(
        f"target: speed-up >= {TARGET}x with {TARGET_CROWD} volunteers -> {'met' if goal['met'] else 'NOT met'} "
        f"(best {goal['speedup_text']}, {goal['rule']})"
    )
    common.save("speedup", results, args)


def table_rows(runs: dict) -> list[dict]:
    """docs/benchmarks.md's rows: each run at each target, by rule, H and crowd size."""
    rows = []
    for run in sorted(runs.values(), key=lambda r: (r["rule"], r["local_steps"], r["volunteers"])):
        fetched = run["fetched"].get("weights", 0) + run["fetched"].get("model", 0)
        barrier = run.get("barrier_seconds", 0.0)
        uncounted = RULES[run["rule"]]["synchronous"] and not barrier  # a run from before its waits were counted
        for steps, r in run["reached"].items():
            done = r["speedup"] is not None
            rows.append(
                {
                    **run,
                    **r,
                    "steps": int(steps),
                    "samples_text": f"{r['samples']:,.0f}" if done else "not reached",
                    "seconds_text": f"{r['seconds']:,.0f}" if done else "—",
                    "speedup_text": f"{r['speedup']:.1f}x" if done else "—",
                    "fetched_text": f"{fetched} / {run['tasks']}",
                    "barrier_text": "not counted" if uncounted else f"{barrier:.1f}",
                    # the same crowd were its rounds' barrier nothing (each volunteer on a core of its own)
                    "unbarred_text": f"{r['speedup'] * run['tau_seconds'] / (run['tau_seconds'] - barrier):.1f}x"
                    if done
                    else "—",
                }
            )
    return rows


def goals(runs: dict, steps: int) -> list[dict]:
    """The summary's row: the best rule's speed-up with TARGET_CROWD volunteers to the first target
    (1,200 steps' loss: the later one sits on the sequential run's plateau, which a crowd's noise
    reaches late; the table has both)."""
    reached = [
        (r["reached"][str(steps)]["speedup"] or 0, r["rule"]) for r in runs.values() if r["volunteers"] == TARGET_CROWD
    ]
    best, rule = max(reached, default=(0, "not measured"))
    text = f"{best:.1f}x" if best else "—"
    return [
        {"n": TARGET_CROWD, "steps": steps, "speedup_text": text, "rule": rule, "target": TARGET, "met": best >= TARGET}
    ]


if __name__ == "__main__":
    main()
