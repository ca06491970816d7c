"""The plots of docs/benchmarks.md, drawn from bench/results/*.json (bench/report.py fills its tables)."""

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def draw(R: dict, docs: Path, T: dict, how: Callable[[dict], str]) -> None:
    """The scaling curves and each quality run's loss curve, from the results `R`; wording from tables.json `T`."""
    QUALITY, LABEL = T["quality"], T["labels"]
    cases, F = (R["scaling"] or {}).get("cases", []), T["figures"]
    series = [(c["case"], [(x["volunteers"], 100 * x["efficiency"]) for x in c["rows"]]) for c in cases]
    title = F["scaling"][0] + ": not measured" * (not cases)
    figures = [("scaling", title, *F["scaling"][1:], series + [(LABEL["scaling_target"], [(1, 95), (32, 95)])])]
    for name in QUALITY:
        curves = {LABEL["plot_sequential"]: (r := R[name] or {}).get("sequential", {}).get("curve")}
        curves |= {LABEL["plot_decayed"].format(d): b["curve"] for d, b in r.get("sequential_decayed", {}).items()}
        runs = [*curves.items(), *((how(x), x["curve"]) for x in r["runs"] if x["final_ratio"] < 2)] if r else []
        figures += [(name, *F[name], runs)] if r else []
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
