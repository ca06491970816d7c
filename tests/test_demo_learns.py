"""`make demo`'s default job learns: one headless Chromium volunteer on the
local stack takes its held-out loss (on the Book of Revelation, which the
demo's default passage leaves out) from ln 60 ≈ 4.1 nats/char, a model
that knows nothing, below 2.0 within ten minutes (`make soak`: well below
what letter and letter-pair statistics give, about 3.0 and 2.5; about two
minutes of training on a quiet 2-core machine, using at most 300 MB an
hour), and to SMALL_TARGET, what letter counts alone give, within two
minutes (`make test`: its first task, half a minute; a job that does not
learn stays above 4)."""

from __future__ import annotations

import shutil
import time

import pytest

from bench.quality import node, urls
from crowdtrain.jobs.charlstm import CharLSTM
from crowdtrain.jobs.corpus import kjv_text
from crowdtrain.local.process import LocalCloudProcess

HELD_OUT = "rev1:1-rev22:21"
SMALL_TARGET = 3.0
needs_chromium = pytest.mark.skipif(not shutil.which("/usr/bin/chromium"), reason="needs Debian's chromium")


@pytest.mark.alone  # its budget is wall-clock seconds
@needs_chromium
def test_the_demo_job_learns_letter_statistics_within_two_minutes(tmp_path):
    learns(tmp_path, budget_seconds=120, target=SMALL_TARGET, every=10)


@pytest.mark.soak
@needs_chromium
def test_the_demo_job_learns_within_its_budget(tmp_path):
    used = learns(tmp_path, budget_seconds=600, target=2.0, every=30)
    # what the page reported it used (with each completion: down and up), from its first poll on
    (t0, bytes0), (t1, bytes1) = used[0], used[-1]
    per_hour = (bytes1 - bytes0) / (t1 - t0) * 3600
    assert per_hour <= 300e6, f"{per_hour / 1e6:.0f} MB per volunteer-hour"


def learns(tmp_path, budget_seconds: float, target: float, every: float) -> list[tuple[float, int]]:
    """The held-out curve to `target`, asserted; returns (seconds, bytes the page reported) at each poll."""
    stack = LocalCloudProcess(tmp_path, "--volunteers", "1")  # the demo job, every option at its default
    try:
        job = stack.state["demo_job"]
        spec = stack.api.call("GET", f"/jobs/{job}")["spec"]
        batch_size, seq_len = spec["dataset"]["x"]["shape"]
        # a job never started, only to serve the held-out batches (its own model is a stub)
        holder = CharLSTM(units=(1,), seq_len=seq_len, batch_size=batch_size)
        x, y = holder.batches(kjv_text(HELD_OUT), 4, seed=99)
        weights = b"".join(w.astype("<f4").tobytes() for w in holder.initial_weights())
        held_out = stack.api.create_job(
            holder.job_spec(4), weights, (holder.batch_file(x[b], y[b]) for b in range(4)), start=False
        )
        started, curve, used = time.monotonic(), [], []
        while time.monotonic() - started < budget_seconds:
            time.sleep(every)
            status = stack.api.call("GET", f"/jobs/{job}")
            counters = status["counters"]
            used.append((time.monotonic() - started, counters.get("bytes_down", 0) + counters.get("bytes_up", 0)))
            loss = node(
                "evaluate.mjs",
                payload={
                    "spec": status["spec"],
                    "model_urls": urls(stack, job, "model", [status["version"]]),
                    "eval_urls": urls(stack, held_out, "batch", range(4)),
                },
            )[0]
            curve.append((round(time.monotonic() - started), status["version"], round(loss, 3)))
            print(f"demo: {curve[-1][0]} s, version {curve[-1][1]}, held-out loss {curve[-1][2]}", flush=True)
            if loss <= target:
                break
    finally:
        stack.stop()
    assert curve and curve[-1][2] <= target, f"held-out loss over time (s, version, nats/char): {curve}"
    return used
