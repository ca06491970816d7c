"""The benchmarks that run crowds of volunteers on the local stack run (their
--quick smoke mode): the other half of tests/test_bench_quick.py, in a file of
its own so that make test's two workers share them."""

import pytest

from tests.test_bench_quick import run_quick

# make soak's: quality with --warm-start 2 runs the same code as --warm-start (1) with one more warm
# version; scaling and wasted (35 s each) run crowds of the same Node volunteers as quality and speedup
SCRIPTS = [
    pytest.param("scaling", marks=pytest.mark.soak),
    pytest.param("wasted", marks=pytest.mark.soak),
    "quality",
    "quality_warm",
    pytest.param("quality_warm2", marks=pytest.mark.soak),
    "speedup",
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.mark.parametrize("name", SCRIPTS)
def test_crowd_benchmark_runs_quick(results, name):
    run_quick(results, name)
