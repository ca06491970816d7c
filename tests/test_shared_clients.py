"""Threads sharing one boto3 DynamoDB resource, as the local cloud's API, fold
and schedules do, each send their own condition expressions
(crowdtrain/local/shared_clients.py). boto3 builds every request's placeholders
with one counter per client that each request resets; the conditions below
pause at the two points between which another request's reset breaks a query,
so without the lock the race is certain, not a matter of luck."""

from __future__ import annotations

import threading

from boto3.dynamodb.conditions import BeginsWith, Equals, Key

from crowdtrain.local.shared_clients import serialize_condition_building

WAIT = 2.0  # with the lock the other request cannot start, so each pause runs out


class Shared:
    """botocore deep-copies a request's parameters; these conditions keep their events."""

    def __deepcopy__(self, memo):
        return self


class PausingBeginsWith(Shared, BeginsWith):
    """Built after its query's hash-key placeholder: says so, then waits for another request's reset."""

    def __init__(self, key: Key, prefix: str, paused: threading.Event, wait_for: threading.Event):
        super().__init__(key, prefix)
        self.paused, self.wait_for = paused, wait_for

    def get_expression(self):
        self.paused.set()
        self.wait_for.wait(WAIT)
        return super().get_expression()


class SignallingEquals(Shared, Equals):
    """Built first, right after its request reset the counters: says so, then waits."""

    def __init__(self, key: Key, value: str, reset: threading.Event, wait_for: threading.Event):
        super().__init__(key, value)
        self.reset, self.wait_for = reset, wait_for

    def get_expression(self):
        self.reset.set()
        self.wait_for.wait(WAIT)
        return super().get_expression()


def test_two_threads_querying_one_table_each_send_their_own_placeholders(moto_session):
    serialize_condition_building()  # before the client is made: it registers the injector's method then
    dynamodb = moto_session.resource("dynamodb")
    table = dynamodb.create_table(
        TableName="t",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
    )
    for job in ("a", "b"):
        table.put_item(Item={"pk": f"JOB#{job}", "sk": "EVAL#1", "job": job})
        table.put_item(Item={"pk": f"JOB#{job}", "sk": "OTHER#1", "job": job})
    a_paused, b_reset, a_done = threading.Event(), threading.Event(), threading.Event()
    found: dict[str, object] = {}

    def query(name: str, condition) -> None:
        try:
            found[name] = [item["job"] for item in table.query(KeyConditionExpression=condition)["Items"]]
        except Exception as err:  # noqa: BLE001 - the outcome under test
            found[name] = err
        finally:
            if name == "a":
                a_done.set()

    # a: pk's placeholder is #n0, then it pauses until b has reset the counters to 0, so that
    # unguarded, sk would be #n0 too and a's query would lose its hash key
    a = threading.Thread(
        target=query, args=("a", Key("pk").eq("JOB#a") & PausingBeginsWith(Key("sk"), "EVAL#", a_paused, b_reset))
    )
    b = threading.Thread(target=query, args=("b", SignallingEquals(Key("pk"), "JOB#b", b_reset, a_done)))
    a.start()
    assert a_paused.wait(10), found
    b.start()
    a.join(), b.join()
    assert found == {"a": ["a"], "b": ["b", "b"]}, found
