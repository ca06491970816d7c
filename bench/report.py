"""Write docs/benchmarks.md and its plots from bench/results/*.json."""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench import common  # noqa: E402


def load(results: Path, name: str) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def plot(path: Path, title: str, xlabel: str, ylabel: str, series: list[tuple[str, list, list]],
         logx: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 3.6 + 0.2 * len(series)), dpi=110)  # room for the legend below
    for i, (label, xs, ys) in enumerate(series):  # past the 10 colours, the same colours dashed
        ax.plot(xs, ys, marker="o", linestyle=("-", "--", ":")[i // 10 % 3], label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logx:
        ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small", frameon=False)  # off the curves
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def overhead_section(r: dict) -> list[str]:
    s = r["summary"]
    lines = ["## 1. Task overhead", "",
             f"One headless Chromium volunteer (TF.js wasm) on the paper's model (LSTM(10) → LSTM(10) → "
             f"softmax over 128, sequence {r['seq_len']}, batch 32) against the local stack; "
             f"{len(r['reports'])} tasks after the first (which also builds the model). Command: "
             f"`.venv/bin/python -m bench.overhead --seq-len {r['seq_len']} --tasks {len(r['reports'])}`.", "",
             "| phase | median ms | p95 ms |", "| --- | ---: | ---: |"]
    lines += [f"| {phase} | {s[phase]['median']:.1f} | {s[phase]['p95']:.1f} |"
              for phase in ("between", "lease", "download", "compute", "encode", "upload", "complete", "total")]
    lines += ["", "`between` is the worker's time between tasks (writing the text sample the page shows, once per "
              "version); `total` runs from the lease to the completion. Both count as wall time.", "",
              f"Overhead fraction (wall − compute) / wall: **{s['overhead_fraction']:.1%}** "
              f"(target ≤ 5 %: {'met' if r['target_met'] else 'not met'}).",
              f"Version caching: download median {_ms(s['download_median_when_weights'])} when the version "
              f"changed (weights and batch) and {_ms(s['download_median_when_cached'])} when the loaded model "
              "was current (batch only).", ""]
    if r.get("shorter"):
        t = r["shorter"]
        lines += [f"The same at sequence {t['seq_len']} (the script's second run, `--short-seq-len`): "
                  f"compute median {t['compute_median']:.0f} ms, overhead {t['overhead_fraction']:.1%}. The "
                  "local stack's requests (lease, downloads, upload, complete: ~0.3 s a task) are what a short "
                  "step cannot hide.", ""]
    if r.get("accumulated"):
        a = r["accumulated"]
        lines += [f"Local accumulation (the third run, `--accumulate {a['batch'] // a['micro_batch']}`): "
                  f"sequence {a['seq_len']}, a batch of {a['batch']} per task computed {a['micro_batch']} "
                  f"sequences at a time (`dataset.micro_batch`, heartbeats between micro-batches): compute "
                  f"median {a['compute_median']:.0f} ms, overhead **{a['overhead_fraction']:.1%}**. One task's "
                  "requests now serve several mini-batches, and the browser holds one micro-batch's "
                  "activations; each task is one update's worth of gradient, so K and the learning rate "
                  "should be chosen for the larger batch.", ""]
    if r.get("pipelined"):
        on, off = r["pipelined"]["prefetch_1"], r["pipelined"]["prefetch_0"]
        lines += [f"Pipelining (the last run, `--pipeline-seq-len {r['pipelined']['seq_len']}`): a short step "
                  f"(compute median {on['compute_median']:.0f} ms) with the page's pipeline on and off, the "
                  "overhead measured on the wall clock as the share of the time from the first task's compute to "
                  "the last's in which the worker was not computing: "
                  f"**{on['overhead_fraction']:.1%}** with the next task leased and downloaded and the last one "
                  f"delivered while one computes ({on['tasks']} tasks), {off['overhead_fraction']:.1%} one task at "
                  f"a time ({off['tasks']} tasks). Target ≤ 3 %: "
                  f"{'met' if r['pipelined']['target_met'] else '**not met**'}. Two things made it: the loop runs "
                  "on the page's main thread and only the step in the Web Worker (TF.js's wasm kernels are "
                  "synchronous, so requests made from the worker waited for each step to end: 17 % then), and "
                  "the page asks for a text sample at most every 20 s (each takes the worker some 100 ms).", ""]
    if r.get("threads"):
        t, one, default = r["threads"]["threaded"], r["threads"]["single"], r["threads"]["default"]
        lines += [f"Threaded wasm (`--threads-only` reruns it): the demo's model (LSTM(128), sequence 40, batch "
                  f"32) on TF.js's wasm backend in the page, cross-origin isolated ({t['isolated']}), so TF.js "
                  f"loads its threaded SIMD binary. With a thread per core (`?threads=N`, {t['threads']}): compute "
                  f"median {t['compute_median']:.0f} ms per task; with `?threads=1`: {one['compute_median']:.0f} "
                  f"ms; at TF.js's default ({default['threads']} here): {default['compute_median']:.0f} ms. "
                  f"Threaded / single-threaded steps per second: **{r['threads']['ratio']:.2f}x** on this "
                  "2-core machine, where the local stack and the browser's other threads share the cores."
                  + (" TF.js 4.22 loads its threaded SIMD binary here (the request log shows "
                     "`tfjs-backend-wasm-threaded-simd.wasm`, and its pool of 8 pthread workers starts) but its "
                     "`getThreadsCount()` says one thread however many `setThreadsCount` asks for, and the step "
                     "times agree: the kernels run on one thread, so isolation buys no speed with this TF.js "
                     "version on this machine." if t["threads"].startswith("1 ") else ""), ""]
    lines += ["An earlier version of the page asked the worker for an 80-character text sample every 3 s and "
              "wrote it by running the model over the whole window once per character, while the task in hand "
              "waited: at sequence 128 that showed up as ~2 s stalls in leases and uploads (p95), and at "
              "sequence 1,024 a sample took minutes, so no task finished. The sampler now keeps the LSTM's state "
              "(the seed is read once, then one step per character), runs between tasks, and only for a new "
              "version.", ""]
    return lines


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def scaling_section(r: dict, docs: Path) -> list[str]:
    cases = r["cases"]
    series = []
    for case in cases:
        rows = case["rows"]
        xs = [x["volunteers"] for x in rows]
        series.append((f"{case['case']}: efficiency", xs, [100 * x["efficiency"] for x in rows]))
    series.append(("target 95 %", [1, 32], [95, 95]))
    plot(docs / "scaling.png", "Scaling (simulated compute)", "volunteers", "efficiency %", series, logx=True)
    lines = ["## 2. Scaling", "",
             "Simulated volunteers over HTTP against the local stack: each leases, downloads the weights and "
             "the batch, sleeps for the compute, uploads and completes, and the dispatcher runs the real fold "
             "(K = 3, staleness 16; 32 for the pipelined case, whose results land a task later), volunteers "
             "arriving spread over one step. The pipelined volunteers do what the page does (prefetch 1): the "
             "next task is leased and downloaded, and the last one delivered, while one computes; the others "
             "do one task at a time. A volunteer's rate is its completions less one over the time between its "
             "first and last in the window. `discarded`: accepted results the fold dropped as too stale, of all "
             "completed in the point; `trained` counts only the rest, and efficiency is computed from it. "
             "`requests`: a task's time outside the compute (lease, downloads, upload, complete), median. "
             "`errors`: requests that failed (a reset connection, a 5xx) and were retried. "
             "Command: `.venv/bin/python -m bench.scaling`.", ""]
    for case in cases:
        steps = case.get("local_steps", 1)
        compute = (f"compute {case['step_ms']:,.0f} ms" if steps == 1 else
                   f"{steps} local steps of {case['step_ms']:,.0f} ms a task")
        lines += [f"**{case['case']}** (sequence {case['seq_len']}, {compute}, "
                  f"{case['seconds_per_point']:.0f} s per point, after one step of arrivals and two of warm-up):", "",
                  "| volunteers | trained samples/s | efficiency | requests s | lost leases | errors | discarded |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {x['volunteers']} | {x['trained_per_second']:.2f} | {x['efficiency']:.0%} | "
                  f"{x['request_seconds_median']:.2f} | {x['lost']} | {x['errors']} | "
                  f"{x['discarded']} of {x['completed']} |" for x in case["rows"]]
        lines += ["", f"Target ≥ 95 % at 32: {'met' if case['target_met'] else 'not met'}.", ""]
    short = next((c for c in cases if c["case"] == "short step"), cases[-1])

    def eff(name: str) -> str:
        return next((f"{c['rows'][-1]['efficiency']:.0%}" for c in cases if c["case"] == name), "n/a")
    lines += ["![scaling](benchmarks/scaling.png)", "",
              f"The paper-model case sleeps for section 1's compute median at sequence 1,024 "
              f"({cases[0]['step_ms']:,.0f} ms); the short-step case for one wasm step of TF.js's LSTM(128) text "
              f"example ({short['step_ms']:,.0f} ms, batch 32): "
              f"{cases[0]['step_ms'] / short['step_ms']:.0f} times more requests per second for the same "
              "crowd; with 8 local steps a task (the last two cases) a volunteer makes one round of requests per "
              "8 of those steps, and pipelined (the last) it also makes them while it computes: "
              f"{eff('short step, 8 local steps, pipelined')} at 32 volunteers, where one task at a time reaches "
              f"{eff('short step, 8 local steps')}. Everything AWS would run (moto server, the API, the fold, the edge server) and "
              "all simulated volunteers share this machine's 2 cores. In the short-step case that local stack "
              "is what saturates: a task's requests take longer as the crowd grows, and the slower tasks push "
              "results past the staleness bound. In AWS the API and fold Lambdas scale out, and a job's folds "
              "are serialized by its FIFO group (see the fold capacity below). Volunteers that all start at once "
              "with equal steps stay in lock-step and hit the API in bursts (an earlier run that way: requests "
              "per task 0.3 s with one volunteer, 0.8 s with four); arriving spread over a step, as people do, "
              "they do not.", ""]
    return lines


def fold_section(r: dict) -> list[str]:
    lines = ["### Fold capacity", "",
             "The fold's own work per update (decode and check K = 8 gradients, aggregate, Adam, encode the "
             "new version), on one core, without S3/DynamoDB latency. Command: `.venv/bin/python -m bench.fold`.",
             "", "| parameters | codec | upload bytes | ms per fold | updates/s |", "| ---: | --- | ---: | ---: | ---: |"]
    lines += [f"| {x['parameters']:,} | {x['codec']} | {x['upload_bytes']:,} | {x['ms_median']:.1f} | "
              f"{x['folds_per_second']:.1f} |" for x in r["rows"]]
    lines += ["", f"Target 8 × 1 M parameters in ≤ 50 ms: {'met' if r['target_met'] else 'not met'}.", ""]
    return lines


def fold_throughput_section(r: dict) -> list[str]:
    lines = ["### Fold throughput with AWS-like latency", "",
             "One job's fold through the real handlers on moto, every S3 call made to wait 25 ms and every "
             f"DynamoDB call {r['latency_seconds']['dynamodb'] * 1000:.0f} ms (typical same-region figures from "
             "a Lambda), the paper's model; only the function's own time is counted. moto runs in the same "
             "process and is slow where AWS is not (it scans its in-memory tables: a BatchGetItem of 100 keys "
             "takes about 120 ms), so each rate is also given with moto's own time taken out (the union of its "
             "calls' intervals; the injected latency stays in). "
             "Command: `.venv/bin/python -m bench.fold_throughput`.", "",
             "| K | results per invocation | results | versions | seconds | results/s | without moto's time |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {x['k']} | {x['results_per_invocation']} | {x['results']} | {x['versions']} | {x['seconds']:.1f} | "
              f"{x['results_per_second']:.1f} | {x['aws_results_per_second']:.1f} |" for x in r["rows"]]
    lines += ["", f"Target ≥ {r['target']} results/s for one job at K = 10: "
              f"{'met' if r['target_met'] else '**not met**'}. One result per invocation is what the fold did "
              "before it took its SQS batch whole (9.2 results/s was measured then on a small model).", ""]
    levels = r.get("levels")
    if levels:
        lines += [f"A fold in parts (`fold_groups` = {levels['fold_groups']}, so {levels['middle_groups']} middle "
                  f"groups; K = {levels['k']}, {levels['results']:,} results, {levels['versions']} versions), each "
                  "level timed apart over everything the level below sent:", "",
                  "| level | invocations | messages each | seconds | results/s | without moto's time |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {name} | {x['invocations']} | {x['messages'] / x['invocations']:.1f} | {x['seconds']:.1f} | "
                  f"{x['results_per_second']:.0f} | {x['aws_results_per_second']:.0f} |"
                  for name, x in levels["levels"].items()]
        lines += ["", f"On AWS the {levels['fold_groups']} result groups run at once, and so do the middle groups; "
                  "only the top level is serial. One job then folds min(groups × rate) over the levels: "
                  f"**{levels['job_aws_results_per_second']:,.0f} results/s** without moto's own time "
                  f"({levels['job_results_per_second']:,.0f} as measured). docs/scale.md uses the first.", ""]
    return lines


def cost_section(r: dict, step_s: float | None) -> list[str]:
    calls = r["measured"]["calls_per_task"]
    light = r.get("measured_light", {}).get("calls_per_task", {})
    lines = ["## 3. Requests, bytes and dollars", "",
             f"Requests per completed task (lease, complete and fold), measured through the real handlers "
             f"({r['measured']['tasks']} tasks, K = {r['measured']['k']}, ten results per fold invocation as "
             "Lambda's SQS batch hands them, and one for comparison). Command: `.venv/bin/python -m bench.cost`. "
             "`dynamodb:write units` and `read units` are what DynamoDB bills: one write unit per started KB "
             "of each item written, one read unit per item read, counted from the requests.", "",
             "| service:operation | per task, 10 per fold | 1 per fold |", "| --- | ---: | ---: |"]
    lines += [f"| {key} | {n:.2f} | {light.get(key, 0):.2f} |" for key, n in calls.items()]
    if "calls_per_task_total" in r:
        before = r["calls_per_task_before"]
        lines += [f"| **requests in all** (the browser's upload and the billing units aside) | "
                  f"**{r['calls_per_task_total']:.2f}** | |", "",
                  f"Before the batched fold (commit 0c42dcd) a task took {before:.2f} requests at one result "
                  f"per fold invocation, {before - 1.8:.2f} with the Lambda poller's two amortized over ten: "
                  f"now {r['calls_per_task_total'] / (before - 1.8):.0%} of that (target: at most half). What "
                  "went: the lease's META read (reused for up to a second), the volunteer record's read-modify-"
                  "writes (one conditional write to claim a slot, one delete to free it), the lease record's "
                  "read and the upload's HEAD at completion, every per-task counter, the fold's per-result META "
                  "reads and writes and lease reads (one each per invocation), one of a version's four files "
                  "and the fold log's per-batch records."]
    services = list(r["rows"][0]["dollars_per_million_samples"])
    lines += ["", f"Dollars per million training samples for the paper's model ({r['paper_model']['parameters']:,} "
              f"parameters, batch 32 of 1,024 characters: {r['tasks_per_million_samples']:,} tasks), at the "
              "us-east-1 list prices in `bench/cost.py` (AWS's 2024-2025 price pages; check before relying):", "",
              "| codec | fold load | download B | upload B | " + " | ".join(services) + " | total |",
              "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in services) + " | ---: |"]
    for row in r["rows"]:
        d = row["dollars_per_million_samples"]
        lines.append(f"| {row['codec']} | {row['note']} | {row['download_bytes']:,} | {row['upload_bytes']:,} | "
                     + " | ".join(f"{d[s]:.3f}" for s in services) + f" | **{row['total']:.3f}** |")
    paper = r["paper_model"]
    lines += ["", f"Target ≤ $0.10 per million samples: {'met' if r['target_met'] else '**not met**'} at batch "
              f"{paper['batch']}. The codec does not change the bill (data into S3 is free); it cuts upload time. "
              f"Token ids are stored as {paper['token_dtype']} ({paper['batch_bytes']:,} bytes per batch file), "
              f"and the files {paper['batch_encoding']}-encoded: {paper['batch_stored_bytes']:,} bytes on average "
              "of KJV batches, which is what CloudFront sends. "
              "What dominates at 32 samples per task is what every task costs whatever its size: S3 request "
              "charges (one presigned POST per task, and each new version's three files), API Gateway's REST "
              "price ($3.50 per million; two calls per task) and DynamoDB's per-task reads and writes. Larger "
              "tasks spread them (below); an HTTP API (which Chalice does not deploy) or fewer files per "
              "version would cut them, and neither is built.", ""]
    if r.get("local_steps"):
        rows = r["local_steps"]
        lines += ["", "Local steps (`local_steps.steps` = H): a task is H mini-batches of 32 sequences, one browser "
                  "optimizer step each, and one pseudo-gradient up; requests per task measured through the handlers "
                  "with H-batch tasks (the browser's upload included), bytes as for the paper's model:", "",
                  "| H | samples per task | requests per task | requests per sample | version + upload bytes per "
                  "sample | data bytes per sample | $ per million samples |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {x['local_steps']} | {x['samples_per_task']:,} | {x['requests_per_task']:.1f} | "
                  f"{x['requests_per_sample']:.4f} | {x['model_bytes_per_sample']:,.0f} | "
                  f"{x['data_bytes_per_sample']:,.0f} | {x['total']:.3f} |" for x in rows]
        ratio = rows[0]["requests_per_sample"] / rows[-1]["requests_per_sample"]
        lines += ["", f"At H = {rows[-1]['local_steps']}: {ratio:.0f}x fewer requests per sample than H = 1 (target "
                  f"≥ 20x: {'met' if ratio >= 20 else 'not met'}), and ${rows[-1]['total']:.3f} per million samples "
                  f"(target ≤ $0.10: {'met' if rows[-1]['total'] <= 0.10 else 'not met'}). The model's and the "
                  "upload's bytes per sample fall by H too; the data's do not (every sample is read once), and "
                  "CloudFront's egress of them is most of what is left.", ""]
    if r.get("samples_sweep"):
        met = [x for x in r["samples_sweep"] if x["total"] <= r["target"]]
        big = (met or r["samples_sweep"][-1:])[0]["samples_per_task"]
        k = r["measured"]["k"]
        files = round(calls["s3:PutObject"] * k)  # a version's files: written once per K tasks
        extra_puts = (files - files / k) * r["prices"]["s3_put_post_list_per_request"] * 1e6 / big
        lines += ["Larger tasks (a larger batch per task) spread the per-task requests over more samples, while "
                  "the bytes per sample stay, so CloudFront egress of the compressed token ids sets a floor near "
                  f"${r['samples_sweep'][-1]['dollars_per_million_samples']['CloudFront']:.3f}. "
                  + (f"From {met[0]['samples_per_task']:,} samples per task the target is met. " if met else
                     "The target is not met at any of these sizes. ")
                  + "A larger batch is a job setting (`dataset.x.shape`, with `dataset.micro_batch` so that "
                  "volunteers compute it 32 sequences at a time and hold one micro-batch in memory; section 1), "
                  + (f"but a task's compute grows with it: at about {step_s:.0f} s per 32 sequences of 1,024 on "
                     f"wasm here, {big:,} samples make a task of about {big / 32 * step_s / 60:.0f} minutes " if step_s
                     else "but a task's compute grows with it ")
                  + "(set `lease_seconds` to match; the page "
                  "heartbeats between micro-batches, and none when `lease_seconds` is over three times the task), "
                  "and each task is one gradient of the larger batch. Same measured requests per task (K = "
                  f"{k}), fp32, busy fold; with K = 1 every task writes a version's {files} files, "
                  f"${extra_puts:.3f} more per million samples at {big:,} samples per task:", "",
                  "| samples per task | CloudFront | total $ per million samples |", "| ---: | ---: | ---: |"]
        lines += [f"| {x['samples_per_task']:,} | {x['dollars_per_million_samples']['CloudFront']:.3f} | "
                  f"{x['total']:.3f} |" for x in r["samples_sweep"]]
        lines.append("")
    return lines


def _outer(run: dict) -> str:
    """How a run of local steps was folded, where not by plain averaging at learning rate 1."""
    lr = run.get("outer_lr", 1.0 if run.get("outer", "sgd") == "sgd" else 0.7)
    kept = ", local Adam kept across tasks" if run.get("keep_state") else ""
    if run.get("inner_lr", 0.01) != 0.01:
        kept = f", local Adam lr {run['inner_lr']:g}{kept}"
    if run.get("decay_to", 1.0) < 1:
        kept += f" decayed to {run['decay_to']:g} of it"
    if run["k"] > 1:
        kept += ", synchronous" if run.get("synchronous") else ", without the barrier"
    if run.get("outer") == "nesterov":
        return f", outer Nesterov (DiLoCo) lr {lr:g}{kept}"
    return (f", outer SGD lr {lr:g}" if lr != 1.0 else "") + kept


def _quality_plot(r: dict, path: Path, title: str) -> None:
    seq = r["sequential"]["curve"]
    series = [("sequential TF.js", [p[0] for p in seq], [p[1] for p in seq])]
    series += [(f"sequential TF.js, Adam decayed to {d}", [p[0] for p in b["curve"]], [p[1] for p in b["curve"]])
               for d, b in r.get("sequential_decayed", {}).items()]
    series += [(f"H = {x['local_steps']}, {x['volunteers']} vol., K = {x['k']}{_outer(x)}", [p[0] for p in x["curve"]],
                [p[1] for p in x["curve"]]) for x in r["runs"] if x["final_ratio"] < 2]  # diverged runs: table only
    plot(path, title, "samples", "held-out loss (nats/char)", series)


def _quality_table(r: dict) -> list[str]:
    """The sequential runs, then each crowdtrain run with its ratio to the
    sequential run of its schedule (and, where measured, to the better
    sequential run in batches as large as a round of its crowd)."""
    steps = r["batches"] * r["epochs"]
    large = r.get("sequential_large_batch", {})
    extra = (lambda cell: f" {cell} |") if large else (lambda cell: "")
    lines = ["| run | final held-out loss | ratio to sequential |" + extra("ratio to batches of n × 32")
             + " steps or versions | discarded | seconds |", "| --- | ---: | ---: |" + extra("---:") + " ---: | --- | ---: |",
             f"| sequential TF.js | {r['sequential']['curve'][-1][1]:.4f} | 1.000 |{extra('')} {steps} | | "
             f"{r['sequential']['seconds']:.0f} |"]
    lines += [f"| sequential TF.js, Adam rate decayed to {d} of it | {b['curve'][-1][1]:.4f} | 1.000 |{extra('')} "
              f"{steps} | | {b['seconds']:.0f} |" for d, b in r.get("sequential_decayed", {}).items()]
    batch = {n: f"batches of {n} × {r['batch_size']}, " if n != "1" else "" for n in large}
    lines += [f"| sequential TF.js, {batch[n]}Adam {rate} | {b['curve'][-1][1]:.4f} | "
              f"{b['curve'][-1][1] / r['sequential']['curve'][-1][1]:.3f} |{extra('')} {steps // int(n)} | | "
              f"{b['seconds']:.0f} |" for n, runs in large.items() for rate, b in runs.items()]
    return lines + [f"| H = {x['local_steps']}, {x['volunteers']} volunteers, K = {x['k']}{_outer(x)} | "
                    f"{x['curve'][-1][1]:.4f} | {x['final_ratio']:.3f} |"
                    + extra(f"{x['ratio_to_large_batch']:.3f}" if "ratio_to_large_batch" in x else "")
                    + f" {x['versions']} | {x['discarded'] or 'none'} | {x['seconds']:.0f} |" for x in r["runs"]]


def _quality_target(r: dict) -> str:
    """Met when, for each crowd size, some way of folding H = 32 comes within the target of the best sequential run."""
    best = _best_h32(r)
    return (f"final ratio ≤ {r['target']} at H = 32 with 4 and with 16 volunteers, against the best sequential "
            f"run: {'met' if all(best.get(n, float('inf')) <= r['target'] for n in (4, 16)) else '**not met**'} "
            "(best ratio "
            + ", ".join(f"{best[n]:.3f} with {n} volunteers" if n in best else f"{n} volunteers not measured"
                        for n in sorted({4, 16} | set(best))) + ")")


def _run(r: dict, key: tuple[int, int, int], outer: str = "sgd", lr: float = 1.0, kept: bool = False,
         inner: float = 0.01, decay: float = 1.0, synchronous: bool = False) -> dict | None:
    """The run of `key` (H, volunteers, K) folded that way, if it was measured."""
    return next((x for x in r["runs"] if (x["local_steps"], x["volunteers"], x["k"]) == key
                 and x.get("outer", "sgd") == outer and x.get("outer_lr", 1.0 if outer == "sgd" else 0.7) == lr
                 and x.get("keep_state", False) == kept and x.get("inner_lr", 0.01) == inner
                 and x.get("decay_to", 1.0) == decay and x.get("synchronous", False) == synchronous), None)


def _said(r: dict, key: tuple[int, int, int], *how, **named) -> str:
    """One run's final loss and ratio, for the prose; `how` and `named` as `_run`'s."""
    return _said_of(_run(r, key, *how, **named))


def _said_of(x: dict | None) -> str:
    """A run's final loss and ratio, for the prose (a run already looked up, or None)."""
    return f"{x['curve'][-1][1]:.2f} nats/char (ratio {x['final_ratio']:.2f})" if x else "not measured"


def quality_section(r: dict, docs: Path) -> list[str]:
    _quality_plot(r, docs / "quality.png", "Held-out loss vs samples trained")
    units = " → ".join(f"LSTM({u})" for u in r["units"])
    lines = ["## 4. Learning quality", "",
             f"{units} → softmax, one-hot KJV characters (Genesis to Jude), sequence {r['seq_len']}, batch "
             f"{r['batch_size']}, {r['batches']} batches × {r['epochs']} epochs: every run trains on the same "
             f"{r['batches'] * r['epochs'] * r['batch_size']:,} samples. Held-out loss on {r['held_out_batches']} "
             "batches of the Book of Revelation, which training never sees. Sequential: one TF.js process, Adam "
             "0.01 (rows marked otherwise: another rate, or steps on n batches at once). crowdtrain: Node volunteers running the page's own loop (TF.js wasm, pipelined) on the local "
             "stack. H = 1 is per-batch gradients with the fold's Adam 0.01, K = 1 (asynchronous, staleness "
             "bound twice the volunteers); H = 8 and 32 are local steps of Adam 0.01 (fresh per task; runs marked "
             "local Adam lr use another) with the "
             "fold's outer SGD at learning rate 1, either each pseudo-gradient applied as it lands (K = 1) or "
             "the mean of a round's (K = the volunteers: FedAvg rounds, `synchronous`, staleness 0; rows marked "
             "without the barrier: staleness 2), or the mean of the first K "
             "of a larger crowd's (staleness ⌈n / K⌉ + 1: asynchronous rounds); runs marked outer Nesterov "
             "fold a round's mean with DiLoCo's outer step instead (SGD with Nesterov momentum 0.9, learning "
             "rate 0.7). Command: `.venv/bin/python -m bench.quality` (`--only H:N:K` reruns one; `--outer "
             "nesterov` for DiLoCo's outer step, `--inner-lr` for the local Adam's, `--decay-to` for its cosine "
             "decay, `--unsynchronized` for rounds without the barrier). The ratio column compares each run with the sequential run of the same learning-rate "
             "schedule, the next with the better data-parallel run of its crowd (batches of n × 32); the "
             "target, with the best sequential run of any rate, schedule and batch. Diverged runs (over twice the "
             "sequential loss) are left out of the plot. Seconds are wall time, not comparable between rows: some "
             "runs shared the 2 cores with another.", "", *_quality_table(r)]
    e = r["exactness"]
    lines += ["", "![quality](benchmarks/quality.png)", "", f"Target: {_quality_target(r)}.", ""]
    said = functools.partial(_said, r)
    def large(n: int, rate: str) -> str:
        b = r.get("sequential_large_batch", {}).get(str(n), {}).get(rate)
        return f"{b['curve'][-1][1]:.2f} nats/char" if b else "not measured"
    def cost(n: int) -> str:  # the better n × 32 run against batch 32 at its better rate
        runs, single = r.get("sequential_large_batch", {}).get(str(n)), r.get("sequential_large_batch", {}).get("1")
        if not runs or not single:
            return "not measured"
        best = min(b["curve"][-1][1] for b in runs.values())
        base = min([r["sequential"]["curve"][-1][1], *(b["curve"][-1][1] for b in single.values())])
        return f"{(best / base - 1) * 100:.1f} %"
    def vs_large(n: int) -> str:
        ratios = [x["ratio_to_large_batch"] for x in r["runs"] if x["local_steps"] == 32 and x["volunteers"] == n
                  and "ratio_to_large_batch" in x]
        return f"{min(ratios):.2f}" if ratios else "not measured"
    def seq_decayed(d: str) -> str:
        b = r.get("sequential_decayed", {}).get(d)
        return f"{b['curve'][-1][1]:.2f} nats/char" if b else "not measured"
    sync = functools.partial(_said, r, synchronous=True)
    lines += ["Per-batch gradients from 4 asynchronous volunteers (K = 1) end at " + said((1, 4, 1)) + ". Applying "
              "each pseudo-gradient as it lands at learning rate 1 does not work at equal samples: with Adam "
              "started fresh each task, H local steps move every weight by up to H × 0.01, and pseudo-gradients "
              "from n volunteers, computed on nearly the same version, add up to about n times that (H = 8, 4 "
              "volunteers: " + said((8, 4, 1)) + "; H = 32: " + said((32, 4, 1)) + "). With 16 asynchronous "
              "volunteers even per-batch gradients diverge (" + said((1, 16, 1)) + "), each up to 32 versions "
              "stale for the fold's Adam.", "",
              "**Rounds must be synchronous.** FedAvg rounds, the mean of each round's pseudo-gradients (K = the "
              "volunteers), were first run without a barrier (rows marked so): a volunteer leases its next task "
              "as soon as it has delivered one (or, pipelined, while it computes), before the round's last result "
              "lands, so most of each round trains on the version before and its full-size move is applied a "
              "version late, on top of the move the version before already made. The held-out curves of those "
              "runs swing from one version to the next. With `synchronous: true` (a round's K tasks leased on "
              "its version, the next held until the update: docs/architecture.md) the same rounds of H = 32, 4 "
              "volunteers, local Adam 0.02, end at " + sync((32, 4, 4), inner=0.02) + ", against "
              + said((32, 4, 4), inner=0.02) + " without the barrier"
              + ("" if sync((32, 4, 4), inner=0.02, kept=True) == "not measured" else
                 ", and at " + sync((32, 4, 4), inner=0.02, kept=True) + " with each volunteer's Adam kept across "
                 "its tasks (`keep_state`)") + ". Sixteen volunteers, Adam 0.02, end at "
              + sync((32, 16, 16), inner=0.02) + " either way (" + said((32, 16, 16), inner=0.02) + " without the "
              "barrier): an epoch of 400 batches is 13 tasks of H = 32, fewer than a round of 16, so each epoch is "
              "one round whose tasks are all leased on the version the epoch starts from, barrier or not.", "",
              "What is left is the cost of the rounds themselves, at this length. With 4 volunteers it is not that "
              "a round's batch is 4 times larger: one "
              "process whose every step is the mean gradient of 4 batches (batch 128: what per-batch gradients "
              "folded in synchronous rounds of 4 compute, synchronous data parallel, DiLoCo's baseline; "
              "`--large-batch`) ends at " + large(4, "0.01") + " with Adam 0.01 and at " + large(4, "0.02")
              + " with 0.02, " + cost(4) + " above batch 32's best (Adam 0.02: " + large(1, "0.02") + ") in a quarter "
              "of the steps. With 16, batches of 16 × 32 end at " + large(16, "0.01") + " and " + large(16, "0.02")
              + ": there the larger batch itself costs " + cost(16) + ". Against the better data-parallel run of "
              "its crowd the best H = 32 rounds are at ratio " + vs_large(4) + " with 4 volunteers and "
              + vs_large(16) + " with 16. A run of 1,200 batches is 12 rounds of 4 volunteers and 3 of 16 "
              "(the epoch's last task ends a round early: 400 batches are 13 tasks of H = 32), and a round "
              "moves the model somewhat further than one volunteer's 32 steps would but far less than 4 × 32 "
              "sequential steps (the synchronous rounds of 4 end a little below where the sequential run is "
              "after 384 steps), which is also why 16 volunteers, with 75 local steps each in the whole run, "
              "stay far behind at equal samples.", "",
              "Tuning measured on rounds without the barrier (so each carries the delay above): DiLoCo's outer "
              "Nesterov step diverged (" + said((32, 4, 4), "nesterov", 0.7) + "); outer SGD at learning rate 2 "
              "ended worse than averaging (" + said((32, 4, 4), "sgd", 2.0) + "); keeping each volunteer's local "
              "Adam across its tasks (`local_steps.keep_state`, as DiLoCo's workers keep their inner state): "
              + said((32, 4, 4), "sgd", 1.0, True) + "; the inner learning rate (`--inner-lr`): Adam at 0.003 "
              "ended at " + said((32, 4, 4), inner=0.003) + ", at 0.04 " + said((32, 4, 4), inner=0.04)
              + "; decaying the local rate along a cosine (`local_steps.decay_to`, `--decay-to 0.1`; the "
              "sequential run it is compared with follows the same cosine and ends at " + seq_decayed("0.1")
              + "): " + said((32, 4, 4), inner=0.02, decay=0.1) + "; sixteen volunteers folded in asynchronous "
              "rounds of K = 4 (each result up to 4 versions stale; 0.02 decayed to 0.1): "
              + said((32, 16, 4), inner=0.02, decay=0.1) + ". Earlier sessions read the rounds' shortfall as the "
              "local steps' own (a local Adam restarted each task moves every weight by its full rate on its first "
              "step); the synchronous runs show that the delay was half of it or more. Not measured: runs long enough "
              "for the curves to flatten (a 1,200-batch run takes about 10 minutes sequentially and 10 with 4 Node "
              "volunteers in synchronous rounds on this machine's 2 cores, so 4 times the samples is 1.5 hours a "
              "crowd size).", ""]
    lines += [f"Exactness: 1 volunteer, K = 1, SGD (lr 0.5), staleness 0, a small model: crowdtrain's version "
              f"{e['steps']} vs {e['steps']} sequential `tf.train.sgd` steps over the batches in the order crowdtrain "
              f"folded them: max |difference| = {e['max_abs_diff']:.2e} (target ≤ 1e-5: "
              f"{'met' if e['met'] else 'not met'}). With staleness above 0 a lone volunteer may lease before the "
              "previous result is folded, so its gradient is one version old: that run is asynchronous SGD, not "
              "sequential SGD.", ""]
    return lines


def _seq_share(r: dict, key: tuple[int, int, int], seq: list | None = None) -> float | None:
    """Where the sequential curve (the constant-rate run's unless given) reaches the best synchronous
    run's final loss, as a share of its samples."""
    seq = seq or r["sequential"]["curve"]
    finals = [x["curve"][-1][1] for x in r["runs"] if x.get("synchronous")
              and (x["local_steps"], x["volunteers"], x["k"]) == key]
    if not finals:
        return None
    target = min(finals)
    for (s0, l0), (s1, l1) in zip(seq, seq[1:]):  # the first crossing: the curve need not fall at every point
        if l1 <= target < l0:
            return (s0 + (l0 - target) / (l0 - l1) * (s1 - s0)) / seq[-1][0]
    return 1.0 if target <= seq[-1][1] else 0.0


def _reach(r: dict, key: tuple[int, int, int], seq: list | None = None) -> str:
    """The run's rounds, where the sequential run is as good, and the sequential steps a round is worth."""
    share, rounds = _seq_share(r, key, seq), r["batches"] // (key[0] * key[1])
    if share is not None and share >= 1:
        return (f"{rounds} rounds end below where the sequential run ends (a round is worth at least "
                f"{r['batches'] / rounds:.0f} sequential steps)")
    return "not measured" if share is None else (
        f"{rounds} rounds reach where the sequential run is after {share * 100:.0f} % of its samples (a round is "
        f"worth about {share * r['batches'] / rounds:.0f} sequential steps)")


def _best_h32(r: dict) -> dict[int, float]:
    """Each crowd size's best final ratio at H = 32 to the best sequential run."""
    best: dict[int, float] = {}
    for x in r["runs"]:
        if x["local_steps"] == 32:
            best[x["volunteers"]] = min(best.get(x["volunteers"], float("inf")), x["ratio_to_best"])
    return best


def quality_warm_section(r: dict, docs: Path, later: bool) -> list[str]:
    """DiLoCo's protocol: the same comparison, from a model already trained; `later`: a stage later was
    measured too (the next subsection)."""
    _quality_plot(r, docs / "quality_warm.png", "From a trained model: held-out loss vs samples")
    w = r["warm_start"]
    lines = ["### From a trained model (DiLoCo's protocol)", "",
             "DiLoCo's own comparisons start from a model already trained for 24,000 steps. Here every run starts "
             f"from the weights the constant-rate sequential run above reaches after {w['batches']:,} steps "
             f"(held-out loss {r['sequential']['curve'][0][1]:.4f} on this section's held-out set: "
             f"{r['held_out_batches']} batches of Revelation, {r['held_out_batches'] * r['batch_size']:,} "
             f"sequences, as JSDoop's experiment held out) and trains on {r['batches']:,} batches of the same books that no run "
             f"has seen before, in one epoch: {r['batches'] * r['batch_size']:,} samples ({r['batches'] // 32} "
             "tasks of H = 32, so rounds of 4 and of 16 divide them and no update holds a lone pseudo-gradient). "
             "The sequential run and the volunteers start a fresh Adam; the fold's outer SGD averages each "
             "round (DiLoCo's outer Nesterov step where marked), synchronous unless marked without the barrier. "
             "Command: `.venv/bin/python -m bench.quality --warm-start`, with the options above.", "",
             *_quality_table(r), "", "![quality from a trained model](benchmarks/quality_warm.png)", "",
             f"Target, from a trained model: {_quality_target(r)}.", ""]
    said, sync = functools.partial(_said, r), functools.partial(_said, r, synchronous=True)
    seq = r["sequential"]["curve"]

    def behind(key: tuple[int, int, int], outer_lr: float) -> bool:
        """Whether the kept-state synchronous run at this outer rate is above the one at rate 1 at every round."""
        runs = {x.get("outer_lr"): x["curve"] for x in r["runs"] if x.get("synchronous") and x.get("keep_state")
                and x.get("inner_lr") == 0.01 and (x["local_steps"], x["volunteers"], x["k"]) == key}
        if outer_lr not in runs or 1.0 not in runs:
            return False
        return all(a[1] > b[1] for a, b in zip(runs[outer_lr][1:], runs[1.0][1:]))

    def falls(curve: list) -> bool:
        return all(b[1] < a[1] for a, b in zip(curve, curve[1:]))
    unsynchronized = [x for x in r["runs"] if not x.get("synchronous")]
    jump = max((abs(b[1] - a[1]) for x in unsynchronized for a, b in zip(x["curve"][1:], x["curve"][2:])),
               default=0.0)
    steady = [x for x in r["runs"] if x.get("synchronous")]
    lines += [f"The sequential run goes from {seq[0][1]:.2f} to {seq[-1][1]:.2f} nats/char"
              f"{', falling at every point of the plot' if falls(seq) else ''}. Synchronous rounds of H = 32, 4 "
              "volunteers, each task's local Adam at 0.01 started fresh, end at " + sync((32, 4, 4))
              + (", falling at every plotted version" if steady and all(falls(x["curve"]) for x in steady) else "")
              + "; with each volunteer's Adam kept across its tasks (`keep_state`) at " + sync((32, 4, 4), kept=True)
              + ". DiLoCo's outer Nesterov step (lr 0.7, momentum 0.9) on the same rounds ends at "
              + sync((32, 4, 4), "nesterov", 0.7) + ": it gains most in the first rounds and then stops "
              "improving, its momentum, built over only 12 rounds of moves as large as these, carrying each "
              "update past where the round's mean would put it. Without the barrier the same rounds barely moved "
              "from the starting model: " + said((32, 4, 4)) + " (Adam 0.01), " + said((32, 4, 4), inner=0.003)
              + " (0.003) and " + said((32, 4, 4), kept=True) + " (kept), going up and down by up to "
              f"{jump:.2f} nats/char from one plotted version to the next: each round's move, applied to the "
              "version after the one it was computed on, repeated most of the move before it."
              + (" A synchronous run that shows a result discarded as stale ran before the local cloud made "
                 "moto's DynamoDB writes atomic (docs/architecture.md, the local cloud): two leases racing for a "
                 "round's last seat could both win there, as they cannot on DynamoDB, and the task seated one "
                 "too many delivered its result after the round's update. Its task was queued again and folded, "
                 "so the run's samples are whole." if any(x.get("discarded") for x in steady) else ""), "",
              ("Sixteen volunteers were not run from a trained model." if sync((32, 16, 16), kept=True) == "not measured"
               else "Sixteen volunteers in synchronous rounds, each volunteer's Adam kept, end at "
               + sync((32, 16, 16), kept=True) + "; with the local rate doubled (Adam 0.02) at "
               + sync((32, 16, 16), kept=True, inner=0.02) + ", and with the round's mean moved twice as far "
               "(outer SGD at learning rate 2) at " + sync((32, 16, 16), "sgd", 2.0, True)
               + (", worse from the first round on: the mean of 16 volunteers' 32 steps is not a direction to "
                  "follow further" if behind((32, 16, 16), 2.0) else "") + ". Their "
               + f"{r['batches']:,}" + " batches are 3 rounds of 16 × 32: each volunteer takes 96 local steps in "
               "the whole run, and the model moves 3 times, where the sequential run moves " + f"{r['batches']:,}"
               + " times. Measured against the sequential curve, 4 volunteers' " + _reach(r, (32, 4, 4)) + "; 16 "
               "volunteers' " + _reach(r, (32, 16, 16)) + ". A round of 16 is worth more than one of 4 but far less "
               "than 4 times as much, so the larger crowd falls further behind the longer the run, until the "
               "curve flattens. At equal samples a crowd that size needs a run long enough for many rounds near the "
               "end of training (DiLoCo's runs are hundreds of rounds, from a model trained 24,000 steps), "
               "which at this machine's speed is hours per run"
               + ("; the next subsection starts a stage later instead." if later else ".")), ""]
    return lines


def wasted_section(r: dict) -> list[str]:
    lines = ["### Wasted work with volunteers of mixed speed", "",
             f"{r['volunteers']} simulated volunteers (bench/scaling.py's, pipelined as the page is), {r['slow']} of "
             f"them {r['slowdown']}x slower (a step of {r['step_ms'] * r['slowdown']:.0f} ms against "
             f"{r['step_ms']:.0f}), train one job to its end; K = {r['k']}, staleness bound {r['staleness']}. "
             "Wasted: samples computed that never reach the model (results discarded as stale or otherwise, "
             "leases lost), over samples computed. Command: `.venv/bin/python -m bench.wasted`.", "",
             "| tasks | samples computed | folded | wasted | the slow quarter's share of computing | discarded | "
             "samples folded per second |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    lines += [f"| {x['case']} | {x['computed']:,} | {x['folded']:,} | {x['wasted_share']:.1%} | "
              f"{x['slow_share_of_computed']:.0%} | {x['discarded'] or 'none'} | {x['folded'] / x['seconds']:.0f} |"
              for x in r["rows"]]
    last = r["rows"][-1]
    lines += ["", f"Target ≤ 5 % with a range of H: {'met' if r['target_met'] else '**not met**'} "
              f"({last['wasted_share']:.1%}). Per-batch tasks lose the slow quarter's late results to the "
              "staleness bound. With H = 8 for everyone nothing is discarded here, because each epoch waits "
              "for its last tasks: the slow devices' 8-step tasks hold every epoch's end while fast volunteers "
              "idle, which shows as the lowest rate. With a range each volunteer picks its steps from its own step "
              "time (`local_steps.min_steps`, `target_seconds`; the least until it has timed one), so a slow "
              "device's task takes as long as a fast one's, nothing is discarded, and the fold weights each "
              "result by its steps; the batches a short task skips are not trained that epoch (folded < "
              "every batch).", ""]
    return lines


def jsdoop_section(step_s: float | None) -> list[str]:
    step = f" (about {step_s:.0f} s per gradient step on TF.js wasm here)" if step_s else ""
    return [
        "## 5. JSDoop side by side", "",
        "What JSDoop 1.0's experiment was, and what differs, is in docs/jsdoop.md; `--preset jsdoop` sets it "
        "up. The figures above use the stand-alone example of JSDoop's repository (LSTM(10) → LSTM(10), "
        "sequence 1,024, 3 gradients per update), not the paper's experiment.", "",
        "| | JSDoop 1.0 (the paper's experiment) | crowdtrain (this machine) |", "| --- | --- | --- |",
        "| model | LSTM(50) → LSTM(50) → Dense(91), sequences of 40 characters of Don Quixote | "
        f"`--preset jsdoop` on the KJV; the figures above: LSTM(10) → LSTM(10) at sequence 1,024{step} in "
        "sections 1-3, sequence 40 in section 4 |",
        "| coordination | RabbitMQ queues + Redis/webdis data server, run by hand | SQS, S3, DynamoDB, Lambda; no server |",
        "| reduce | in volunteers' browsers: the sum of 16 map gradients of 8 sequences, RMSprop 0.001, "
        "synchronous | fold Lambda (numpy): the mean of K gradients (the preset: K = 16, RMSprop 0.001, "
        "synchronous rounds, staleness 0); the figures above: K = 3 |",
        "| volunteers | a cluster and up to 32 volunteers | simulated 1-32 (section 2), browsers and Node (sections 1, 4) |",
        "| published figures | run times, speed-ups and losses not recoverable from the material we have; "
        "qualitative claims: \"feasible and accurate\", \"high scalability\" | sections 1-4 above |", ""]


def poison_section(r: dict) -> list[str]:
    """bench/poison.py: held-out accuracy against the share of hostile volunteers, per rule and attack."""
    shares = r["shares"]
    lines = ["## 6. Poisoning", "",
             f"`.venv/bin/python -m bench.poison`: the fold's own rules, Adam and norm bound train a softmax "
             f"classifier ({r['tasks']} tasks × {r['epochs']} epochs, K gradients per update); each task's volunteer "
             "is hostile with the probability given (its share of the identities). A cell is the final held-out "
             f"accuracy; the clean run's is {r['clean']:.3f}, and a run survives within {r['tolerance']} of it. "
             "docs/security.md says what this means for a job.", ""]
    for attack, title in (("flip", "Sign flip at the norm bound"), ("noise", "Noise at the norm bound")):
        for k, table in r["attacks"][attack].items():
            lines += [f"{title}, K = {k}:", "", "| rule | " + " | ".join(f"{100 * s:.0f} %" for s in shares) + " |",
                      "| --- |" + " ---: |" * len(shares)]
            lines += [f"| {name} | " + " | ".join(f"{a:.2f}" for a in row) + " |" for name, row in table.items()]
            lines.append("")
    lines += ["The tail attack: one hostile volunteer holds each epoch's last lease until the rest is folded. "
              f"With an epoch of {r['tasks'] + 1} tasks its gradient is the epoch's last update alone; with "
              f"{r['tasks']}, a multiple of K (which a robust rule now requires), it is one of K:", "",
              f"| rule | K | {r['tasks'] + 1} tasks | {r['tasks']} tasks |", "| --- | ---: | ---: | ---: |"]
    for k, table in r["tail"].items():
        lines += [f"| {name} | {k} | {t['tasks % K == 1']:.3f} | {t['tasks % K == 0']:.3f} |" for name, t in table.items()]
    if r.get("capped"):
        lines += ["", "One client at its cap: however many identities it mints at one source address and however "
                  "fast it sends, one client gives at most `max_share` of any update (chalicelib/fold/shares.py; "
                  f"default {r['max_share']}); here it fills that share of every update with sign flips at the "
                  "norm bound:", "", "| rule | K | hostile of K | held-out accuracy |", "| --- | ---: | ---: | ---: |"]
        for k, table in r["capped"].items():
            cap = max(1, int(r["max_share"] * int(k)))
            lines += [f"| {name} | {k} | {cap} | {a:.3f} |" for name, a in table.items()]
    if r.get("replication"):
        lines += ["", "Replication (`replication`, chalicelib/fold/replicas.py) before the median (K = 8), 20 "
                  "identities drawn at random for each copy: a check by a second identity, a dispute settled by a "
                  "third, outvoted identities starting over, and barred (their copies discarded) once outvoted in more "
                  "than a quarter of at least 4 judged copies (`bar_ratio`, `bar_after`: the defaults). Two hostile "
                  "copies of one batch agree (each flips the same honest gradient). \"Sleepers\" stay honest "
                  "until trusted. At 50 % the hostile half outvotes and bars the honest one. Copies computed per "
                  "folded result (a barred identity's included) / share of folded gradients that were hostile / "
                  "held-out accuracy:", "",
                  "| policy | attack | " + " | ".join(f"{100 * s:.0f} % hostile" for s in shares) + " |",
                  "| --- | --- |" + " ---: |" * len(shares)]
        rows: dict[tuple[str, str], dict[float, dict]] = {}
        for row in r["replication"]:
            rows.setdefault((row["policy"], row["attack"]), {})[row["share"]] = row
        for (policy, attack), cells in rows.items():
            lines.append(f"| {policy} | {attack} | " + " | ".join(
                f"{c['copies_per_result']:.2f} / {100 * c['hostile_folded']:.1f} % / {c['accuracy']:.2f}"
                if (c := cells.get(s)) else "" for s in shares) + " |")
    lines += ["", f"Target (median at K ≥ 8 survives 40 % of identities attacking with sign flips at the norm "
              f"bound, and the tail attack): {'met' if r['target_met'] else '**not met**'}. The median alone "
              f"survives sign flips up to {100 * r['median_survives']:.0f} % (K = 16; 10 % at K = 8); behind "
              f"replication ({r.get('replicated_policy', '-')}) it survives "
              f"{100 * r.get('replicated_survives', 0):.0f} % at K = 8, and the tail attack with an epoch a "
              "multiple of K. Alone it cannot: a coordinate's median of K gradients of which a share q sit far "
              "out on the wrong side is the honest gradients' (1/2 − q)/(1 − q) quantile there, at q = 0.4 their "
              "17th percentile, which is on the wrong side of zero wherever a mini-batch gradient's noise is "
              "about its mean or larger (at this benchmark's start, for 44 % of the coordinates; the noise's "
              "median ratio to the mean is 1.0); and with volunteers arriving at random some updates are more "
              "hostile than the identities' share. Replication without barring does not either: two hostile "
              "copies of a batch agree, so at 40 % about a third of what it folds is still hostile. What "
              "separates them is the record: a hostile identity is outvoted wherever an honest one checks it or "
              "settles its dispute, an honest one only where hostile ones do both, so hostile identities cross "
              "the barring ratio (a quarter of their judged copies outvoted) first, and their copies stop "
              "counting. The price is copies: a barred identity that keeps sending costs a copy each time.", ""]
    return lines


def _loss(r: dict, key: tuple[int, int, int], decay: float = 1.0) -> float | None:
    """The final loss of the synchronous run of `key` with each volunteer's Adam kept (None if not run)."""
    x = _run(r, key, kept=True, decay=decay, synchronous=True)
    return x["curve"][-1][1] if x else None


def _best_sequential(r: dict) -> float:
    """The final loss of the best sequential run of any rate, schedule and batch (the target's reference)."""
    x = next(iter(r["runs"]), None)
    return x["curve"][-1][1] / x["ratio_to_best"] if x else r["sequential"]["curve"][-1][1]


def _untrained(r: dict) -> float:
    """The ratio a run that learned nothing would score: the starting model's loss over the best sequential run's."""
    return r["sequential"]["curve"][0][1] / _best_sequential(r)


def quality_warm2_section(r: dict, earlier: list[tuple[str, dict | None]], docs: Path) -> list[str]:
    """The trained-model comparison a stage later, where the loss falls more slowly; `earlier` names the
    runs before it (from scratch, the first stage) for the summary of the target across starting points."""
    _quality_plot(r, docs / "quality_warm2.png", "From a model trained further: held-out loss vs samples")
    w, seq = r["warm_start"], r["sequential"]["curve"]
    rises, decayed = len(seq) > 1 and seq[1][1] > seq[0][1], r.get("sequential_decayed", {})
    sync = functools.partial(_said, r, synchronous=True)
    before = next((x for name, x in earlier if name == "quality_warm" and x), None)
    fall = f" (over the stage before it fell by {before['sequential']['curve'][0][1] - before['sequential']['curve'][-1][1]:.2f})" \
        if before else ""
    lines = ["### From a model trained further", "",
             "A round of a large crowd is worth less the faster the loss falls, so the same comparison is repeated "
             "a stage later in training (`--warm-start 2`): every run starts from the weights the sequential run of "
             f"the subsection above ends with ({w['batches']:,} sequential steps in all, held-out loss "
             f"{seq[0][1]:.4f}) and trains on {r['batches']:,} batches of the same books drawn with another seed, "
             "in one epoch; the sequential run and the volunteers start a fresh Adam, each volunteer keeps its own "
             "across its tasks (`keep_state`), rounds are synchronous (4 volunteers' per-batch gradients excepted: "
             "folded as they land, K = 1, as from scratch), and the held-out set is the one above. "
             "Command: `.venv/bin/python -m bench.quality --warm-start 2 --keep-state`.", "",
             *_quality_table(r), "", "![quality from a model trained further](benchmarks/quality_warm2.png)", "",
             f"Target, from the model trained further: {_quality_target(r)}. That says less here: the starting "
             f"model itself is at ratio {_untrained(r):.3f}, so a run that learned nothing would come within "
             f"{(_untrained(r) - 1) * 100:.1f} % too; what compares the runs at this stage is how much of the "
             "sequential run's fall each makes (the table below).", "",
             f"The sequential run goes from {seq[0][1]:.2f} to {seq[-1][1]:.2f} nats/char, a fall of "
             f"{seq[0][1] - seq[-1][1]:.2f}{fall}. Synchronous rounds of H = 32, each volunteer's Adam kept, end at "
             + sync((32, 4, 4), kept=True) + " with 4 volunteers and at " + sync((32, 16, 16), kept=True)
             + " with 16. Measured against the sequential curve, 4 volunteers' " + _reach(r, (32, 4, 4))
             + "; 16 volunteers' " + _reach(r, (32, 16, 16)) + "."
             + (f" The sequential run's fresh Adam at 0.01 first takes it up (to {seq[1][1]:.2f} after "
                f"{seq[1][0]:,} samples), and its curve is noisy at this stage." if rises else "")
             + (" Only that one schedule was measured here: a lower or decaying rate may end lower, which would "
                "raise every ratio of this subsection. Averaging the volunteers' steps also averages away the "
                "noise that a decaying rate would remove from one process." if rises and not decayed else ""),
             ""]
    lines += _other_rows(r)
    for d, b in decayed.items():
        lines += [f"Decaying the sequential run's rate along a cosine to {d} of it (`--decay-to {d}`) takes it to "
                  f"{b['curve'][-1][1]:.4f}, {seq[-1][1] - b['curve'][-1][1]:.3f} below the constant rate. Against "
                  "that curve, 4 volunteers' " + _reach(r, (32, 4, 4), b["curve"]) + "; 16 volunteers' "
                  + _reach(r, (32, 16, 16), b["curve"]) + "."]
        pairs = [(n, _loss(r, (32, n, n), float(d)), _loss(r, (32, n, n))) for n in (4, 16)]
        pairs = [(n, on, off) for n, on, off in pairs if on and off]
        if pairs:
            lines[-1] += (" With the volunteers' local Adam on the same cosine, each keeping its own, "
                          + " and ".join(f"{n} volunteers end at {on:.4f}" for n, on, _ in pairs) + " nats/char, against "
                          + " and ".join(f"{off:.4f}" for _, _, off in pairs) + " with a constant local rate"
                          + (": the decay that helps one process does not help the rounds."
                             if all(on >= off for _, on, off in pairs) else "."))
        lines += [""]
    stages = [*earlier, ("quality_warm2", r)]
    labels = {"quality": "from scratch", "quality_warm": f"from the model trained {before['warm_start']['batches']:,} "
              "steps" if before else "", "quality_warm2": f"from the model trained {w['batches']:,} steps"}

    def cells(x: dict, crowd: int) -> str:
        """The crowd's best ratio and how much of the best sequential run's fall that is (1 at the sequential end)."""
        best = _best_h32(x).get(crowd)
        return "not measured | " if best is None else f"{best:.3f} | {_fall_made(x, crowd) * 100:.0f} % "

    lines += ["The H = 32 target across starting points: each crowd's best ratio to the best sequential run of the "
              "same start and samples, and the share of that run's fall it made; beside them, the ratio of a run "
              "that learned nothing (the starting model's).", "",
              "| start | sequential fall (nats/char) | learned nothing | 4 volunteers | fall made | 16 volunteers | "
              "fall made |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {labels[name]} | {x['sequential']['curve'][0][1] - _best_sequential(x):.3f} | "
              f"{_untrained(x):.3f} | {cells(x, 4)}| {cells(x, 16)}|" for name, x in stages if x]
    shares = [_fall_made(x, 16) for name, x in stages if x and name != "quality"]
    if len(shares) == 2 and None not in shares and abs(shares[0] - shares[1]) < 0.1:
        lines += ["", f"From both trained models 16 volunteers make about the same share of the best sequential "
                  f"run's fall ({shares[0] * 100:.0f} and {shares[1] * 100:.0f} %): starting later does not make "
                  "their 3 rounds worth more against the best sequential run; more rounds (longer "
                  "runs) is what a crowd that size needs at equal samples."]
    return lines + [""]


def _other_rows(r: dict) -> list[str]:
    """Per-batch gradients and rounds of H = 8 from the same start as H = 32's, where measured."""
    if not any(x["local_steps"] in (1, 8) for x in r["runs"]):
        return []
    # each run looked up once: its prose and its ratios to the others come from the same record
    h32, h8 = ({n: _run(r, (h, n, n), kept=True, synchronous=True) for n in (4, 16)} for h in (32, 8))
    per_batch = {4: _run(r, (1, 4, 1)), 16: _run(r, (1, 16, 16), synchronous=True)}
    costs = [(n, h32[n]["curve"][-1][1] / h8[n]["curve"][-1][1] - 1) for n in (4, 16) if h32[n] and h8[n]]
    beside = [(n, h32[n]["curve"][-1][1] / per_batch[n]["curve"][-1][1] - 1) for n in (4, 16)
              if h32[n] and per_batch[n]]
    every_row = all(x is not None for x in (*h32.values(), *h8.values(), *per_batch.values()))
    return ["Per-batch gradients and rounds of H = 8 were run from the same start"
            + (", so every row the target's comparison names has one starting model" if every_row else "")
            + ". Per-batch gradients from 4 volunteers, folded as they land (K = 1, the fold's Adam 0.01), end at "
            + _said_of(per_batch[4]) + (
                "; from 16 volunteers in synchronous rounds (the mean of a round's 16 gradients is one step of the "
                f"fold's Adam 0.01: synchronous data parallel, {r['batches'] // 16} steps; 16 asynchronous volunteers "
                "diverged from scratch) at " + _said_of(per_batch[16]) if per_batch[16] else
                "; per-batch gradients from 16 volunteers were not measured from this start") + ". Rounds of H = 8, "
            "each volunteer's Adam kept, end at " + _said_of(h8[4]) + " with 4 volunteers and at "
            + _said_of(h8[16]) + " with 16; 4 volunteers' " + _reach(r, (8, 4, 4)) + "; 16 volunteers' "
            + _reach(r, (8, 16, 16)) + "."
            + (" Against these, H = 32's 4 times fewer rounds cost "
               + " and ".join(f"{c * 100:.1f} % of the final loss with {n} volunteers" for n, c in costs) + "."
               if costs else "")
            + (" With each volunteer's Adam kept, H = 32's rounds (32 times fewer tasks) end "
               + " and ".join(f"{abs(d) * 100:.1f} % {'below' if d < 0 else 'above'} {n} volunteers' per-batch "
                              "gradients" for n, d in beside) + "."
               if beside else ""), ""]


def _fall_made(r: dict, crowd: int) -> float | None:
    """The share of the best sequential run's fall that the crowd's best H = 32 run made."""
    best, untrained = _best_h32(r).get(crowd), _untrained(r)
    return None if best is None else (untrained - best) / (untrained - 1)


def describe(machine: dict) -> str:
    return (f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; Python {machine.get('python', '?')}, "
            f"Node {machine.get('node', '?')}, {machine.get('chromium', '?')}; run on {machine.get('date', '?')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", type=Path, default=common.RESULTS)
    p.add_argument("--out", type=Path, default=common.ROOT / "docs" / "benchmarks.md")
    args = p.parse_args()
    docs = args.out.parent / "benchmarks"
    parts = {name: load(args.results, name) for name in ("overhead", "scaling", "wasted", "fold", "fold_throughput",
                                                          "cost", "quality", "quality_warm", "quality_warm2", "poison")}
    machines: dict[str, list[str]] = {}  # a machine's description -> the results measured on it
    for name, r in parts.items():
        if r:
            machines.setdefault(describe(r["machine"]), []).append(name)
    lines = ["# Benchmarks", "",
             "Figures from `bench/` (each script prints them and writes `bench/results/*.json`; "
             "`.venv/bin/python -m bench.report` writes this page and its plots). Not timed tests: CI only runs "
             "each script with `--quick` to prove it works.", ""]
    if len(machines) == 1:
        lines += [f"Machine: {next(iter(machines))}.", ""]
    else:
        lines += [f"Machine for {', '.join(names)}: {machine}." for machine, names in machines.items()] + [""]
    # the paper model's browser step, as section 1 measured it
    step_s = parts["overhead"]["summary"]["compute"]["median"] / 1000 if parts["overhead"] else None
    missing = [name for name, r in parts.items() if r is None]
    if parts["overhead"]:
        lines += overhead_section(parts["overhead"])
    if parts["scaling"]:
        lines += scaling_section(parts["scaling"], docs)
    if parts["wasted"]:
        lines += wasted_section(parts["wasted"])
    if parts["fold"]:
        lines += fold_section(parts["fold"])
    if parts["fold_throughput"]:
        lines += fold_throughput_section(parts["fold_throughput"])
    if parts["cost"]:
        lines += cost_section(parts["cost"], step_s)
    if parts["quality"]:
        lines += quality_section(parts["quality"], docs)
    if parts["quality_warm"]:
        lines += quality_warm_section(parts["quality_warm"], docs, later=parts["quality_warm2"] is not None)
    if parts["quality_warm2"]:
        lines += quality_warm2_section(parts["quality_warm2"], [(name, parts[name]) for name in ("quality", "quality_warm")],
                                       docs)
    lines += jsdoop_section(step_s)
    if parts["poison"]:
        lines += poison_section(parts["poison"])
    if missing:
        lines += [f"Not yet measured: {', '.join(missing)}.", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
