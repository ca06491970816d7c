"""Status documents due later: a job's document skipped because one was
written seconds before goes on this SQS standard queue, out of sight until
it may be written again (publish/status.py), and the `publish_status`
Lambda writes it then. So the public document is never more than the
interval and SQS's delivery behind the last fold."""

from __future__ import annotations

import json
import math
from typing import Any


class DuePublishes:
    def __init__(self, sqs: Any, url: str):
        self._sqs = sqs
        self.url = url

    def send(self, job_id: str, seconds: float) -> None:
        """The job's document is due in `seconds` (SQS delays a message whole seconds, at most 15 minutes)."""
        delay = min(900, max(0, math.ceil(seconds)))
        self._sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps({"job_id": job_id}), DelaySeconds=delay)


def due_jobs(bodies: list[str]) -> list[str]:
    """The jobs named by a batch of the queue's messages, each once."""
    return list(dict.fromkeys(str(json.loads(body)["job_id"]) for body in bodies))
