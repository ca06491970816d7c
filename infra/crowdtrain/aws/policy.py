"""The Lambdas' IAM policy for one stage, from its stack's outputs: every
resource pinned to the stack's own account, region and names (no wildcard
account or region; logs only the app's own log groups). `crowdtrain deploy`
writes it to .chalice/policy-<stage>.json before `chalice deploy`; the
committed files are the same document for a placeholder account and region
(tests/test_deploy.py keeps them equal and checks the actions against the
boto3 calls chalicelib makes)."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

# What the committed .chalice/policy-<stage>.json files are generated for: a
# placeholder account (cfn-lint checks that an ARN's account is 12 digits) in
# .chalice/config.json's placeholder region, until `crowdtrain deploy` writes the stack's.
PLACEHOLDER = {"Partition": "aws", "Region": "us-east-1", "AccountId": "000000000000"}


def queue_name(url: str) -> str:
    return urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]


def stage_policy(stage: str, outputs: dict[str, str]) -> dict[str, Any]:
    part, region, account = outputs["Partition"], outputs["Region"], outputs["AccountId"]

    def arn(service: str, resource: str) -> str:
        return f"arn:{part}:{service}:{region}:{account}:{resource}"

    def sqs(output: str) -> str:
        return arn("sqs", queue_name(outputs[output]))

    bucket = f"arn:{part}:s3:::{outputs['BucketName']}"
    # Chalice names the Lambdas crowdtrain-<stage> (the API) and crowdtrain-<stage>-<function>.
    groups = [arn("logs", f"log-group:/aws/lambda/crowdtrain-{stage}"),
              arn("logs", f"log-group:/aws/lambda/crowdtrain-{stage}-*")]

    def statement(sid: str, actions: list[str], resource: str | list[str]) -> dict[str, Any]:
        return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resource}

    return {"Version": "2012-10-17", "Statement": [
        statement("LogGroups", ["logs:CreateLogGroup"], groups),
        statement("LogStreams", ["logs:CreateLogStream", "logs:PutLogEvents"], [f"{g}:log-stream:*" for g in groups]),
        statement("Table", ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                            "dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:BatchWriteItem"],
                  arn("dynamodb", f"table/{outputs['TableName']}")),
        statement("Objects", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], [f"{bucket}/jobs/*", f"{bucket}/grads/*"]),
        statement("ListJobFiles", ["s3:ListBucket"], bucket),
        statement("Tasks", ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:DeleteMessage"],
                  sqs("TaskQueueUrl")),
        statement("Results", ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                  sqs("ResultsQueueUrl")),
        statement("DeadLetters", ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                  [sqs("TaskDeadLettersUrl"), sqs("ResultDeadLettersUrl")]),
        statement("LeaseSecret", ["secretsmanager:GetSecretValue"], outputs["LeaseSecretId"]),
    ]}


def placeholder_outputs(stage: str) -> dict[str, str]:
    """The outputs a stage's stack would have, with PLACEHOLDER's account and region."""
    region, account = PLACEHOLDER["Region"], PLACEHOLDER["AccountId"]
    queue = f"https://sqs.{region}.amazonaws.com/{account}/crowdtrain-{stage}"
    return {**PLACEHOLDER, "TableName": f"crowdtrain-{stage}", "BucketName": f"crowdtrain-{stage}-data-{account}",
            "TaskQueueUrl": f"{queue}-tasks", "ResultsQueueUrl": f"{queue}-results.fifo",
            "TaskDeadLettersUrl": f"{queue}-tasks-dlq", "ResultDeadLettersUrl": f"{queue}-results-dlq.fifo",
            "LeaseSecretId": f"arn:aws:secretsmanager:{region}:{account}:secret:crowdtrain-{stage}-lease-secret-*"}
