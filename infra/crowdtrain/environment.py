"""The Lambdas' environment from a stack's outputs: the one mapping, used by
`crowdtrain deploy` (written into .chalice/config.json) and by the local
cloud (set in its own process)."""

from __future__ import annotations


def app_environment(
    outputs: dict[str, str], public_base_url: str, cors_origin: str, admin_token: str = ""
) -> dict[str, str]:
    """What chalicelib/domain/config.py reads, for the stack whose outputs these are."""
    env = {
        "TABLE_NAME": outputs["TableName"],
        "BUCKET_NAME": outputs["BucketName"],
        "TASK_QUEUE_URL": outputs["TaskQueueUrl"],
        "RESULTS_QUEUE_URL": outputs["ResultsQueueUrl"],
        "RESULTS_QUEUE_NAME": outputs["ResultsQueueName"],
        "PUBLISH_QUEUE_URL": outputs["PublishQueueUrl"],
        "PUBLISH_QUEUE_NAME": outputs["PublishQueueName"],
        "LEASE_SECRET_ID": outputs["LeaseSecretId"],
        "TASK_DLQ_URL": outputs["TaskDeadLettersUrl"],
        "RESULTS_DLQ_URL": outputs["ResultDeadLettersUrl"],
        "PUBLIC_BASE_URL": public_base_url,
        "CORS_ORIGIN": cors_origin,
    }
    if admin_token:
        env["ADMIN_TOKEN"] = admin_token
    return env
