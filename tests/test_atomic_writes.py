"""DynamoDB's atomic conditional writes, which moto lacks and
crowdtrain/local/moto_server.py restores: two leases racing for a
synchronous round's last seat, one paused between its condition and its
write. On DynamoDB (and with the wrapper) the other one waits and finds the
round full; on moto alone it takes a fifth seat."""

from __future__ import annotations

import threading

import boto3
import moto.dynamodb.models as dynamodb_models
import pytest
from moto.dynamodb.responses import DynamoHandler

from chalicelib.store.rounds import ROUND, RoundSeats
from chalicelib.store.table import job_key
from crowdtrain.local.moto_server import serialize_dynamodb

SEATS = 4


@pytest.fixture
def paused_after_a_passing_condition(monkeypatch):
    """Conditions evaluate as moto does, but once `armed` is set the first one
    to pass holds its thread, before the write, until `released` is set (or
    2 s pass); `passed` says it has."""
    armed, passed, released = threading.Event(), threading.Event(), threading.Event()
    build = dynamodb_models.create_condition_expression_parser

    def parser(*args, **kwargs):
        made = build(*args, **kwargs)
        parse = made.parse

        def parse_then_pause():
            condition = parse()
            check = condition.expr

            def expr(item):
                ok = check(item)
                if ok and armed.is_set() and not passed.is_set():
                    passed.set()
                    released.wait(2)
                return ok

            condition.expr = expr
            return condition

        made.parse = parse_then_pause
        return made

    monkeypatch.setattr(dynamodb_models, "create_condition_expression_parser", parser)
    return armed, passed, released


def test_a_race_for_a_rounds_last_seat_seats_one_as_dynamodb_does(aws, paused_after_a_passing_condition, monkeypatch):
    monkeypatch.setattr(DynamoHandler, "call_action", DynamoHandler.call_action)  # moto as it was, after the test
    serialize_dynamodb()
    armed, passed, released = paused_after_a_passing_condition
    table = boto3.resource("dynamodb").Table(aws["TABLE_NAME"])
    seats = RoundSeats(table)
    for task in range(SEATS - 1):
        assert seats.claim("j-race", 1, f"0-{task}", SEATS)
    armed.set()  # the seats so far were taken one at a time: the racers' are raced
    won = {}

    def race(task: str) -> None:
        won[task] = RoundSeats(boto3.resource("dynamodb").Table(aws["TABLE_NAME"])).claim("j-race", 1, task, SEATS)
        released.set()  # the other racer may go on

    first = threading.Thread(target=race, args=("0-first",))
    first.start()
    assert passed.wait(5), "the first racer's condition never passed"
    second = threading.Thread(target=race, args=("0-second",))
    second.start()
    first.join(10)
    second.join(10)
    seated = table.get_item(Key=job_key("j-race", ROUND), ConsistentRead=True)["Item"]["tasks"]
    assert won == {"0-first": True, "0-second": False}
    assert len(seated) == SEATS
