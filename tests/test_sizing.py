"""`crowdtrain deploy --volunteers N` (infra/crowdtrain/aws/sizing.py): what
N volunteers need, from measured per-task figures, and the account quotas it
is checked against."""

from __future__ import annotations

import json
import re

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.domain.schema import parse_job
from crowdtrain.aws import sizing
from crowdtrain.aws.sizing import AccountQuotas, Sizing
from crowdtrain.paths import ROOT
from tests.harness import Dataset, job_body

RESULTS = ROOT / "bench" / "results"


def test_the_per_task_figures_are_the_measured_ones():
    measured = json.loads((RESULTS / "fold_throughput.json").read_text())
    one_group = next(r for r in measured["rows"] if r["results_per_invocation"] == 10)
    assert sizing.GROUP_RESULTS_PER_SECOND <= one_group["aws_results_per_second"] < sizing.GROUP_RESULTS_PER_SECOND + 1
    result_group = measured["levels"]["levels"]["result group"]["aws_results_per_second"]
    assert sizing.RESULT_GROUP_RESULTS_PER_SECOND <= result_group < sizing.RESULT_GROUP_RESULTS_PER_SECOND + 1
    page = (ROOT / "frontend" / "src" / "volunteer.js").read_text()
    assert int(re.search(r"CREDIT_EVERY_MS = (\d+)", page).group(1)) == sizing.CREDIT_POLL_SECONDS * 1000
    # the scale model counts the same requests a deploy is sized for: a lease, a completion, the credit polls
    scale = json.loads((RESULTS / "scale.json").read_text())["scenarios"]["paper model"]
    task_seconds = scale["step_seconds"] + json.loads((RESULTS / "scale.json").read_text())["overhead_seconds"]
    expected = sizing.API_REQUESTS_PER_TASK + task_seconds / sizing.CREDIT_POLL_SECONDS
    assert scale["demand_per_task"]["api"] == pytest.approx(expected)


def test_ten_thousand_volunteers_on_the_paper_model():
    s = Sizing.for_crowd(10_000, 15)
    # 667 tasks/s: 1,333 leases and completions and 667 credit polls a second, with half again of headroom
    assert (s.rate, s.burst) == (3_000, 3_000)
    # 1,000 results/s to fold: 9 result groups of 114, a middle group, the top level, the tally, 4 for other jobs
    assert (s.fold_groups, s.fold_concurrency, s.api_concurrency) == (9, 16, 110)
    small = Sizing.for_crowd(100, 15)
    assert (small.rate, small.fold_groups, small.fold_concurrency) == (100, 1, 7)  # the floor: 100 requests/s


def quotas(concurrency: int, rate: float, burst: int) -> AccountQuotas:
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    q = AccountQuotas(session)
    for client, operation, reply in (
        (q._lambda, "get_account_settings", {"AccountLimit": {"ConcurrentExecutions": concurrency}}),
        (q._apigateway, "get_account", {"throttleSettings": {"rateLimit": rate, "burstLimit": burst}}),
    ):
        stub = Stubber(client)
        stub.add_response(operation, reply)
        stub.activate()
    return q


def test_the_quotas_are_read_from_the_account_and_each_shortfall_named():
    s = Sizing.for_crowd(10_000, 15)
    assert quotas(1_000, 10_000, 5_000).shortfalls(s) == []  # AWS's defaults hold 10,000 volunteers
    assert quotas(1_000, 10_000, 2_000).shortfalls(s) == [
        sizing.Shortfall(
            "API Gateway's account burst",
            2_000,
            3_000,
            "AWS sets it from the throttle rate: raise that (Service Quotas, Amazon API Gateway, L-8A5B8E43)",
        )
    ]
    [short] = quotas(200, 10_000, 10_000).shortfalls(s)  # the fold's 16, the API's 110, and 100 left unreserved
    assert (short.quota, short.has, short.needs) == ("Lambda concurrent executions", 200, 226)
    assert short.line(10_000).startswith("10,000 volunteers need Lambda concurrent executions of 226")


@pytest.mark.parametrize(
    "aggregation, replication, expected", [("mean", None, 9), ("median", None, 1), ("mean", {"copies": 2}, 1)]
)
def test_the_deploys_fold_groups_apply_to_jobs_that_can_be_folded_in_parts(aggregation, replication, expected):
    body = job_body(Dataset.generate(batches=10, batch_size=4), gradients_per_update=5, aggregation=aggregation)
    if replication:
        body["replication"] = replication
    assert parse_job(body, 10**6, 10**6, default_fold_groups=9).fold_groups == expected
    assert parse_job({**body, "fold_groups": 1}, 10**6, 10**6, default_fold_groups=9).fold_groups == 1  # named: kept
