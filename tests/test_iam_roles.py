"""Each Lambda's IAM policy against what it really calls: every AWS request
the API, the fold and the scheduled redrive make (recorded from boto3 while
a scenario runs through all three: jobs created, leased, heartbeated,
completed, released, folded in one and in two levels, replicated, stale,
paused, redriven, deleted) must be allowed by that function's own policy,
resource by resource; and a policy may hold no action its function was not
seen to use (but the event source's reads of the fold's queue)."""

from __future__ import annotations

import json
import os
from fnmatch import fnmatchcase
from urllib.parse import urlparse

import boto3
import pytest

from chalicelib.tasks.redrive import MAX_REDRIVES
from crowdtrain.aws.policy import FUNCTIONS, function_policies
from tests.harness import Dataset, Harness

REGION, ACCOUNT = "us-east-1", "123456789012"  # moto's
# Actions a function needs that no call of its code makes: Lambda's event source mapping reads the
# fold's queue with the fold's role.
# what Lambda's SQS event source mappings call with the functions' roles
NOT_CALLED = {
    function: {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
    for function in ("fold", "publish_status")
}
BATCHED = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    "HeadObject": "GetObject",
    "ListObjectsV2": "ListBucket",
    "DeleteObjects": "DeleteObject",
}


def _value(attribute):
    """A key attribute as the app wrote it or as boto3's resource layer serialized it."""
    return attribute["S"] if isinstance(attribute, dict) else attribute


def leading_keys(operation: str, params: dict) -> frozenset[str] | None:
    """The partition keys one DynamoDB request names (IAM's dynamodb:LeadingKeys); None where
    the request's key cannot be read here (Query, whose key is in an expression)."""
    if operation == "PutItem":
        return frozenset({_value(params["Item"]["pk"])})
    if operation in ("UpdateItem", "DeleteItem", "GetItem"):
        return frozenset({_value(params["Key"]["pk"])})
    if operation == "BatchWriteItem":
        return frozenset(
            _value(request.get("PutRequest", {}).get("Item", request.get("DeleteRequest", {}).get("Key"))["pk"])
            for requests in params["RequestItems"].values()
            for request in requests
        )
    return None


def requests_of(service: str, operation: str, params: dict) -> list[tuple[str, str, frozenset[str] | None]]:
    """(IAM action, resource ARN, the partition keys it names) for one boto3 request."""
    requests = _actions_of(service, operation, params)
    if service == "dynamodb" and operation == "TransactWriteItems":
        return [
            (action, resource, frozenset({_value((body.get("Item") or body["Key"])["pk"])}))
            for (action, resource), item in zip(requests, params["TransactItems"])
            for body in item.values()
        ]
    keys = leading_keys(operation, params) if service == "dynamodb" else None
    return [(action, resource, keys) for action, resource in requests]


def _actions_of(service: str, operation: str, params: dict) -> list[tuple[str, str]]:
    if service == "sqs":
        name = params.get("QueueName") or urlparse(params["QueueUrl"]).path.rsplit("/", 1)[-1]
        return [(f"sqs:{BATCHED.get(operation, operation)}", f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")]
    if service == "dynamodb":

        def table(name: str) -> str:
            return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"

        if operation == "TransactWriteItems":
            kinds = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "GetItem"}
            return [
                (f"dynamodb:{kinds[kind]}", table(body["TableName"]))
                for item in params["TransactItems"]
                for kind, body in item.items()
            ]
        if operation in ("BatchGetItem", "BatchWriteItem"):
            return [(f"dynamodb:{operation}", table(name)) for name in params["RequestItems"]]
        return [(f"dynamodb:{operation}", table(params["TableName"]))]
    if service == "s3":
        bucket = f"arn:aws:s3:::{params['Bucket']}"
        if operation == "CreateBucket":  # botocore building a presigned POST form: no request is sent
            return []
        if operation == "ListObjectsV2":
            return [("s3:ListBucket", bucket)]
        if operation == "DeleteObjects":
            return [("s3:DeleteObject", f"{bucket}/{o['Key']}") for o in params["Delete"]["Objects"]]
        return [(f"s3:{BATCHED.get(operation, operation)}", f"{bucket}/{params['Key']}")]
    if service == "secretsmanager":
        return [(f"secretsmanager:{operation}", params["SecretId"])]
    raise AssertionError(f"a call the policies do not know: {service} {operation}")


def allows(policy: dict, action: str, resource: str, keys: frozenset[str] | None = None) -> bool:
    def listed(value):
        return [value] if isinstance(value, str) else value

    def holds(condition: dict) -> bool:
        """The one condition the policies use; any other fails the test rather than pass unread."""
        assert set(condition) == {"ForAllValues:StringLike"}, condition
        ((key, patterns),) = condition["ForAllValues:StringLike"].items()
        assert key == "dynamodb:LeadingKeys", key
        return keys is not None and all(any(fnmatchcase(k, p) for p in listed(patterns)) for k in keys)

    return any(
        action in listed(s["Action"])
        and any(fnmatchcase(resource, r) for r in listed(s["Resource"]))
        and holds(s["Condition"])
        if "Condition" in s
        else action in listed(s["Action"]) and any(fnmatchcase(resource, r) for r in listed(s["Resource"]))
        for s in policy["Statement"]
    )


class Recorder:
    """A boto3 hook on every request's parameters (before they are serialized), under the function
    running; it never raises into the app (what it cannot read is kept for the test to report)."""

    def __init__(self):
        self.function: str | None = None
        self.seen: set[tuple[str, str, str]] = set()
        self.unread: list[str] = []

    def __call__(self, model, params, **_):
        if not self.function:
            return
        try:
            for action, resource, keys in requests_of(model.service_model.endpoint_prefix, model.name, params):
                self.seen.add((self.function, action, resource, keys))
        except Exception as err:  # noqa: BLE001 (reported by the test)
            self.unread.append(f"{model.name}: {err!r}")


@pytest.fixture
def recorded(aws):
    """The app's clients are made from boto3's default session, after this hook is on it."""
    boto3.setup_default_session(region_name=REGION)
    recorder = Recorder()
    boto3.DEFAULT_SESSION.events.register("before-parameter-build", recorder)
    with Harness() as harness:
        yield harness, recorder


def scenario(h: Harness, run) -> None:
    api, fold = (lambda step, *a, **k: run("api_handler", step, *a, **k)), (lambda: run("fold", h.deliver))
    # two epochs, two gradients per update, staleness 0: a result leased before the last fold is stale
    job = api(h.create_job, Dataset.generate(batches=4, batch_size=4), gradients_per_update=2, epochs=2, staleness=0)
    first, second = api(h.lease, "a"), api(h.lease, "b")
    api(h.call, "POST", "/tasks/heartbeat", {"job_id": job, "lease_token": first["lease_token"]})
    api(h.work, first)
    api(h.work, second)
    fold()
    late = api(h.lease, "c")
    api(h.call, "POST", "/tasks/release", {"job_id": job, "lease_token": late["lease_token"], "reason": "stopped"})
    while (task := api(h.lease, "d")) is not None:
        api(h.work, task)
        fold()
    # two message groups (partial sums) and replication (a pinned check copy)
    grouped = api(h.create_job, Dataset.generate(batches=4, batch_size=4), fold_groups=2, gradients_per_update=4)
    copied = api(h.create_job, Dataset.generate(batches=1, batch_size=4), replication={"copies": 2})
    for volunteer in ("e", "f", "g", "h", "i", "j"):
        if (task := api(h.lease, volunteer)) is not None:
            api(h.work, task)
        fold()
    fold()
    assert (
        api(
            h.call, "POST", "/volunteers/credit", {"job_id": job, "volunteer_token": h.identity("d")["volunteer_token"]}
        ).status_code
        == 200
    )
    assert api(h.admin, "GET", f"/jobs/{job}/credit").status_code == 200
    assert json.loads(api(h.admin, "GET", f"/jobs/{job}").body)["tasks"]["in_flight"] >= 0  # the queue's counts
    api(h.call, "GET", f"/progress/{grouped}")
    api(h.call, "GET", "/progress")
    api(h.admin, "POST", f"/jobs/{copied}/pause")
    api(h.admin, "POST", f"/jobs/{copied}/resume")
    # dead letters: redriven by the admin route and by the schedule
    for url, body in ((h.task_dlq_url, {"job_id": copied, "epoch": 0, "batch": 0}),):
        h.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    api(h.admin, "POST", f"/jobs/{copied}/redrive")
    h.sqs.send_message(QueueUrl=h.task_dlq_url, MessageBody=json.dumps({"job_id": copied, "epoch": 0, "batch": 0}))
    h.sqs.send_message(
        QueueUrl=h.result_dlq_url,
        MessageBody=json.dumps({"job_id": copied}),
        MessageGroupId=copied,
        MessageDeduplicationId="x",
    )
    # and one redriven too often already: quarantined by the schedule, listed and sent back by the operator
    h.sqs.send_message(
        QueueUrl=h.result_dlq_url,
        MessageBody=json.dumps({"job_id": copied, "poison": True}),
        MessageGroupId=copied,
        MessageDeduplicationId="y",
        MessageAttributes={"redrives": {"DataType": "Number", "StringValue": str(MAX_REDRIVES)}},
    )
    schedule = h.client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    run("redrive_dead_letters", h.client.lambda_.invoke, "redrive_dead_letters", schedule)
    assert len(json.loads(api(h.admin, "GET", f"/jobs/{copied}/quarantine").body)["quarantined"]) == 1
    assert len(json.loads(api(h.admin, "POST", f"/jobs/{copied}/quarantine").body)["retried"]) == 1
    # a status document a fold skipped (the folds above sent theirs, delayed), written by its own Lambda
    due = h.client.events.generate_sqs_event(
        message_bodies=[json.dumps({"job_id": job})], queue_name="crowdtrain-test-publish"
    )
    run("publish_status", h.client.lambda_.invoke, "publish_status", due)
    for j in (job, grouped, copied):
        api(h.admin, "DELETE", f"/jobs/{j}")


def test_each_function_calls_only_what_its_own_policy_allows_and_its_policy_holds_nothing_else(recorded):
    harness, recorder = recorded

    def run(function, step, *args, **kwargs):
        recorder.function = function
        try:
            return step(*args, **kwargs)
        finally:
            recorder.function = None

    scenario(harness, run)
    assert recorder.unread == [], recorder.unread
    outputs = {
        "Partition": "aws",
        "Region": REGION,
        "AccountId": ACCOUNT,
        "TableName": os.environ["TABLE_NAME"],
        "BucketName": os.environ["BUCKET_NAME"],
        "TaskQueueUrl": harness.tasks_url,
        "ResultsQueueUrl": harness.results_url,
        "PublishQueueUrl": harness.sqs.get_queue_url(QueueName="crowdtrain-test-publish")["QueueUrl"],
        "TaskDeadLettersUrl": harness.task_dlq_url,
        "ResultDeadLettersUrl": harness.result_dlq_url,
        "LeaseSecretId": os.environ["LEASE_SECRET_ID"],
    }
    policies = function_policies("test", outputs)
    denied = sorted(seen for seen in recorder.seen if not allows(policies[seen[0]], *seen[1:]))
    assert denied == [], f"calls a function's policy would deny: {denied}"
    for function in FUNCTIONS:
        used = {action for f, action, _, _ in recorder.seen if f == function}
        granted = {a for s in policies[function]["Statement"] for a in s["Action"] if not a.startswith("logs:")}
        assert granted - used - NOT_CALLED.get(function, set()) == set(), f"{function} never used these"
    # what the issue asked for, said outright
    api, fold = policies["api_handler"], policies["fold"]
    results = f"arn:aws:sqs:{REGION}:{ACCOUNT}:crowdtrain-test-results.fifo"
    assert not allows(api, "sqs:ReceiveMessage", results) and not allows(api, "sqs:DeleteMessage", results)
    # the API makes and deletes its jobs' queues only: not the dead-letter queue, not a stage named "test-tasks-j-x"'s
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:crowdtrain-test-tasks"
    assert allows(api, "sqs:DeleteQueue", f"{queue}-j-0123456789ab")
    assert not allows(api, "sqs:DeleteQueue", f"{queue}-dead")  # it only receives from the DLQ, to redrive
    for other in (f"{queue}-j-x-tasks", f"{queue}-j-x-tasks-dlq"):
        assert not allows(api, "sqs:DeleteQueue", other) and not allows(api, "sqs:ReceiveMessage", other), other
    assert not allows(fold, "secretsmanager:GetSecretValue", os.environ["LEASE_SECRET_ID"])
    assert not allows(fold, "s3:DeleteObject", f"arn:aws:s3:::{os.environ['BUCKET_NAME']}/jobs/j-1/versions/x")
    # the fold cannot create a job: not list it, not write its data or initial weights (the API can)
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{os.environ['TABLE_NAME']}"
    for write in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"):
        assert not allows(fold, write, table, frozenset({"JOBS"})) and allows(api, write, table, frozenset({"JOBS"}))
        assert not allows(fold, write, table, frozenset({"VOLUNTEER#v"}))
        assert not allows(fold, write, table, frozenset({"JOB#j-1", "JOBS"}))
    for key in ("jobs/j-new/init/weights.bin", "jobs/j-new/data/batch-000000.bin"):
        resource = f"arn:aws:s3:::{os.environ['BUCKET_NAME']}/{key}"
        assert not allows(fold, "s3:PutObject", resource) and allows(api, "s3:PutObject", resource)
