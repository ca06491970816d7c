"""Runs tests/mutants.py: each listed guard removed in turn must fail its tests."""

import subprocess
import sys

import pytest

from crowdtrain.paths import ROOT


@pytest.mark.soak  # every guard's own tests run in make test; this removes each guard in turn (minutes)
def test_every_listed_guard_has_a_test_that_fails_without_it():
    proc = subprocess.run(
        [sys.executable, "-m", "tests.mutants"], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "guards are caught by their tests" in proc.stdout


def test_every_listed_guard_is_in_its_file_exactly_once():
    """The sweep runs in make soak; make test at least checks that the list has not gone stale
    (a moved or reworded guard makes the sweep stop)."""
    from tests.mutants import MUTANTS

    stale = [m.name for m in MUTANTS if (ROOT / m.path).read_text().count(m.before) != 1]
    assert not stale, f"update tests/mutants.py: {stale}"
