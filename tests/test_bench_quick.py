"""Every benchmark script runs (its --quick smoke mode) and the report builds
from what they write. The figures themselves live in docs/benchmarks.md."""

import json
import shutil
import subprocess
import sys

import pytest

from crowdtrain.paths import ROOT

# two files, so that make test's two workers share them: these, and the crowds' in test_bench_quick_crowds.py
# make soak's: overhead (three local stacks and a browser, about a minute: the page's micro-batches
# and preset rounds it runs are checked in make test by the trainer's and rounds' own tests) and
# curves (a browser on each text template)
SCRIPTS = ["fold", "fold_throughput", "cost", "scale", "poison", "data"] + [
    pytest.param(name, marks=pytest.mark.soak) for name in ("overhead", "curves")
]
# results files another script's option writes (stage 2 starts where stage 1's sequential run, cached, ends)
ARGS = {"quality_warm": ["quality", "--warm-start"], "quality_warm2": ["quality", "--warm-start", "2"]}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_runs_quick(results, name):
    run_quick(results, name)


def run_quick(results, name: str) -> None:
    """bench.NAME --quick runs, writes its results and states its target."""
    if name in ("overhead", "curves") and not shutil.which("/usr/bin/chromium"):
        pytest.skip("needs Debian's chromium")
    out = results / f"{name}.json"
    module, *options = ARGS.get(name, [name])
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *options, "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["quick"] is True and data["machine"]["cores"] >= 1
    assert "target" in proc.stdout  # every script states its target and whether it was met
    if module == "quality":  # Node volunteers running the page's loop wait out a synchronous round: nothing is stale
        rounds = [r for r in data["runs"] if r["synchronous"]]
        assert [(r["versions"], r["staleness"], r["discarded"]) for r in rounds] == [(2, 0, {})]


def test_report_builds_from_the_results(results, tmp_path):
    out = tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.report", "--results", str(results), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    for heading in (
        "Task overhead",
        "Scaling",
        "Wasted work",
        "Fold capacity",
        "Fold throughput",
        "dollars",
        "Learning quality",
        "From a trained model",
        "From a model trained further",
        "JSDoop",
        "Poisoning",
    ):
        assert heading in text
    assert (tmp_path / "benchmarks" / "scaling.png").stat().st_size > 1000
