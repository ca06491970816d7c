"""The Lambdas' IAM policies for one stage, one per function, from its
stack's outputs: every resource pinned to the stack's own account, region and
names (no wildcard account or region; each Lambda logs only to its own log
group). `crowdtrain deploy` writes them to .chalice/policy-<stage>-<function>.json
before `chalice deploy`; the committed files are the same documents for a
placeholder account (tests/test_deploy.py keeps them equal and checks the
actions against the boto3 calls chalicelib makes; tests/test_iam_roles.py
checks each function's calls against its own policy)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from chalicelib.domain.keys import INDEX_KEY

# What the committed .chalice/policy-<stage>-<function>.json files are generated for: a
# placeholder account (cfn-lint checks that an ARN's account is 12 digits) in
# .chalice/config.json's placeholder region, until `crowdtrain deploy` writes the stack's.
PLACEHOLDER = {"Partition": "aws", "Region": "us-east-1", "AccountId": "000000000000"}


def queue_name(url: str) -> str:
    return urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]


# Each job's own task queue: the stage queue's name, "-j-" and the job id's 12 hex digits (jobs/admin.py),
# so that no other stage's queues ("<stage>-tasks-j-x...") match.
JOB_QUEUES = "-j-" + "?" * 12

# Chalice's Lambdas and what each may touch (chalicelib's code paths, observed in tests/test_iam_roles.py):
# the API (public and admin routes), the fold fed by the results queue, the scheduled redrive, and the
# status documents' trailing writes fed by the publish queue.
FUNCTIONS = ("api_handler", "fold", "redrive_dead_letters", "publish_status")
TABLE_READS = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"]
TABLE_WRITES = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]


def log_group(stage: str, function: str) -> str:
    """Chalice names the API's Lambda crowdtrain-<stage>, the others crowdtrain-<stage>-<function>."""
    return f"/aws/lambda/crowdtrain-{stage}" + ("" if function == "api_handler" else f"-{function}")


def function_policies(stage: str, outputs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each Lambda's own policy: the API signs leases and upload forms and
    may hand out, complete, release and redrive tasks, but cannot read the
    results queue; the fold reads the results queue, writes versions and
    queues tasks, but cannot create a job (list it, or write its data), read
    the lease secret or the dead letters, or list the bucket; the redrive only moves dead letters back to
    their queues, or quarantines them in their job's items."""
    part, region, account = outputs["Partition"], outputs["Region"], outputs["AccountId"]

    def arn(service: str, resource: str) -> str:
        return f"arn:{part}:{service}:{region}:{account}:{resource}"

    def sqs(output: str) -> str:
        return arn("sqs", queue_name(outputs[output]))

    def statement(sid: str, actions: list[str], resource: str | list[str]) -> dict[str, Any]:
        return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resource}

    def logs(function: str) -> list[dict[str, Any]]:
        group = arn("logs", f"log-group:{log_group(stage, function)}")
        return [
            statement("LogGroup", ["logs:CreateLogGroup"], group),
            statement("LogStreams", ["logs:CreateLogStream", "logs:PutLogEvents"], f"{group}:log-stream:*"),
        ]

    table = arn("dynamodb", f"table/{outputs['TableName']}")
    bucket = f"arn:{part}:s3:::{outputs['BucketName']}"
    objects = [f"{bucket}/jobs/*", f"{bucket}/grads/*"]
    dead_letters = [sqs("TaskDeadLettersUrl"), sqs("ResultDeadLettersUrl")]
    # the stage's queue (held-out checks) and each job's own, named after it (store/queues.py)
    tasks = [sqs("TaskQueueUrl"), sqs("TaskQueueUrl") + JOB_QUEUES]
    send_back = statement("SendBack", ["sqs:SendMessage"], [*tasks, sqs("ResultsQueueUrl")])
    statements = {
        "api_handler": [
            statement("Table", TABLE_READS + TABLE_WRITES, table),
            statement("Objects", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], objects),
            statement("ListJobFiles", ["s3:ListBucket"], bucket),
            statement(
                "Tasks",
                [
                    "sqs:SendMessage",
                    "sqs:ReceiveMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",  # a job's admin status: the tasks waiting and in flight
                ],
                tasks,
            ),
            # a job's queue is created when it starts (with the stage queue's settings) and deleted with it
            statement(
                "JobQueues", ["sqs:GetQueueUrl", "sqs:CreateQueue", "sqs:DeleteQueue"], sqs("TaskQueueUrl") + JOB_QUEUES
            ),
            statement("Results", ["sqs:SendMessage"], sqs("ResultsQueueUrl")),
            statement("DeadLetters", ["sqs:ReceiveMessage", "sqs:DeleteMessage"], dead_letters),
            statement("LeaseSecret", ["secretsmanager:GetSecretValue"], outputs["LeaseSecretId"]),
        ],
        "fold": [
            statement("Table", TABLE_READS, table),
            # a job's own items only: the fold cannot list a job in the JOBS index (pk JOBS) or touch a
            # volunteer's slots (VOLUNTEER#...). Every write names its partition key, so the
            # ForAllValues test never meets an empty set (which it would pass).
            {
                **statement("JobItems", ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"], table),
                "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["JOB#*"]}},
            },
            statement("Objects", ["s3:GetObject"], objects),
            # what a fold writes: versions, the status documents, partial sums; never a job's
            # initial weights or data, so it cannot make a job volunteers could train
            statement(
                "Writes",
                ["s3:PutObject"],
                [
                    f"{bucket}/jobs/*/versions/*",
                    f"{bucket}/jobs/*/status.json",
                    f"{bucket}/{INDEX_KEY}",
                    f"{bucket}/grads/*/sums/*",
                ],
            ),
            statement("Tasks", ["sqs:SendMessage"], tasks),
            # a status document it skipped (one was written seconds before), sent on to be written when due
            statement("Publish", ["sqs:SendMessage"], sqs("PublishQueueUrl")),
            # its own queue: read by Lambda's event source mapping with this role, and partial sums sent on
            statement(
                "Results",
                ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                sqs("ResultsQueueUrl"),
            ),
        ],
        "publish_status": [
            statement("Table", TABLE_READS, table),
            statement("Writes", ["s3:PutObject"], f"{bucket}/jobs/*/status.json"),
            # its own queue, read by Lambda's event source mapping with this role
            statement(
                "Publish",
                ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                sqs("PublishQueueUrl"),
            ),
        ],
        "redrive_dead_letters": [
            statement("DeadLetters", ["sqs:ReceiveMessage", "sqs:DeleteMessage"], dead_letters),
            send_back,
            # a message redriven too often is quarantined in its job's partition (tasks/redrive.py)
            {
                **statement("Quarantine", ["dynamodb:PutItem"], table),
                "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["JOB#*"]}},
            },
        ],
    }
    return {f: {"Version": "2012-10-17", "Statement": logs(f) + statements[f]} for f in FUNCTIONS}


def policy_file(stage: str, function: str) -> str:
    return f"policy-{stage}-{function}.json"


def placeholder_outputs(stage: str) -> dict[str, str]:
    """The outputs a stage's stack would have, with PLACEHOLDER's account and region."""
    region, account = PLACEHOLDER["Region"], PLACEHOLDER["AccountId"]
    queue = f"https://sqs.{region}.amazonaws.com/{account}/crowdtrain-{stage}"
    return {
        **PLACEHOLDER,
        "TableName": f"crowdtrain-{stage}",
        "BucketName": f"crowdtrain-{stage}-data-{account}",
        "TaskQueueUrl": f"{queue}-tasks",
        "ResultsQueueUrl": f"{queue}-results.fifo",
        "PublishQueueUrl": f"{queue}-publish",
        "TaskDeadLettersUrl": f"{queue}-tasks-dlq",
        "ResultDeadLettersUrl": f"{queue}-results-dlq.fifo",
        "LeaseSecretId": f"arn:aws:secretsmanager:{region}:{account}:secret:crowdtrain-{stage}-lease-secret-*",
    }
