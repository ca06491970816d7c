"""Fixtures: AWS resources in moto's in-process mock, and the Chalice app's test client."""
from __future__ import annotations

import os

import boto3
import pytest
from moto import mock_aws

from tests.harness import Harness

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


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
        names = Harness.create_resources(boto3.Session(region_name="us-east-1"))
        for key, value in names.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("ADMIN_TOKEN", "test-admin-token")
        monkeypatch.setenv("LEASE_WAIT_SECONDS", "0")
        yield names


@pytest.fixture
def harness(aws):
    with Harness() as h:
        yield h
