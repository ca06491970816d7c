"""boto3 clients shared by threads, as the local cloud shares them.

A Lambda container runs one invocation at a time, so crowdtrain builds its
boto3 clients once per process (chalicelib/services.py). The local cloud runs
the API's requests, the fold and the schedules on threads of one process, all
on those clients. boto3's DynamoDB layer is not safe for that: each client has
one condition-expression builder whose placeholder counters every request
resets and then advances, so two threads building a KeyConditionExpression or
ConditionExpression at once can send one thread's names with the other's
expression (moto then answers a valid query with "Query condition missed key
schema element", or, worse, a condition checks the wrong attribute). A lock
around building and injecting each request's expressions makes each request's
placeholders its own; building is microseconds, so nothing waits long.
"""

from __future__ import annotations

import threading

from boto3.dynamodb.transform import TransformationInjector

from crowdtrain.local.serialize import one_at_a_time

_BUILDING = threading.Lock()


def serialize_condition_building() -> None:
    """Build each DynamoDB request's condition expressions under one lock (idempotent).

    Call it before the clients are built: a client registers the injector's
    method when it is made, so one made earlier keeps the unguarded method."""
    one_at_a_time(TransformationInjector, "inject_condition_expressions", _BUILDING)
