"""Task overhead: where a volunteer's time goes, per task, on the paper's model.

One headless Chromium volunteer (the real page, TF.js on wasm) trains the
paper's char-LSTM (LSTM(10) -> LSTM(10) -> softmax over 128, sequences of
1024) against the real local stack. The page reports each task's phases:
lease, download (weights when the version changed, and the batch), compute,
encode, upload, complete, and the time spent between tasks (writing the text
sample the page shows). Overhead fraction = (wall - compute) / wall, where
wall includes that time between tasks.
Target: 5 % or less. With K = 3 a lone volunteer finds the version unchanged
on two tasks of three, which shows what version caching saves.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import common
from tests.localstack import StackProcess
from crowdtrain.swarm import open_context, volunteer_url

# "between": work the page's worker does between tasks (the text sample), outside
# the lease but still the volunteer's time, so it counts as overhead.
PHASES = ["between", "lease", "download", "compute", "encode", "upload", "complete", "total"]


def run(seq_len: int, tasks: int, k: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        stack = StackProcess(Path(tmp))
        try:
            stack.char_lstm_job(batches=tasks + 2, epochs=1, k=k, seq_len=seq_len, batch_size=32)
            from playwright.sync_api import sync_playwright
            with sync_playwright() as playwright:
                context = open_context(playwright, str(Path(tmp) / "profile"))
                page = context.new_page()
                page.goto(volunteer_url(stack.web, "bench"))
                # a time budget: a slow machine reports fewer tasks rather than none
                deadline = time.monotonic() + 120 + tasks * seq_len / 2
                while page.evaluate("window.crowdtrain.tasks.length") < tasks + 1:
                    if time.monotonic() > deadline:
                        if page.evaluate("window.crowdtrain.tasks.length") >= 3:
                            break
                        raise RuntimeError(f"volunteer too slow: {page.inner_text('#state')}")
                    time.sleep(0.5)
                reports = page.evaluate("window.crowdtrain.tasks")
                context.close()
        finally:
            stack.stop()
    return reports[1:]  # the first task also builds the model: reported apart


def summarize(reports: list[dict]) -> dict:
    out = {}
    for phase in PHASES:
        values = [r["ms"][phase] for r in reports]
        out[phase] = {"median": statistics.median(values), "p95": common.percentile(values, 95)}
    walls = [r["ms"]["total"] + r["ms"]["between"] for r in reports]
    computes = [r["ms"]["compute"] for r in reports]
    out["overhead_fraction"] = (sum(walls) - sum(computes)) / sum(walls)
    for kind in ("weights", "cached"):
        chosen = [r["ms"]["download"] for r in reports if r["fetched"] == kind]
        out[f"download_median_when_{kind}"] = statistics.median(chosen) if chosen else None
    return out


def measure(seq_len: int, tasks: int) -> tuple[list[dict], dict]:
    reports = run(seq_len, tasks, k=3)
    summary = summarize(reports)
    print(f"paper model, sequence {seq_len}, batch 32, {len(reports)} tasks after the first:")
    for phase in PHASES:
        print(f"  {phase:<9} median {summary[phase]['median']:8.1f} ms   p95 {summary[phase]['p95']:8.1f} ms")
    print(f"  download when the version changed {summary['download_median_when_weights']} ms, "
          f"when cached {summary['download_median_when_cached']} ms")
    print(f"overhead fraction (wall - compute) / wall = {summary['overhead_fraction']:.1%}", flush=True)
    return reports, summary


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--seq-len", type=int, default=1024, help="characters per sequence (the paper's: 1024)")
    p.add_argument("--tasks", type=int, default=8, help="tasks to time after the first")
    p.add_argument("--short-seq-len", type=int, default=128,
                   help="then the same at this shorter sequence, to show a short step's overhead (0: skip)")
    args = p.parse_args()
    seq_len, tasks = (64, 4) if args.quick else (args.seq_len, args.tasks)
    reports, summary = measure(seq_len, tasks)
    fraction = summary["overhead_fraction"]
    print(f"target <= 5 % at sequence {seq_len}: {'met' if fraction <= 0.05 else 'NOT met'}")
    results = {"seq_len": seq_len, "summary": summary, "reports": reports, "target": 0.05,
               "target_met": fraction <= 0.05}
    if args.short_seq_len and not args.quick:
        short_reports, short = measure(args.short_seq_len, tasks)
        results["shorter"] = {"seq_len": args.short_seq_len, "tasks": len(short_reports),
                              "compute_median": short["compute"]["median"],
                              "overhead_fraction": short["overhead_fraction"]}
    common.save("overhead", results, args)


if __name__ == "__main__":
    main()
