"""The local stand-in for Lambda's SQS event source mapping."""

import json
import time

import pytest

from crowdtrain.local.dispatcher import QueueDispatcher, sqs_dispatchers


@pytest.fixture
def sqs(moto_session):
    return moto_session.client("sqs")


def queue_with_dlq(sqs, max_receives=2):
    dlq = sqs.create_queue(QueueName="dead")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName="work",
        Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receives)}),
        },
    )["QueueUrl"]
    return url, dlq


def test_delivers_batches_and_deletes_on_success(sqs):
    url, _ = queue_with_dlq(sqs)
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": i}))
    seen = []

    def handler(event, context):
        assert context.function_name == "fold"
        seen.append([json.loads(r["body"])["n"] for r in event["Records"]])
        assert all(r["eventSource"] == "aws:sqs" and r["eventSourceARN"].endswith(":work") for r in event["Records"])

    dispatcher = QueueDispatcher(sqs, url, handler, batch_size=3, name="fold", wait_seconds=0)
    while dispatcher.poll_once():
        pass
    assert sorted(n for batch in seen for n in batch) == list(range(5))
    assert max(len(batch) for batch in seen) <= 3
    assert "Messages" not in sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)


def test_failures_are_redelivered_then_dead_lettered(sqs):
    url, dlq = queue_with_dlq(sqs, max_receives=2)
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    calls = []

    def handler(event, context):
        calls.append(event["Records"][0]["body"])
        raise RuntimeError("handler crashed")

    dispatcher = QueueDispatcher(sqs, url, handler, batch_size=10, name="fold", wait_seconds=0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "Messages" not in sqs.receive_message(QueueUrl=dlq, VisibilityTimeout=0):
        dispatcher.poll_once()
        time.sleep(0.3)
    assert calls == ["poison", "poison"]  # tried maxReceiveCount times
    assert dispatcher.failures == 2
    [dead] = sqs.receive_message(QueueUrl=dlq)["Messages"]
    assert dead["Body"] == "poison"


def test_finds_the_apps_sqs_handlers(sqs):
    import app

    for source in app.app.event_sources:
        if hasattr(source, "queue"):
            sqs.create_queue(
                QueueName=source.queue, Attributes={"FifoQueue": "true"} if source.queue.endswith(".fifo") else {}
            )
    fold, publish = sqs_dispatchers(app, sqs)
    assert fold.function_name == "fold" and fold.batch_size == 10 and fold.handler is app.fold
    assert publish.function_name == "publish_status" and publish.handler is app.publish_status


def test_runs_the_apps_schedules_as_eventbridge_would():
    import app
    from crowdtrain.local.dispatcher import schedule_runners

    [runner] = schedule_runners(app)
    assert runner.handler is app.redrive_dead_letters and runner.seconds == 300
    seen = []
    runner.handler = lambda event, context: seen.append((event, context.function_name))
    runner.run_once()
    [(event, name)] = seen
    assert name == "redrive_dead_letters" and event["detail-type"] == "Scheduled Event" and event["version"] == "0"
