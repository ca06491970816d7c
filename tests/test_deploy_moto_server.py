"""`crowdtrain deploy` and `crowdtrain teardown` end to end against moto's
server: the real CLI and the real `chalice deploy`/`delete`, each run from a
fresh copy of the repository, in a region that is not the default. moto's
server fills the gaps listed in tests/moto_gaps.py (CloudFront and the other
types its CloudFormation lacks, Swagger imports)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from crowdtrain.aws.deploy import STATE_PREFIX, Deployer, DeployError
from crowdtrain.aws.sizing import AccountQuotas, Sizing
from crowdtrain.paths import ROOT

REGION, OTHER = "eu-west-1", "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture
def endpoint(moto_server):
    return moto_server


def fresh_clone(dest: Path) -> Path:
    """What a `git clone` of this working tree holds (tracked and new files, nothing ignored:
    no .chalice/deployed, no .crowdtrain), with the installed frontend packages."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / "frontend" / "node_modules").symlink_to(ROOT / "frontend" / "node_modules")
    assert not (dest / ".chalice" / "deployed").exists()
    return dest


def crowdtrain(clone: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess:
    """The clone's own CLI, with only the endpoint pointing at moto (no region in the environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        CREDENTIALS,
        AWS_ENDPOINT_URL=endpoint,
        AWS_CONFIG_FILE=str(clone / "no-aws-config"),
        PYTHONPATH=f"{clone / 'infra'}{os.pathsep}{clone}",
    )
    return subprocess.run(
        [sys.executable, "-m", "crowdtrain.cli", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )


def deploy(clone: Path, endpoint: str, *options: str) -> str:
    proc = crowdtrain(clone, endpoint, "deploy", "--stage", "dev", "--region", REGION, *options)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def client(endpoint: str, service: str, region: str = REGION):
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        **{"aws_access_key_id": "testing", "aws_secret_access_key": "testing"},
    )


def app_resources(endpoint: str, region: str) -> dict[str, list[str]]:
    """What Chalice and the stack made in one region, by kind."""
    lam = client(endpoint, "lambda", region)
    return {
        "stacks": [
            s["StackName"]
            for s in client(endpoint, "cloudformation", region).list_stacks()["StackSummaries"]
            if s["StackStatus"] != "DELETE_COMPLETE"
        ],
        "functions": sorted(f["FunctionName"] for f in lam.list_functions()["Functions"]),
        "event_sources": [m["EventSourceArn"] for m in lam.list_event_source_mappings()["EventSourceMappings"]],
        "rest_apis": [a["id"] for a in client(endpoint, "apigateway", region).get_rest_apis()["items"]],
        "queues": client(endpoint, "sqs", region).list_queues().get("QueueUrls", []),
        "tables": client(endpoint, "dynamodb", region).list_tables()["TableNames"],
        "secrets": [s["Name"] for s in client(endpoint, "secretsmanager", region).list_secrets()["SecretList"]],
        "alarms": [a["AlarmName"] for a in client(endpoint, "cloudwatch", region).describe_alarms()["MetricAlarms"]],
        "rules": [r["Name"] for r in client(endpoint, "events", region).list_rules()["Rules"]],
        "roles": [r["RoleName"] for r in client(endpoint, "iam", region).list_roles()["Roles"]],
    }


def test_deploy_with_a_region_puts_every_resource_in_it(endpoint, tmp_path):
    printed = deploy(fresh_clone(tmp_path / "clone"), endpoint, "--alarm-email", "ops@example.com")
    here, elsewhere = app_resources(endpoint, REGION), app_resources(endpoint, OTHER)
    assert here["stacks"] == ["crowdtrain-dev"]
    assert here["functions"] == [
        "crowdtrain-dev",
        "crowdtrain-dev-fold",
        "crowdtrain-dev-publish_status",
        "crowdtrain-dev-redrive_dead_letters",
    ]
    assert len(here["rest_apis"]) == 1 and len(here["event_sources"]) == 2  # the results and the publish queues
    sqs = client(endpoint, "sqs")
    assert len(here["queues"]) == 5 and all(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"].startswith(
            f"arn:aws:sqs:{REGION}:"
        )
        for url in here["queues"]
    )
    assert here["tables"] == ["crowdtrain-dev"] and here["secrets"] == ["crowdtrain-dev-lease-secret"]
    assert len(here["alarms"]) == 3 and here["rules"] == ["crowdtrain-dev-redrive_dead_letters-event"]
    # every alarm publishes to the stage's topic, which e-mails the address given
    [topic] = [t["TopicArn"] for t in client(endpoint, "sns").list_topics()["Topics"]]
    alarms = client(endpoint, "cloudwatch").describe_alarms()["MetricAlarms"]
    assert topic.endswith(":crowdtrain-dev-alarms") and all(a["AlarmActions"] == [topic] for a in alarms)
    [subscription] = client(endpoint, "sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert (subscription["Protocol"], subscription["Endpoint"]) == ("email", "ops@example.com")
    assert {k: v for k, v in elsewhere.items() if k != "roles"} == {k: [] for k in elsewhere if k != "roles"}
    s3 = client(endpoint, "s3")
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert len(buckets) == 2 and all(s3.get_bucket_location(Bucket=b)["LocationConstraint"] == REGION for b in buckets)
    # the Lambdas are told the region's queues, the API's URL is the region's, the policies name it
    lam = client(endpoint, "lambda")
    env = lam.get_function_configuration(FunctionName="crowdtrain-dev")["Environment"]["Variables"]
    assert all(
        env[name].startswith(f"https://sqs.{REGION}.amazonaws.com/") for name in ("TASK_QUEUE_URL", "RESULTS_QUEUE_URL")
    )
    assert f".execute-api.{REGION}.amazonaws.com/api" in printed
    assert lam.get_function_concurrency(FunctionName="crowdtrain-dev-fold")["ReservedConcurrentExecutions"] > 0
    iam = client(endpoint, "iam")
    for role in here["roles"]:
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            document = str(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
            assert f":{REGION}:" in document and f":{OTHER}:" not in document and ":*:" not in document


def test_two_deploys_from_two_fresh_clones_leave_one_api_and_one_event_source_per_queue(endpoint, tmp_path):
    deploy(fresh_clone(tmp_path / "first"), endpoint)
    first = app_resources(endpoint, REGION)
    printed = deploy(fresh_clone(tmp_path / "second"), endpoint)
    second = app_resources(endpoint, REGION)
    assert len(second["rest_apis"]) == 1 and len(second["event_sources"]) == len(set(second["event_sources"])) == 2
    assert second == first
    assert "restored Chalice's deployed state" in printed


def test_teardown_from_a_fresh_clone_deletes_what_another_clone_deployed_and_keeps_the_data(endpoint, tmp_path):
    deploy(fresh_clone(tmp_path / "first"), endpoint)
    proc = crowdtrain(fresh_clone(tmp_path / "second"), endpoint, "teardown", "--stage", "dev", "--region", REGION)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = app_resources(endpoint, REGION)
    assert left["functions"] == left["rest_apis"] == left["event_sources"] == left["stacks"] == []
    assert left["tables"] == ["crowdtrain-dev"]  # DeletionPolicy Retain
    assert [b["Name"] for b in client(endpoint, "s3").list_buckets()["Buckets"]] == ["crowdtrain-dev-data-123456789012"]
    # a later deploy starts afresh, not from Chalice's state of what was deleted
    assert "Contents" not in client(endpoint, "s3").list_objects_v2(
        Bucket="crowdtrain-dev-data-123456789012", Prefix=STATE_PREFIX
    )


def test_teardown_after_a_failed_step_runs_the_rest_and_exits_non_zero(endpoint, tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    deploy(clone, endpoint)
    client(endpoint, "lambda").delete_function(FunctionName="crowdtrain-dev-fold")  # gone by hand: chalice delete fails
    proc = crowdtrain(clone, endpoint, "teardown", "--stage", "dev", "--region", REGION)
    assert proc.returncode != 0
    assert "chalice delete: FAILED" in proc.stdout and "failed: chalice delete" in proc.stderr
    assert "delete stack crowdtrain-dev: done" in proc.stdout
    assert app_resources(endpoint, REGION)["stacks"] == []


class StubbedQuotas(AccountQuotas):
    """An account's quotas as given (moto's server implements neither Lambda's GetAccountSettings nor
    API Gateway's account throttle settings as an account has them)."""

    def __init__(self, concurrency: int, rate: float = 10_000, burst: int = 5_000):
        self.concurrency, self.rate, self.burst = concurrency, rate, burst

    def lambda_concurrency(self) -> int:
        return self.concurrency

    def api_throttle(self) -> tuple[float, int]:
        return self.rate, self.burst


def test_a_deploy_for_more_volunteers_than_the_quotas_allow_creates_nothing_and_names_the_quota(
    endpoint, tmp_path, monkeypatch
):
    """A new account's Lambda concurrency (10) and API throttle against a
    crowd of 10,000: the deploy stops before the stack, in one line naming
    each quota, what is needed and the Service Quotas request."""
    clone = fresh_clone(tmp_path / "clone")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    said: list[str] = []
    deployer = Deployer(boto3.Session(region_name=REGION), "dev", root=clone, say=said.append)
    sizing = Sizing.for_crowd(10_000, 15)
    with pytest.raises(DeployError) as refused:
        deployer.deploy(None, None, sizing, StubbedQuotas(concurrency=10, rate=1_000))
    [line] = str(refused.value).splitlines()
    assert "Lambda concurrent executions" in line and "L-B99A9384" in line and "this account has 10" in line
    assert "API Gateway's account throttle" in line and "L-8A5B8E43" in line and f"of {sizing.rate:,}" in line
    assert app_resources(endpoint, REGION)["stacks"] == [] and said == []
    assert client(endpoint, "s3").list_buckets()["Buckets"] == []
    # the CLI offers it, and refuses a crowd of none in one line
    assert "--volunteers" in crowdtrain(clone, endpoint, "deploy", "--help").stdout
    refused_cli = crowdtrain(clone, endpoint, "deploy", "--volunteers", "0", "--region", REGION)
    assert refused_cli.returncode == 2 and "--volunteers: must be above 0: '0'" in refused_cli.stderr.strip()
