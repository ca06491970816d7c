"""The benchmarks that run crowds of volunteers on the local stack run (their
--quick smoke mode): the other half of tests/test_bench_quick.py, in a file of
its own so that make test's two workers share them."""

import pytest

from tests.test_bench_quick import run_quick

SCRIPTS = ["scaling", "wasted", "quality", "quality_warm", "quality_warm2", "speedup"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.mark.parametrize("name", SCRIPTS)
def test_crowd_benchmark_runs_quick(results, name):
    run_quick(results, name)
