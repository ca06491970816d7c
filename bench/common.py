"""Shared plumbing for the benchmarks: argument parsing, machine description,
results written as JSON under bench/results/ (docs/benchmarks.md is made from
them by bench/report.py)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from crowdtrain.paths import ROOT

RESULTS = ROOT / "bench" / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a small smoke run (CI): proves the script works")
    p.add_argument("--out", type=Path, default=None, help="where to write the JSON results")
    return p


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    chromium = (
        subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True).stdout.strip()
        if Path("/usr/bin/chromium").exists()
        else "absent"
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        "chromium": chromium.splitlines()[-1] if chromium else "absent",
        "date": time.strftime("%Y-%m-%d"),
    }


def results_path(name: str, args: argparse.Namespace) -> Path:
    """Where a script's results go: --out, or bench/results/NAME.json (NAME-quick.json for --quick)."""
    return args.out or (RESULTS / f"{name}{'-quick' if args.quick else ''}.json")


def save(name: str, results: dict[str, Any], args: argparse.Namespace) -> Path:
    """Write results, with the machine they ran on."""
    path = results_path(name, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), "quick": args.quick, **results}, indent=1))
    print(f"wrote {path}")
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
