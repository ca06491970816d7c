"""Lambda's event sources, for the local cloud: SQS event source mappings and
EventBridge schedules.

`chalice local` serves HTTP only. This delivers queue messages to the app's
`@app.on_sqs_message` handlers the way Lambda does: up to `batch_size`
messages per invocation, deleted only when the handler returns; on an
exception they stay in the queue, reappear after its visibility timeout, and
the queue's redrive policy moves them to the dead-letter queue after its
maxReceiveCount. The handlers are the same objects AWS runs.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import types
import uuid
from typing import Any, Callable

log = logging.getLogger(__name__)


def lambda_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": queue_arn.split(":")[3],
    }


class QueueDispatcher(threading.Thread):
    """Polls one queue and invokes one handler, like one event source mapping."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: Callable[[dict, Any], Any],
        batch_size: int,
        name: str,
        wait_seconds: int = 1,
    ):
        super().__init__(name=f"dispatch-{name}", daemon=True)
        self.sqs, self.queue_url, self.handler = sqs, queue_url, handler
        self.batch_size, self.wait_seconds, self.function_name = batch_size, wait_seconds, name
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.stopping = threading.Event()
        self.failures = 0

    def poll_once(self) -> int:
        """One receive and, if it got messages, one invocation; returns messages handled."""
        reply = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = reply.get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [lambda_record(m, self.queue_arn) for m in messages]}
        context = types.SimpleNamespace(
            function_name=self.function_name, aws_request_id=str(uuid.uuid4()), memory_limit_in_mb=1024
        )
        try:
            self.handler(event, context)
        except Exception:
            self.failures += 1
            log.error(
                "%s failed; its %d messages will be redelivered:\n%s",
                self.function_name,
                len(messages),
                traceback.format_exc(),
            )
            return 0
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return len(messages)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll_once()
            except Exception:  # the stand-in AWS going away at shutdown, say
                if not self.stopping.is_set():
                    log.exception("polling %s failed", self.queue_url)
                    self.stopping.wait(1)

    def stop(self) -> None:
        self.stopping.set()


def sqs_dispatchers(app_module: Any, sqs: Any, wait_seconds: int = 1) -> list[QueueDispatcher]:
    """One dispatcher per @app.on_sqs_message handler of a Chalice app module."""
    from chalice.app import SQSEventConfig

    out = []
    for source in app_module.app.event_sources:
        if isinstance(source, SQSEventConfig):
            url = sqs.get_queue_url(QueueName=source.queue)["QueueUrl"]
            out.append(
                QueueDispatcher(
                    sqs, url, getattr(app_module, source.name), source.batch_size, source.name, wait_seconds
                )
            )
    return out


RATE_SECONDS = {"MINUTES": 60, "HOURS": 3600, "DAYS": 86400}


class ScheduleRunner(threading.Thread):
    """EventBridge's rate schedule for one `@app.schedule` handler."""

    def __init__(self, handler: Callable[[dict, Any], Any], seconds: float, name: str):
        super().__init__(name=f"schedule-{name}", daemon=True)
        self.handler, self.seconds, self.function_name = handler, seconds, name
        self.stopping = threading.Event()

    def run_once(self) -> None:
        """One invocation with a scheduled event as EventBridge sends it."""
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "000000000000",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": "us-east-1",
            "resources": [],
            "detail": {},
        }
        self.handler(
            event,
            types.SimpleNamespace(
                function_name=self.function_name, aws_request_id=event["id"], memory_limit_in_mb=1024
            ),
        )

    def run(self) -> None:
        while not self.stopping.wait(self.seconds):
            try:
                self.run_once()
            except Exception:
                log.exception("scheduled %s failed", self.function_name)

    def stop(self) -> None:
        self.stopping.set()


def schedule_runners(app_module: Any) -> list[ScheduleRunner]:
    """One runner per `@app.schedule(Rate(...))` handler of a Chalice app module."""
    from chalice.app import Rate, ScheduledEventConfig

    return [
        ScheduleRunner(
            getattr(app_module, source.name),
            source.schedule_expression.value * RATE_SECONDS[source.schedule_expression.unit],
            source.name,
        )
        for source in app_module.app.event_sources
        if isinstance(source, ScheduledEventConfig) and isinstance(source.schedule_expression, Rate)
    ]
