"""Learning curves in one browser: the demo job (the char-lstm template) and
the char-transformer template, each at its defaults on the local stack with
one headless Chromium volunteer, which trains on the backend its canary
picks. Every `--every` seconds the newest version is scored on held-out
text (the Book of Revelation, which training never sees) in Node, until the
loss reaches `--target` or `--budget` seconds pass.

The two held-out figures are each template's own loss: the LSTM predicts the
character after 40, the transformer every character of a sequence from the
ones before it (its first ones from little context), so the transformer's
figure is the harder of the two at equal skill.

Writes bench/results/curves.json; `tests/test_demo_learns.py` runs the
demo's curve with its own budget and target.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common
from bench.quality import node, urls
from crowdtrain.jobs.charlstm import CharLSTM
from crowdtrain.jobs.chartransformer import CharTransformer
from crowdtrain.jobs.corpus import kjv_text
from crowdtrain.local.process import LocalCloudProcess

HELD_OUT = "rev1:1-rev22:21"
HELD_OUT_BATCHES = 4
GOAL, GOAL_SECONDS = 2.5, 900  # issue 41: the char-transformer below 2.5 nats/char within 15 minutes
# what tells each template's held-out batches apart: the next character (LSTM) or every one (transformer)
HOLDERS = {
    "char-lstm": lambda b, t: CharLSTM(units=(1,), seq_len=t, batch_size=b),
    "char-transformer": lambda b, t: CharTransformer(seq_len=t, batch_size=b, width=4, heads=1, blocks=0),
}


@dataclass
class Curve:
    template: str
    points: list[tuple[int, int, float]] = field(default_factory=list)  # (seconds, version, held-out loss)
    used: list[tuple[float, int]] = field(default_factory=list)  # (seconds, bytes the page reported)
    backend: str = ""  # what computed the results the fold counted

    def seconds_to(self, target: float) -> int | None:
        return next((s for s, _, loss in self.points if loss <= target), None)


def curve(workdir: Path, template: str, budget: float, target: float, every: float) -> Curve:
    """One browser trains `template`'s job at its defaults until its held-out loss is `target` or less."""
    stack = LocalCloudProcess(workdir, "--volunteers", "1", "--template", template)
    out = Curve(template)
    try:
        job = stack.state["demo_job"]
        spec = stack.api.call("GET", f"/jobs/{job}")["spec"]
        batch_size, seq_len = spec["dataset"]["x"]["shape"][:2]
        # a job never started, only to serve the held-out batches (its own model is a stub)
        holder = HOLDERS[template](batch_size, seq_len)
        x, y = holder.batches(kjv_text(HELD_OUT), HELD_OUT_BATCHES, seed=99)
        weights = b"".join(w.astype("<f4").tobytes() for w in holder.initial_weights())
        batches = (holder.batch_file(x[b], y[b]) for b in range(HELD_OUT_BATCHES))
        held_out = stack.api.create_job(holder.job_spec(HELD_OUT_BATCHES), weights, batches, start=False)
        started = time.monotonic()
        while time.monotonic() - started < budget:
            time.sleep(every)
            status = stack.api.call("GET", f"/jobs/{job}")
            counters = status["counters"]
            seconds = time.monotonic() - started
            out.used.append((seconds, counters.get("bytes_down", 0) + counters.get("bytes_up", 0)))
            loss = node(
                "evaluate.mjs",
                payload={
                    "spec": status["spec"],
                    "model_urls": urls(stack, job, "model", [status["version"]]),
                    "eval_urls": urls(stack, held_out, "batch", range(HELD_OUT_BATCHES)),
                },
            )[0]
            out.points.append((round(seconds), status["version"], round(loss, 3)))
            backends = {k[len("backend_") :]: v for k, v in counters.items() if k.startswith("backend_") and v}
            out.backend = ", ".join(sorted(backends, key=lambda b: -backends[b]))
            seconds, version, _ = out.points[-1]
            print(f"{template}: {seconds} s, version {version}, held-out loss {loss:.3f}", flush=True)
            if loss <= target:
                break
    finally:
        stack.stop()
    return out


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=900, help="seconds each template may train (default 15 minutes)")
    p.add_argument("--target", type=float, default=2.0, help="held-out nats/char at which a run stops")
    p.add_argument("--every", type=float, default=30, help="seconds between held-out scores")
    p.add_argument("--only", choices=sorted(HOLDERS), help="one template")
    args = p.parse_args()
    if args.quick:
        args.budget, args.every, args.target = 40, 20, 0.0
    rows: list[dict[str, Any]] = []
    for template in [args.only] if args.only else sorted(HOLDERS):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(row(curve(Path(tmp), template, args.budget, args.target, args.every)))
    goals = [
        {
            "template": x["template"],
            "target": GOAL,
            "budget_minutes": GOAL_SECONDS / 60,
            "reached_text": x["to_2_5_text"],
            "met": x["to_2_5"] is not None and x["to_2_5"] <= GOAL_SECONDS,
        }
        for x in rows
        if x["template"] == "char-transformer"
    ]
    for goal in goals:
        print(f"target: the {goal['template']} template below {GOAL} nats/char within {GOAL_SECONDS // 60} min "
              f"({goal['reached_text']}): {'met' if goal['met'] else 'NOT met'}")  # fmt: skip
    common.save(
        "curves", {"budget_seconds": args.budget, "every_seconds": args.every, "rows": rows, "goals": goals}, args
    )


def row(run: Curve) -> dict[str, Any]:
    """A run's figures, and the texts bench/report.py shows."""
    first = next(((s, v, loss) for s, v, loss in run.points if v >= 1), None)
    reached = {t: run.seconds_to(t) for t in (2.5, 2.0)}

    def when(target: float) -> str:
        return "not within the run" if reached[target] is None else f"{reached[target]} s"

    return {
        "template": run.template,
        "backend": run.backend or "none counted",
        "points": run.points,
        "to_2_5": reached[2.5],
        "to_2_0": reached[2.0],
        "first_text": f"{first[2]:.2f} at {first[0]} s" if first else "no version",
        "to_2_5_text": when(2.5),
        "to_2_0_text": when(2.0),
        "last_text": ", ".join(map(str, run.points[-1])) if run.points else "none",
    }


if __name__ == "__main__":
    main()
