"""Fixtures: AWS resources in moto's in-process mock, and the Chalice app's test client."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from collections import Counter
from operator import attrgetter
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from chalicelib import services as services_module
from crowdtrain.local.shared_clients import serialize_condition_building
from tests.harness import Harness

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# tests that race threads share the app's clients, as the local cloud does: before any client is made
serialize_condition_building()


@pytest.fixture
def moto_session(monkeypatch):
    """moto's in-process AWS with fake credentials, and a boto3 session on it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.Session(region_name="us-east-1")


@pytest.fixture
def aws(monkeypatch):
    """Fresh moto-backed bucket, table, queues and secret, with the app's environment pointing at them."""
    for key in ("AWS_ENDPOINT_URL",):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield _app_environment(monkeypatch, Harness.create_resources(boto3.Session(region_name="us-east-1")))


def _app_environment(monkeypatch, names: dict[str, str]) -> dict[str, str]:
    """The app's environment, pointing at the resources `names` gives."""
    for key, value in names.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ADMIN_TOKEN", "test-admin-token")
    monkeypatch.setenv("LEASE_WAIT_SECONDS", "0")
    # every test volunteer calls from the same address: its limits are tested on their own
    monkeypatch.setenv("MAX_LEASES_PER_ADDRESS", "1000")
    monkeypatch.setenv("RELEASES_PER_ADDRESS", "100000")
    monkeypatch.setenv("VOLUNTEERS_PER_ADDRESS_PER_HOUR", "100000")
    monkeypatch.setenv("DISTINCT_ADDRESSES", "0")
    monkeypatch.setenv("CREDIT_TALLY_SECONDS", "0")  # credit is tallied after every version
    return names


@pytest.fixture
def moto_server(tmp_path):
    """moto's server in a process of its own (tests/moto_gaps.py's gaps filled): its URL.
    Unlike the in-process mock, requests from threads are served concurrently."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "moto-server.log"
    server = subprocess.Popen(
        [sys.executable, "-c", f"from tests.moto_gaps import serve; serve({port})"],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == "ready", log.read_text()[-2000:]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def harness(aws):
    with Harness() as h:
        yield h


@pytest.fixture
def server_harness(moto_server, monkeypatch):
    """The harness with every AWS call, from any thread, going to moto's server over HTTP."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    _app_environment(monkeypatch, Harness.create_resources(boto3.Session(region_name="us-east-1")))
    with Harness() as h:
        yield h


class Crash(Exception):
    """An injected crash: the Lambda dying between two of its writes."""


class CrashPoints:
    """Makes the app's parts die at named points, through their public methods
    on the live `services()` instances (`part` may be dotted: "fold.committer";
    no private code is patched). A rate
    below 1 draws from `rng` each time the point is passed, and a point passed
    SURE_BY times without a crash crashes then, so a long run hits every point
    however its threads interleave the draws; `counts` records every crash by
    point."""

    SURE_BY = 40

    def __init__(self):
        self.monkeypatch, self.rng, self.counts = pytest.MonkeyPatch(), random.Random(0), Counter()
        self.passes = Counter()

    def draw(self, point: str, rate: float) -> bool:
        """Whether to crash at `point` now (counted), for a point no part's method stands for."""
        self.passes[point] += 1
        never = self.counts[f"crash: {point}"] == 0 and self.passes[point] >= self.SURE_BY
        if rate >= 1 or self.rng.random() < rate or never:
            self.counts[f"crash: {point}"] += 1
            return True
        return False

    def _maybe(self, point: str, rate: float) -> None:
        if self.draw(point, rate):
            raise Crash(point)

    def before(self, part: str, method: str, point: str, rate: float = 1.0) -> None:
        target = attrgetter(part)(services_module.services())
        real = getattr(target, method)

        def wrapper(*args, **kwargs):
            self._maybe(point, rate)
            return real(*args, **kwargs)

        self.monkeypatch.setattr(target, method, wrapper)

    def after(self, part: str, method: str, point: str, rate: float = 1.0) -> None:
        target = attrgetter(part)(services_module.services())
        real = getattr(target, method)

        def wrapper(*args, **kwargs):
            out = real(*args, **kwargs)
            self._maybe(point, rate)
            return out

        self.monkeypatch.setattr(target, method, wrapper)

    def heal(self) -> None:
        """Stop crashing: every part works again (the Lambda's next run)."""
        self.monkeypatch.undo()


@pytest.fixture
def crashes(harness):
    points = CrashPoints()
    yield points
    points.heal()
