"""moto's server with DynamoDB's atomic writes: `python -m crowdtrain.local.moto_server -H HOST -p PORT`.

DynamoDB applies each write, its condition included, as one step: of two
conditional writes that race for the same item, one sees the other's result.
moto's server serves requests on threads and evaluates a condition, then
writes, with nothing held in between, so both can pass. Sixteen threads each
adding a task to a round under `size(tasks) < 4` seated five in 4 of 40 tries
(moto 5.2.5): a synchronous round with one task too many, whose result then
arrives stale. Every guard crowdtrain builds on a conditional write would be
tested against weaker rules than AWS keeps, so the local cloud and the tests
that race threads against moto's server run their DynamoDB requests one at a
time, as this module's `serialize_dynamodb` arranges.
"""

from __future__ import annotations

import threading

from moto.dynamodb.responses import DynamoHandler

from crowdtrain.local.serialize import one_at_a_time

# Re-entrant, so that a DynamoDB call made while serving one (none is known in moto 5.2) cannot deadlock.
_ONE_AT_A_TIME = threading.RLock()


def serialize_dynamodb() -> None:
    """Serve this process's moto DynamoDB requests one at a time (idempotent)."""
    one_at_a_time(DynamoHandler, "call_action", _ONE_AT_A_TIME)


def main() -> None:
    from moto.server import main as serve  # its command line: -H host, -p port

    serialize_dynamodb()
    serve()


if __name__ == "__main__":
    main()
