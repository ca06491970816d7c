"""Fill in the tables of docs/benchmarks.md and redraw its plots from bench/results/*.json. The page's prose is
written by hand; each table sits between `<!-- table: NAME -->` and `<!-- /table -->` and is replaced with what the
results say (a results file not there: a "not measured" line), and nothing else changes, so a rerun changes nothing.
Headers, cell formats and the summary rows' wording are in bench/tables.json; figures and met/not met: the results."""

import argparse
import itertools
import json
import re
import sys
from pathlib import Path

from bench import common
from bench.plots import draw

T = json.loads((Path(__file__).parent / "tables.json").read_text())  # headers, formats, wording: no figures
NAMES, QUALITY, LABEL = T["names"], T["quality"], T["labels"]
DOC = common.ROOT / "docs" / "benchmarks.md"
SCALE_DOC = common.ROOT / "docs" / "scale.md"  # its tables too: one per scenario of bench/scale.py
SECURITY_DOC = common.ROOT / "docs" / "security.md"  # the poisoning tables again, beside the defences


def pages_beside(out: Path) -> tuple[tuple[Path, Path], ...]:
    """The pages written (beside `out`), each with the page read where it is not there yet."""
    return (out, DOC), *((out.with_name(d.name), d) for d in (SCALE_DOC, SECURITY_DOC))


RUN = T["run"]
CMD = {n: f"`{RUN}{T['commands'].get(n, n)}`" for n in NAMES}
MET = {None: "—", True: "met", False: "**not met**"}
MARKER = re.compile(r"(<!-- table: ([\w-]+) -->\n).*?(<!-- /table -->)", re.DOTALL)
FAILURES = (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError, StopIteration)


def md(header: list, rows: list, left: int = 1) -> str:
    """A markdown table; the first `left` columns align left, the rest (figures) right."""
    lines = [header, ["---" if i < left else "---:" for i in range(len(header))], *rows]
    return "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in lines)


def cols(rows: list[dict], columns: dict[str, str], left: int = 1, last: tuple = ()) -> str:
    """A markdown table of result records: `columns` maps each header to a format of a record's fields."""
    return md(list(columns), [[f.format_map(x) for f in columns.values()] for x in rows] + [*last], left)


def table(name: str, rows: list, extra: list | tuple = ()) -> str:
    """Marker `name`'s table in tables.json: `rows` under its header (and `extra`), or records in its columns."""
    t = T["tables"][name]
    if "columns" in t:
        return cols(rows, t["columns"], t.get("left", 1))
    return md([*t["header"], *extra], rows, t.get("left", 1))


def options(x: dict) -> list[tuple[str, str]]:
    """A quality run's settings other than the defaults: (its bench.quality option, in words)."""
    outer, inner, decay = x.get("outer", "sgd"), x.get("inner_lr", 0.01), x.get("decay_to", 1.0)
    lr = x.get("outer_lr", 0.7 if outer == "nesterov" else 1.0)
    pairs = [("--outer nesterov", f"outer Nesterov (DiLoCo) lr {lr:g}")] if outer == "nesterov" else []
    pairs += [(f"--outer-lr {lr:g}", "" if pairs else f"outer SGD lr {lr:g}")] * (lr != (0.7 if pairs else 1.0))
    pairs += [(f"--inner-lr {inner:g}", f"local Adam lr {inner:g}")] * (inner != 0.01)
    pairs += [("--keep-state", "local Adam kept across tasks")] * bool(x.get("keep_state"))
    pairs += [(f"--decay-to {decay:g}", f"local rate decayed to {decay:g}")] * (decay < 1)
    sync = ("", "synchronous") if x.get("synchronous") else ("--unsynchronized", "without the barrier")
    return pairs + [sync] * (x["k"] > 1)


def how(x: dict) -> str:
    words = [f"H = {x['local_steps']}, {x['volunteers']} volunteers, K = {x['k']}"]
    return ", ".join(words + [w for _, w in options(x) if w])


def best_h32(r: dict, n: int) -> dict | None:
    """The H = 32 run of n volunteers nearest the best sequential run (a synchronous one on a tie)."""
    runs = [x for x in r["runs"] if x["local_steps"] == 32 and x["volunteers"] == n]
    return min(runs, key=lambda x: (x["ratio_to_best"], not x.get("synchronous")), default=None)


def by_rule(d: dict) -> list:
    """(rule, K, its figures) from {K: {rule: figures}}."""
    return [(rule, k, x) for k, t in d.items() for rule, x in t.items()]


def why(x: dict) -> str:
    """A run's discarded results: how many, and why."""
    return ", ".join(f"{n} {reason}" for reason, n in x["discarded"].items()) or "none"


def start(r: dict) -> str:
    return LABEL["start_warm"].format(r["warm_start"]["batches"]) if "warm_start" in r else LABEL["start_scratch"]


def targets(name: str, r: dict):
    """The summary's rows from one results file: (its wording in tables.json, the fields it shows, met, command)."""
    if name == "overhead":
        yield "overhead", r, r["target_met"], None
        yield "pipelined", r["pipelined"], r["pipelined"]["target_met"], None
        if p := r.get("preset_jsdoop"):
            yield "preset", p, p["target_met"], f"`{RUN}overhead --only preset`"
    for c in r["cases"] if name == "scaling" else []:
        cmd = f'`{RUN}scaling --case "{c["case"]}"`'
        yield "scaling", {**c["rows"][-1], "case": c["case"], "target": r["target"]}, c["target_met"], cmd
    if name == "wasted":
        yield "wasted", {**r["rows"][-1], "volunteers": r["volunteers"], "target": r["target"]}, r["target_met"], None
    if name == "fold":
        x = next(x for x in r["rows"] if x["parameters"] >= 1_000_000 and x["codec"] == "fp32")
        yield "fold", {**x, "target_ms": r["target_ms"]}, r["target_met"], None
    if name == "fold_throughput":
        x = max(r["rows"], key=lambda x: x["results_per_invocation"])
        yield "fold_throughput", {**x, "target": r["target"]}, r["target_met"], None
    if name == "cost":
        total = min(x["total"] for x in r["rows"])
        yield "cost", {"batch": r["paper_model"]["batch"], "total": total, "target": r["target"]}, r["target_met"], None
        h1, h = r["local_steps"][0], r["local_steps"][-1]
        ratio = h1["requests_per_sample"] / h["requests_per_sample"]
        yield "requests", {"h": h["local_steps"], "h1": h1["local_steps"], "ratio": ratio}, ratio >= 20, None
        yield "cost_h", {**h, "target": r["target"]}, h["total"] <= r["target"], None
    for n, x in ((n, best_h32(r, n)) for n in ((4, 16) if name in QUALITY else ())):
        flags = ["--warm-start" + f" {r.get('stage', 1)}" * (r.get("stage", 1) > 1)] * ("warm_start" in r)
        flags += [f"--only 32:{n}:{x['k']}", *(f for f, _ in options(x) if f)] if x else []
        fields = {**(x or {}), "n": n, "start": start(r), "target": r["target"]}
        met, cmd = x and x["ratio_to_best"] <= r["target"], f"`{RUN}quality {' '.join(flags)}`" if x else None
        yield "quality" if x else "quality_none", fields, met, cmd
    if name == "quality" and (e := r.get("exactness")):
        yield "exactness", e, e["met"], None
    if name == "poison":
        yield "poison", r, r["target_met"], None
    for goal in r["goals"] if name in ("data", "speedup", "curves") else []:
        yield name, goal, goal["met"], None
    for key, ok in r["targets"].items() if name == "scale" else []:  # "scenario: target"
        scenario, goal = key.split(": ", 1)
        yield "scale", {**r["scenarios"][scenario], "scenario": scenario, "goal": goal}, ok, None


def summary(R: dict) -> str:
    rows = []
    for name in NAMES:
        try:  # the rows up to the first that the results cannot give
            for key, x, met, cmd in targets(name, R[name] or {}):
                rows.append((*(f.format_map(x) for f in T["targets"][key]), MET[met], cmd or CMD[name]))
        except FAILURES:
            rows.append((f"`{name}.json`", "not measured", "", MET[None], CMD[name]))
    return table("summary", rows)


def machines(R: dict) -> str:
    fmt = T["tables"]["machines"]["machine"]
    keys = {n: (fmt.format_map(R[n]["machine"]), R[n]["machine"]["date"]) for n in NAMES if R[n]}
    return table("machines", [(", ".join(n for n in keys if keys[n] == k), *k) for k in dict.fromkeys(keys.values())])


def overhead(r: dict) -> str:
    s, t = r["summary"], T["tables"]["overhead"]
    rows = [(p, f"{s[p]['median']:.1f}", f"{s[p]['p95']:.1f}") for p in t["phases"]]
    for key, when in t["downloads"].items():
        rows.append((f"download when the version {when}", f"{s[f'download_median_when_{key}']:.1f}", ""))
    return table("overhead", rows)


def overhead_runs(r: dict) -> str:
    a, s = r.get("accumulated"), {**r["summary"], "seq_len": r["seq_len"]}
    r = {**r, "summary": s, "accumulated": a and {**a, "accumulate": a["batch"] // a["micro_batch"]}}
    runs = []  # each way a run was measured, if it was: its rows in tables.json
    for key, rows in T["tables"]["overhead-runs"]["runs"].items():
        runs += [[f.format_map(r[key]) for f in row] for row in rows] if r.get(key) else []
    return table("overhead-runs", runs)


def quality(r: dict) -> str:
    steps, seq, large = r["batches"] * r["epochs"], r["sequential"], r.get("sequential_large_batch", {})
    rows = []
    for d, b in {"": seq, **r.get("sequential_decayed", {})}.items():
        rows.append({**b, "run": LABEL["decayed"].format(d) if d else LABEL["sequential"], "ratio": 1, "steps": steps})
    for rate, n, b in by_rule(large):
        label = LABEL["large" if n != "1" else "large_1"].format(n, rate)
        rows.append({**b, "run": label, "ratio": b["curve"][-1][1] / seq["curve"][-1][1], "steps": steps // int(n)})
    for x in r["runs"]:
        vs = f"{x['ratio_to_large_batch']:.3f}" if "ratio_to_large_batch" in x else ""
        rows.append({**x, "run": how(x), "ratio": x["final_ratio"], "steps": x["versions"], "large": vs, "why": why(x)})
    columns = {k: v for k, v in T["tables"]["quality"]["columns"].items() if large or v != "{large}"}
    return cols([{"why": "", "large": "", **x, "loss": x["curve"][-1][1]} for x in rows], columns)


def quality_stages(R: dict) -> str:
    rows = []  # each start: each crowd's best H = 32 ratio, and the share of the best sequential run's fall it made
    for r in filter(None, (R[name] for name in QUALITY)):
        best = r["runs"][0]["curve"][-1][1] / r["runs"][0]["ratio_to_best"]  # the best sequential run's final loss
        untrained, cells = r["sequential"]["curve"][0][1] / best, []  # the ratio of a run that learned nothing
        for x in (best_h32(r, n) for n in (4, 16)):
            made = (untrained - x["ratio_to_best"]) / (untrained - 1) if x else 0
            cells += [f"{x['ratio_to_best']:.3f}", f"{made:.0%}"] if x else ["not measured", ""]
        rows.append((start(r), f"{r['sequential']['curve'][0][1] - best:.3f}", f"{untrained:.3f}", *cells))
    return table("quality-stages", rows)


def fold_levels(r: dict) -> str:
    t, levels = T["tables"]["fold-levels"], r["levels"]
    rows = [x | {"level": k, "each": x["messages"] / x["invocations"]} for k, x in levels["levels"].items()]
    return cols(rows, t["columns"], 1, [[f.format_map(levels) for f in t["job"]]])


def scale(r: dict, scenario: str) -> str:
    """One scale scenario: each resource's limit (volunteers), then its demand as a share of its quota."""
    s, cell = r["scenarios"][scenario], lambda x: f"{x['utilization']:.0%}" + "*" * (x["throttled"] > 1e-3)
    limits = sorted(s["volunteers_at_limit"].items(), key=lambda kv: kv[1])
    rows = [[r["quotas"][k]["name"], f"{v:,.0f}", *(cell(s["runs"][n][k]) for n in T["crowds"])] for k, v in limits]
    return md(T["tables"]["scale"]["header"], rows)


def requests(r: dict) -> str:
    light = r["measured_light"]["calls_per_task"]
    rows = [(k, f"{n:.2f}", f"{light.get(k, 0):.2f}") for k, n in r["measured"]["calls_per_task"].items()]
    return table("requests", rows + [(T["tables"]["requests"]["total"], f"**{r['calls_per_task_total']:.2f}**", "")])


def dollars(r: dict) -> str:
    t = T["tables"]["dollars"]
    services = {s: t["service"].format(s) for s in r["rows"][0]["dollars_per_million_samples"]}
    return cols(r["rows"], t["columns"] | services | t["total"], t["left"])


def poison(kind: str, r: dict) -> str:
    rows = [(rule, k, *(f"{a:.2f}" for a in row)) for rule, k, row in by_rule(r["attacks"][kind])]
    return table(f"poison-{kind}", rows, [T["tables"]["poison-flip"]["share"].format(s) for s in r["shares"]])


def poison_tail(r: dict) -> str:
    epochs = [T["tables"]["poison-tail"]["epoch"].format(n) for n in (r["tasks"] + 1, r["tasks"])]
    rows = [(rule, k, f"{t['tasks % K == 1']:.3f}", f"{t['tasks % K == 0']:.3f}") for rule, k, t in by_rule(r["tail"])]
    return table("poison-tail", rows, epochs)


def poison_capped(r: dict) -> str:
    rows = [(rule, k, max(1, int(r["max_share"] * int(k))), f"{a:.3f}") for rule, k, a in by_rule(r["capped"])]
    return table("poison-capped", rows)


def poison_replication(r: dict) -> str:
    t = T["tables"]["poison-replication"]
    groups = itertools.groupby(r["replication"], lambda x: (x["policy"], x["attack"]))
    rows = [(*key, *(t["cell"].format_map(c) for c in cells)) for key, cells in groups]
    return table("poison-replication", rows, [t["share"].format(s) for s in r["shares"]])


TABLES = {  # a marker's name: what makes its table from its results (tables.json's "needs"; none: all of them)
    "summary": summary,
    "machines": machines,
    "overhead": overhead,
    "overhead-runs": overhead_runs,
    "scaling": lambda r: table("scaling", [{**x, "case": c["case"]} for c in r["cases"] for x in c["rows"]]),
    "wasted": lambda r: table("wasted", [x | {"rate": x["folded"] / x["seconds"], "why": why(x)} for x in r["rows"]]),
    "fold-levels": fold_levels,
    **{f"scale-{n}": (lambda r, s=s: scale(r, s)) for n, s in T["tables"]["scale"]["scenarios"].items()},
    "fold-tally": lambda r: table("fold-tally", [r["levels"]["tally"]]),
    "requests": requests,
    "dollars": dollars,
    **{name: (lambda r, name=name, t=t: table(name, r[t["rows"]])) for name, t in T["tables"].items() if "rows" in t},
    **{name.replace("_", "-"): quality for name in QUALITY},
    "quality-stages": quality_stages,
    "poison-flip": lambda r: poison("flip", r),
    "poison-noise": lambda r: poison("noise", r),
    "poison-tail": poison_tail,
    "poison-capped": poison_capped,
    "poison-replication": poison_replication,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=common.RESULTS)
    p.add_argument("--out", type=Path, default=DOC)
    args = p.parse_args()
    R = {n: json.loads(f.read_text()) if (f := args.results / f"{n}.json").exists() else None for n in NAMES}

    def fill(name: str) -> str:
        needs = [n] if (n := T["tables"].get(name, T["tables"]["scale"]).get("needs")) else []
        missing = [n for n in needs if not R[n]]
        try:
            if not missing:
                return TABLES[name](*(R[n] for n in needs)) if needs else TABLES[name](R)
        except FAILURES as e:  # results from an older or --quick run, without what this table shows
            print(f"table {name}: {type(e).__name__} {e}", file=sys.stderr)
            missing = list(needs or QUALITY)
        return LABEL["not_measured"].format(", ".join(CMD[n] for n in missing))

    draw(R, args.out.parent / "benchmarks", T, how)
    pages = {out: (out if out.exists() else doc).read_text() for out, doc in pages_beside(args.out)}
    for name in sorted({m[2] for text in pages.values() for m in MARKER.finditer(text)} ^ set(TABLES)):
        print(f"table {name}: a marker without a table, or a table without a marker", file=sys.stderr)
    for out, text in pages.items():  # the hand-written pages whose tables are filled in
        out.write_text(MARKER.sub(lambda m: m[1] + fill(m[2]) + "\n" + m[3] if m[2] in TABLES else m[0], text))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
