"""Fill in the tables of docs/benchmarks.md and redraw its plots from bench/results/*.json. The page's prose is
written by hand; each table sits between `<!-- table: NAME -->` and `<!-- /table -->` and is replaced with what the
results say (a results file not there: a "not measured" line), and nothing else changes, so a rerun changes nothing."""

import argparse
import itertools
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import common

NAMES = (
    "overhead",
    "scaling",
    "wasted",
    "fold",
    "fold_throughput",
    "cost",
    "quality",
    "quality_warm",
    "quality_warm2",
    "poison",
    "scale",
)
QUALITY = ("quality", "quality_warm", "quality_warm2")
DOC = common.ROOT / "docs" / "benchmarks.md"
RUN = ".venv/bin/python -m bench."
CMD = {n: f"`{RUN}{n}`" for n in NAMES} | {
    "quality_warm": f"`{RUN}quality --warm-start`",
    "quality_warm2": f"`{RUN}quality --warm-start 2 --keep-state`",
}
MET = {None: "—", True: "met", False: "**not met**"}
MARKER = re.compile(r"(<!-- table: ([\w-]+) -->\n).*?(<!-- /table -->)", re.DOTALL)
FAILURES = (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError, StopIteration)


def md(header: list, rows: list, left: int = 1) -> str:
    """A markdown table; the first `left` columns align left, the rest (figures) right."""
    lines = [header, ["---" if i < left else "---:" for i in range(len(header))], *rows]
    return "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in lines)


def cols(rows: list[dict], columns: dict[str, str], left: int = 1) -> str:
    """A markdown table of result records: `columns` maps each header to a format of a record's fields."""
    return md(list(columns), [[f.format_map(x) for f in columns.values()] for x in rows], left)


def options(x: dict) -> list[tuple[str, str]]:
    """A quality run's settings other than the defaults: (its bench.quality option, in words)."""
    outer, inner, decay = x.get("outer", "sgd"), x.get("inner_lr", 0.01), x.get("decay_to", 1.0)
    lr = x.get("outer_lr", 0.7 if outer == "nesterov" else 1.0)
    pairs = [("--outer nesterov", f"outer Nesterov (DiLoCo) lr {lr:g}")] if outer == "nesterov" else []
    pairs += [(f"--outer-lr {lr:g}", "" if pairs else f"outer SGD lr {lr:g}")] * (lr != (0.7 if pairs else 1.0))
    pairs += [(f"--inner-lr {inner:g}", f"local Adam lr {inner:g}")] * (inner != 0.01)
    pairs += [("--keep-state", "local Adam kept across tasks")] * bool(x.get("keep_state"))
    pairs += [(f"--decay-to {decay:g}", f"local rate decayed to {decay:g}")] * (decay < 1)
    return pairs + [("", "synchronous") if x.get("synchronous") else ("--unsynchronized", "without the barrier")] * (
        x["k"] > 1
    )


def how(x: dict) -> str:
    return ", ".join(
        [f"H = {x['local_steps']}, {x['volunteers']} volunteers, K = {x['k']}"]
        + [words for _, words in options(x) if words]
    )


def best_h32(r: dict, n: int) -> dict | None:
    """The H = 32 run of n volunteers nearest the best sequential run (a synchronous one on a tie)."""
    runs = [x for x in r["runs"] if x["local_steps"] == 32 and x["volunteers"] == n]
    return min(runs, key=lambda x: (x["ratio_to_best"], not x.get("synchronous")), default=None)


def start(r: dict) -> str:
    return f"from a model trained {r['warm_start']['batches']:,} steps" if "warm_start" in r else "from scratch"


def targets(name: str, r: dict):
    """The summary's rows from one results file: what, figure, target, met (and the command, if not the default)."""
    if name == "overhead":
        yield (
            "Task overhead, the paper's model (sequence 1,024)",
            f"{r['summary']['overhead_fraction']:.1%}",
            f"≤ {r['target']:.0%}",
            r["target_met"],
        )
        yield (
            f"Task overhead, a short step (sequence {(p := r['pipelined'])['seq_len']}) pipelined",
            f"{p['prefetch_1']['overhead_fraction']:.1%}",
            f"≤ {p['target']:.0%}",
            p["target_met"],
        )
    for c in r["cases"] if name == "scaling" else []:
        yield (
            f"Scaling efficiency, {c['case']}",
            "{efficiency:.0%} at {volunteers}".format_map(c["rows"][-1]),
            f"≥ {r['target']:.0%} at 32",
            c["target_met"],
            f'`{RUN}scaling --case "{c["case"]}"`',
        )
    if name == "wasted":
        yield (
            f"Wasted work, {r['volunteers']} volunteers of mixed speed, H by step time",
            f"{r['rows'][-1]['wasted_share']:.1%}",
            f"≤ {r['target']:.0%}",
            r["target_met"],
        )
    if name == "fold":
        x = next(x for x in r["rows"] if x["parameters"] >= 1_000_000 and x["codec"] == "fp32")
        yield (
            f"Fold of {x['k']} gradients of 1 M parameters, one core",
            f"{x['ms_median']:.1f} ms",
            f"≤ {r['target_ms']} ms",
            r["target_met"],
        )
    if name == "fold_throughput":
        x = max(r["rows"], key=lambda x: x["results_per_invocation"])
        yield (
            f"One job's fold with AWS-like latency, K = {x['k']}",
            f"{x['results_per_second']:.0f} results/s",
            f"≥ {r['target']} results/s",
            r["target_met"],
        )
    if name == "cost":
        yield (
            f"Dollars per million samples, {r['paper_model']['batch']} samples a task",
            f"${min(x['total'] for x in r['rows']):.3f}",
            f"≤ ${r['target']:.2f}",
            r["target_met"],
        )
        ratio = (h1 := r["local_steps"][0])["requests_per_sample"] / (h := r["local_steps"][-1])["requests_per_sample"]
        yield (
            f"Requests per sample, H = {h['local_steps']} against H = {h1['local_steps']}",
            f"{ratio:.0f}x fewer",
            "≥ 20x fewer",
            ratio >= 20,
        )
        yield (
            f"Dollars per million samples, H = {h['local_steps']}",
            f"${h['total']:.3f}",
            f"≤ ${r['target']:.2f}",
            h["total"] <= r["target"],
        )
    for n, x in ((n, best_h32(r, n)) for n in ((4, 16) if name in QUALITY else ())):
        flags = ["--warm-start" + f" {r.get('stage', 1)}" * (r.get("stage", 1) > 1)] * ("warm_start" in r)
        flags += [f"--only 32:{n}:{x['k']}", *(f for f, _ in options(x) if f)] if x else []
        yield (
            f"Learning quality, H = 32, {n} volunteers, {start(r)}: loss ÷ best sequential's",
            f"{x['ratio_to_best']:.3f}" if x else "not measured",
            f"≤ {r['target']}",
            x and x["ratio_to_best"] <= r["target"],
            f"`{RUN}quality {' '.join(flags)}`" if x else None,
        )
    if name == "quality" and (e := r.get("exactness")):
        yield (
            f"Exactness: 1 volunteer against {e['steps']} sequential SGD steps",
            f"{e['max_abs_diff']:.1e}",
            f"≤ {e['target']:.0e}",
            e["met"],
        )
    if name == "poison":
        yield (
            "Poisoning: median at K ≥ 8, sign flips at the norm bound and the tail attack",
            f"survives {r['median_survives']:.0%} alone, {r['replicated_survives']:.0%} behind replication",
            "survives 40 % hostile",
            r["target_met"],
        )
    for key, ok in r["targets"].items() if name == "scale" else []:  # "scenario: target"
        scenario, goal = key.split(": ", 1)
        yield (
            f"One job on AWS's default quotas (modelled), {scenario}",
            "first limit ({first_limit}) at {first_limit_volunteers:,.0f} volunteers".format_map(
                r["scenarios"][scenario]
            ),
            goal,
            ok,
        )


def summary(R: dict) -> str:
    rows = []
    for name in NAMES:
        try:  # the rows up to the first that the results cannot give
            for row in targets(name, R[name] or {}):
                rows.append((*row[:3], MET[row[3]], (*row, None)[4] or CMD[name]))
        except FAILURES:
            rows.append((f"`{name}.json`", "not measured", "", MET[None], CMD[name]))
    return md(["what", "figure", "target", "met", "reproduce"], rows, left=5)


def machines(R: dict) -> str:
    keys = {
        n: (
            "{cpu}, {cores} cores; Python {python}, Node {node}, {chromium}".format_map(R[n]["machine"]),
            R[n]["machine"]["date"],
        )
        for n in NAMES
        if R[n]
    }
    return md(
        ["results", "machine", "run on"],
        [(", ".join(n for n in keys if keys[n] == k), *k) for k in dict.fromkeys(keys.values())],
        left=3,
    )


def overhead_runs(r: dict) -> str:
    s, t, a, p, th = (r.get(k) for k in ("summary", "shorter", "accumulated", "pipelined", "threads"))
    runs = [
        ("one task at a time", f"seq-len {r['seq_len']}", r["seq_len"], s["compute"]["median"], s["overhead_fraction"])
    ]
    runs += (
        [
            (
                "one task at a time",
                f"short-seq-len {t['seq_len']}",
                t["seq_len"],
                t["compute_median"],
                t["overhead_fraction"],
            )
        ]
        if t
        else []
    )
    runs += (
        [
            (
                f"a batch of {a['batch']} a task, {a['micro_batch']} sequences at a time",
                f"accumulate {a['batch'] // a['micro_batch']}",
                a["seq_len"],
                a["compute_median"],
                a["overhead_fraction"],
            )
        ]
        if a
        else []
    )
    runs += (
        [
            (
                f"{words}, wall clock over {p[k]['tasks']} tasks",
                f"pipeline-seq-len {p['seq_len']}",
                p["seq_len"],
                p[k]["compute_median"],
                p[k]["overhead_fraction"],
            )
            for k, words in (
                ("prefetch_1", "pipelined (prefetch 1)"),
                ("prefetch_0", "one task at a time (prefetch 0)"),
            )
        ]
        if p
        else []
    )
    runs += (
        [
            (
                f"the demo's LSTM(128), {words}: TF.js reports {th[k]['threads']}",
                "threads-only",
                "",
                th[k]["compute_median"],
                None,
            )
            for k, words in (
                ("threaded", "`?threads=N`, a thread per core"),
                ("single", "`?threads=1`"),
                ("default", "TF.js's default"),
            )
        ]
        if th
        else []
    )
    return md(
        ["run", "option", "sequence", "compute median ms", "overhead"],
        [(run, f"`--{opt}`", seq, f"{ms:,.0f}", "" if o is None else f"{o:.1%}") for run, opt, seq, ms, o in runs],
        2,
    )


def quality(r: dict) -> str:
    steps, seq, large = r["batches"] * r["epochs"], r["sequential"], r.get("sequential_large_batch", {})
    rows = [
        {**b, "run": "sequential TF.js, Adam 0.01" + f" decayed to {d}" * bool(d), "ratio": 1, "steps": steps}
        for d, b in {"": seq, **r.get("sequential_decayed", {})}.items()
    ]
    rows += [
        {
            **b,
            "run": "sequential TF.js, " + f"batches of {n} × 32, " * (n != "1") + f"Adam {rate}",
            "ratio": b["curve"][-1][1] / seq["curve"][-1][1],
            "steps": steps // int(n),
        }
        for n, bs in large.items()
        for rate, b in bs.items()
    ]
    rows += [
        {
            **x,
            "run": how(x),
            "ratio": x["final_ratio"],
            "steps": x["versions"],
            "large": f"{x['ratio_to_large_batch']:.3f}" if "ratio_to_large_batch" in x else "",
            "why": ", ".join(f"{n} {why}" for why, n in x["discarded"].items()) or "none",
        }
        for x in r["runs"]
    ]
    columns = {
        "run": "{run}",
        "final held-out loss": "{loss:.4f}",
        "ratio to sequential": "{ratio:.3f}",
        "ratio to batches of n × 32": "{large}",
        "steps or versions": "{steps}",
        "discarded": "{why}",
        "seconds": "{seconds:.0f}",
    }
    return cols(
        [{"why": "", "large": "", **x, "loss": x["curve"][-1][1]} for x in rows],
        {k: v for k, v in columns.items() if large or v != "{large}"},
    )


def quality_stages(R: dict) -> str:
    rows = []  # each start: each crowd's best H = 32 ratio, and the share of the best sequential run's fall it made
    for r in filter(None, (R[name] for name in QUALITY)):
        best = r["runs"][0]["curve"][-1][1] / r["runs"][0]["ratio_to_best"]  # the best sequential run's final loss
        untrained, cells = r["sequential"]["curve"][0][1] / best, []  # the ratio of a run that learned nothing
        for x in (best_h32(r, n) for n in (4, 16)):
            cells += (
                [f"{x['ratio_to_best']:.3f}", f"{(untrained - x['ratio_to_best']) / (untrained - 1):.0%}"]
                if x
                else ["not measured", ""]
            )
        rows.append((start(r), f"{r['sequential']['curve'][0][1] - best:.3f}", f"{untrained:.3f}", *cells))
    return md(
        [
            "start",
            "best sequential run's fall (nats/char)",
            "learned nothing",
            "4 volunteers",
            "fall made",
            "16 volunteers",
            "fall made",
        ],
        rows,
    )


PHASES = ("between", "lease", "download", "compute", "encode", "upload", "complete", "total")
TABLES = {  # a marker's name: (the results the table needs, none for all of them; what makes it from them)
    "summary": ((), summary),
    "machines": ((), machines),
    "overhead-runs": (("overhead",), overhead_runs),
    "overhead": (
        ("overhead",),
        lambda r: md(
            ["phase", "median ms", "p95 ms"],
            [(p, f"{r['summary'][p]['median']:.1f}", f"{r['summary'][p]['p95']:.1f}") for p in PHASES]
            + [
                (f"download when the version {when}", f"{r['summary'][f'download_median_when_{key}']:.1f}", "")
                for key, when in (
                    ("weights", "changed (weights and batch)"),
                    ("cached", "was loaded already (batch only)"),
                )
            ],
        ),
    ),
    "scaling": (
        ("scaling",),
        lambda r: cols(
            [{**x, "case": c["case"]} for c in r["cases"] for x in c["rows"]],
            {
                "case": "{case}",
                "volunteers": "{volunteers}",
                "trained samples/s": "{trained_per_second:.2f}",
                "efficiency": "{efficiency:.0%}",
                "requests s (median)": "{request_seconds_median:.2f}",
                "lost leases": "{lost}",
                "errors": "{errors}",
                "discarded": "{discarded} of {completed}",
            },
        ),
    ),
    "wasted": (
        ("wasted",),
        lambda r: cols(
            [
                {
                    **x,
                    "rate": x["folded"] / x["seconds"],
                    "why": ", ".join(f"{n} {why}" for why, n in x["discarded"].items()) or "none",
                }
                for x in r["rows"]
            ],
            {
                "tasks": "{case}",
                "samples computed": "{computed:,}",
                "folded": "{folded:,}",
                "wasted": "{wasted_share:.1%}",
                "slow devices' share of computing": "{slow_share_of_computed:.0%}",
                "discarded": "{why}",
                "samples folded/s": "{rate:.0f}",
            },
        ),
    ),
    "fold": (
        ("fold",),
        lambda r: cols(
            r["rows"],
            {
                "parameters": "{parameters:,}",
                "codec": "{codec}",
                "upload bytes": "{upload_bytes:,}",
                "ms per fold": "{ms_median:.1f}",
                "updates/s": "{folds_per_second:.1f}",
            },
            left=0,
        ),
    ),
    "fold-throughput": (
        ("fold_throughput",),
        lambda r: cols(
            r["rows"],
            {
                "K": "{k}",
                "results per invocation": "{results_per_invocation}",
                "results": "{results}",
                "versions": "{versions}",
                "seconds": "{seconds:.1f}",
                "results/s": "{results_per_second:.1f}",
                "without moto's time": "{aws_results_per_second:.1f}",
            },
            left=0,
        ),
    ),
    "fold-levels": (
        ("fold_throughput",),
        lambda r: md(
            ["level", "invocations", "messages each", "seconds", "results/s", "without moto's time"],
            [
                (
                    k,
                    x["invocations"],
                    f"{x['messages'] / x['invocations']:.1f}",
                    f"{x['seconds']:.1f}",
                    f"{x['results_per_second']:,.0f}",
                    f"{x['aws_results_per_second']:,.0f}",
                )
                for k, x in r["levels"]["levels"].items()
            ]
            + [
                (
                    f"**one job**, {r['levels']['fold_groups']} groups at once",
                    "",
                    "",
                    "",
                    *(f"**{r['levels'][f'job_{k}results_per_second']:,.0f}**" for k in ("", "aws_")),
                )
            ],
        ),
    ),
    "requests": (
        ("cost",),
        lambda r: md(
            ["service:operation", "per task, 10 results per fold", "1 result per fold"],
            [
                (k, f"{n:.2f}", f"{r['measured_light']['calls_per_task'].get(k, 0):.2f}")
                for k, n in r["measured"]["calls_per_task"].items()
            ]
            + [
                (
                    "**requests in all** (billing units and the browser's upload aside)",
                    f"**{r['calls_per_task_total']:.2f}**",
                    "",
                )
            ],
        ),
    ),
    "dollars": (
        ("cost",),
        lambda r: cols(
            r["rows"],
            {
                "codec": "{codec}",
                "fold load": "{note}",
                "download B": "{download_bytes:,}",
                "upload B": "{upload_bytes:,}",
                **{s: f"{{dollars_per_million_samples[{s}]:.3f}}" for s in r["rows"][0]["dollars_per_million_samples"]},
                "total": "**{total:.3f}**",
            },
            left=2,
        ),
    ),
    "local-steps": (
        ("cost",),
        lambda r: cols(
            r["local_steps"],
            {
                "H": "{local_steps}",
                "samples per task": "{samples_per_task:,}",
                "requests per task": "{requests_per_task:.1f}",
                "requests per sample": "{requests_per_sample:.4f}",
                "version + upload B per sample": "{model_bytes_per_sample:,.0f}",
                "data B per sample": "{data_bytes_per_sample:,.0f}",
                "$ per million samples": "{total:.3f}",
            },
            left=0,
        ),
    ),
    "task-size": (
        ("cost",),
        lambda r: cols(
            r["samples_sweep"],
            {
                "samples per task": "{samples_per_task:,}",
                "total $ per million samples": "{total:.3f}",
                "of it CloudFront": "{dollars_per_million_samples[CloudFront]:.3f}",
            },
            left=0,
        ),
    ),
    **{name.replace("_", "-"): ((name,), quality) for name in QUALITY},
    "quality-stages": ((), quality_stages),
    **{
        f"poison-{kind}": (
            ("poison",),
            lambda r, kind=kind: md(
                ["rule", "K", *(f"{s:.0%}" for s in r["shares"])],
                [
                    (rule, k, *(f"{a:.2f}" for a in row))
                    for k, t in r["attacks"][kind].items()
                    for rule, row in t.items()
                ],
            ),
        )
        for kind in ("flip", "noise")
    },
    "poison-tail": (
        ("poison",),
        lambda r: md(
            ["rule", "K", f"{r['tasks'] + 1} tasks an epoch", f"{r['tasks']} tasks an epoch"],
            [
                (rule, k, f"{t['tasks % K == 1']:.3f}", f"{t['tasks % K == 0']:.3f}")
                for k, tb in r["tail"].items()
                for rule, t in tb.items()
            ],
        ),
    ),
    "poison-capped": (
        ("poison",),
        lambda r: md(
            ["rule", "K", "hostile of K", "held-out accuracy"],
            [
                (rule, k, max(1, int(r["max_share"] * int(k))), f"{a:.3f}")
                for k, tb in r["capped"].items()
                for rule, a in tb.items()
            ],
        ),
    ),
    "poison-replication": (
        ("poison",),
        lambda r: md(
            ["policy", "attack", *(f"{s:.0%} hostile" for s in r["shares"])],
            [
                (
                    *key,
                    *("{copies_per_result:.2f} / {hostile_folded:.1%} / {accuracy:.2f}".format_map(c) for c in cells),
                )
                for key, cells in itertools.groupby(r["replication"], lambda x: (x["policy"], x["attack"]))
            ],
            left=2,
        ),
    ),
}


def draw(R: dict, docs: Path) -> None:
    cases = (R["scaling"] or {}).get("cases", [])
    figures = [
        (
            "scaling",
            "Scaling (simulated compute)" + ": not measured" * (not cases),
            "volunteers",
            "efficiency %",
            [(c["case"], [(x["volunteers"], 100 * x["efficiency"]) for x in c["rows"]]) for c in cases]
            + [("target 95 %", [(1, 95), (32, 95)])],
        )
    ]
    for name, title in zip(
        QUALITY,
        ("Held-out loss vs samples trained", "From a trained model", "From a model trained further"),
        strict=True,
    ):
        curves = {"sequential TF.js": (r := R[name] or {}).get("sequential", {}).get("curve")} | {
            f"sequential TF.js, Adam decayed to {d}": b["curve"] for d, b in r.get("sequential_decayed", {}).items()
        }
        figures += (
            [
                (
                    name,
                    title,
                    "samples",
                    "held-out loss (nats/char)",
                    [*curves.items(), *((how(x), x["curve"]) for x in r["runs"] if x["final_ratio"] < 2)],
                )
            ]
            if r
            else []
        )
    docs.mkdir(parents=True, exist_ok=True)
    for name, title, xlabel, ylabel, series in figures:  # diverged quality runs (ratio 2 or more): table only
        fig, ax = plt.subplots(figsize=(6.4, 3.6 + 0.2 * len(series)), dpi=110)  # room for the legend below
        for i, (label, points) in enumerate(series):  # past the 10 colours, the same colours dashed
            ax.plot(*zip(*points, strict=True), marker="o", linestyle=("-", "--", ":")[i // 10 % 3], label=label)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.set_xscale("log", base=2) if name == "scaling" else None
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small", frameon=False)  # off the curves
        fig.savefig(docs / f"{name}.png", bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=common.RESULTS)
    p.add_argument("--out", type=Path, default=DOC)
    args = p.parse_args()
    R = {n: json.loads(f.read_text()) if (f := args.results / f"{n}.json").exists() else None for n in NAMES}

    def fill(name: str) -> str:
        needs, fn = TABLES[name]
        missing = [n for n in needs if not R[n]]
        try:
            if not missing:
                return fn(*(R[n] for n in needs)) if needs else fn(R)
        except FAILURES as e:  # results from an older or --quick run, without what this table shows
            print(f"table {name}: {type(e).__name__} {e}", file=sys.stderr)
            missing = list(needs or QUALITY)
        return f"_Not measured: run {', '.join(CMD[n] for n in missing)}._"

    draw(R, args.out.parent / "benchmarks")
    text = (args.out if args.out.exists() else DOC).read_text()  # the hand-written page whose tables are filled in
    for name in sorted({m[2] for m in MARKER.finditer(text)} ^ set(TABLES)):
        print(f"table {name}: a marker without a table, or a table without a marker", file=sys.stderr)
    args.out.write_text(MARKER.sub(lambda m: m[1] + fill(m[2]) + "\n" + m[3] if m[2] in TABLES else m[0], text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
