"""Volunteer identities (tasks/identities.py): issued by the API at a limited
rate per source address, presented with every task call, bound to the leases
they take; the volunteers behind one address share a lease cap."""

from __future__ import annotations

import json

import pytest
from chalice.local import LambdaEventConverter

from chalicelib import services as services_module
from chalicelib.store.secrets import SecretsManagerKeys
from chalicelib.tasks.tokens import VOLUNTEER_TOKEN_SECONDS, TokenSigner
from tests.harness import Dataset, token_payload


@pytest.fixture
def from_address(monkeypatch):
    """Calls as if from another source address (API Gateway's request context)."""

    def use(address: str) -> None:
        monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", address)

    return use


def limits(monkeypatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    services_module.reset()


def test_an_identity_is_issued_and_every_task_call_presents_it(harness):
    harness.create_job(Dataset.generate(batches=2, batch_size=4))
    reply = harness.call("POST", "/volunteers", {"name": "Ada Lovelace"})
    assert reply.status_code == 201
    issued = json.loads(reply.body)
    assert (
        issued["volunteer_id"].startswith("ada-lovelace.") and len(issued["volunteer_id"]) == len("ada-lovelace.") + 12
    )
    assert harness.call("POST", "/tasks/lease", {}).status_code == 401
    task = json.loads(harness.call("POST", "/tasks/lease", {"volunteer_token": issued["volunteer_token"]}).body)
    body = {"job_id": task["job_id"], "lease_token": task["lease_token"]}
    assert harness.call("POST", "/tasks/heartbeat", body).status_code == 401  # no volunteer token
    beat = harness.call("POST", "/tasks/heartbeat", {**body, "volunteer_token": issued["volunteer_token"]})
    assert beat.status_code == 200
    # an anonymous registration gets an id of its own too
    assert json.loads(harness.call("POST", "/volunteers", {}).body)["volunteer_id"].startswith("v.")


def test_a_volunteer_token_ends_30_days_after_its_issue_and_a_renewal_keeps_the_identity(harness):
    """A leaked volunteer token stops working: 30 days after it was issued or
    renewed it is a 401; POST /volunteers/renew gives the same identity (its
    credit with it) a fresh token, and cannot revive an ended one."""
    now = [1_000_000.0]
    keys = SecretsManagerKeys(harness.secretsmanager, "crowdtrain-test-lease")  # the test stack's lease secret
    services_module.override(signer=TokenSigner(keys, clock=lambda: now[0]))
    identities = services_module.services().identities
    identities.clock = lambda: now[0]
    job = harness.create_job(Dataset.generate(batches=4, batch_size=4))
    issued = json.loads(harness.call("POST", "/volunteers", {"name": "ada"}).body)
    now[0] += VOLUNTEER_TOKEN_SECONDS - 60
    renewed = harness.call("POST", "/volunteers/renew", {"volunteer_token": issued["volunteer_token"]})
    assert renewed.status_code == 200, renewed.body
    fresh = json.loads(renewed.body)
    assert (fresh["volunteer_id"], fresh["name"]) == (issued["volunteer_id"], "ada")
    assert fresh["volunteer_token"] != issued["volunteer_token"]
    now[0] += 120  # the first token is now 30 days old
    for path in ("/tasks/lease", "/volunteers/renew"):
        reply = harness.call("POST", path, {"volunteer_token": issued["volunteer_token"]})
        assert reply.status_code == 401 and b"expired 30 days after" in reply.body, (path, reply.body)
    task = json.loads(harness.call("POST", "/tasks/lease", {"volunteer_token": fresh["volunteer_token"]}).body)
    assert task["job_id"] == job and token_payload(task)["volunteer_id"] == issued["volunteer_id"]
    credit = harness.call("POST", "/volunteers/credit", {"job_id": job, "volunteer_token": fresh["volunteer_token"]})
    assert json.loads(credit.body)["volunteer_id"] == issued["volunteer_id"]  # the same identity, the same credit


def test_a_lease_token_is_not_a_bearer_token(harness):
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4))
    task = harness.lease("owner")
    loss, data = harness.compute(task)
    assert harness.upload(task, data).status_code in (200, 204)
    thief = harness.identity("thief")["volunteer_token"]
    base = {"job_id": job, "lease_token": task["lease_token"], "volunteer_token": thief}
    for path, extra in (
        ("/tasks/heartbeat", {}),
        ("/tasks/complete", {"loss": loss}),
        ("/tasks/release", {"reason": "stopped"}),
    ):
        reply = harness.call("POST", path, {**base, **extra})
        assert reply.status_code == 403 and b"another volunteer" in reply.body, (path, reply.body)
    assert harness.complete(task, loss).status_code == 200  # the owner's completion still stands
    harness.deliver()
    assert harness.status(job)["version"] == 1


def test_identities_per_address_are_limited(harness, monkeypatch, from_address):
    limits(monkeypatch, VOLUNTEERS_PER_ADDRESS_PER_HOUR="3")
    from_address("198.51.100.1")
    assert [harness.call("POST", "/volunteers", {}).status_code for _ in range(4)] == [201, 201, 201, 429]
    from_address("198.51.100.2")
    assert harness.call("POST", "/volunteers", {}).status_code == 201


def test_the_addresses_of_one_ipv6_64_are_one_address_to_every_limit(harness, monkeypatch, from_address):
    """A client owns its whole /64: four of its addresses get no more identities or leases than one."""
    limits(monkeypatch, VOLUNTEERS_PER_ADDRESS_PER_HOUR="3", MAX_LEASES_PER_ADDRESS="2")
    issued = []
    for address in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::3", "2001:db8:1:2:ffff::9"):
        from_address(address)
        issued.append(harness.call("POST", "/volunteers", {}).status_code)
    assert issued == [201, 201, 201, 429]
    from_address("2001:db8:1:3::1")  # the next /64 is another client
    assert harness.call("POST", "/volunteers", {}).status_code == 201
    harness.create_job(Dataset.generate(batches=6, batch_size=4))
    from_address("2001:db8:5:6::1")
    assert harness.lease("a") is not None
    from_address("2001:db8:5:6::2")
    assert harness.lease("b") is not None
    from_address("2001:db8:5:6::3")
    refused = harness.lease_reply("c")
    assert refused.status_code == 429 and b"at this address" in refused.body


def test_a_per_address_key_is_the_ipv4_address_or_the_ipv6_64():
    from chalicelib.domain.addresses import network

    assert network("198.51.100.7") == "198.51.100.7"
    assert network("::ffff:198.51.100.7") == "198.51.100.7"
    assert network("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == network("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert network("unknown") == "unknown"


def test_two_identities_at_one_address_cannot_publish_a_held_out_figure(harness, monkeypatch, from_address):
    """Evaluation answers are votes: agreeing claims count once per address, like replica checks."""
    from tests.test_evaluations import answer, create

    limits(monkeypatch, DISTINCT_ADDRESSES="1")
    job, _ = create(harness, copies=2)
    from_address("192.0.2.50")
    forged = [harness.lease("x1"), harness.lease("x2")]
    assert [t["kind"] for t in forged] == ["evaluate", "evaluate"]
    assert [answer(harness, t, 0.0, 1.0).status_code for t in forged] == [200, 200]
    assert harness.status(job)["held_out"] == []


def test_the_volunteers_behind_one_address_share_a_lease_cap(harness, monkeypatch, from_address):
    limits(monkeypatch, MAX_LEASES_PER_ADDRESS="5")
    harness.create_job(Dataset.generate(batches=12, batch_size=4))
    from_address("203.0.113.1")
    first = [harness.lease("a") for _ in range(4)]  # a's own cap is 4
    assert harness.lease("b") is not None  # the address's fifth
    refused = harness.lease_reply("b")
    assert refused.status_code == 429 and b"at this address" in refused.body
    from_address("203.0.113.2")
    assert harness.lease("c") is not None  # another address is not held back
    from_address("203.0.113.1")
    assert harness.work(first[0]).status_code == 200  # a completed lease frees its address slot
    assert harness.lease("b") is not None


def test_two_identities_from_one_address_cannot_both_check_a_batch(harness, monkeypatch, from_address):
    """Replication: the check of a first copy must come from another source address, so one client's
    two identities agreeing on a poisoned gradient is discarded, and an honest check elsewhere folds."""
    limits(monkeypatch, DISTINCT_ADDRESSES="1")
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4), replication={"copies": 2})
    from_address("192.0.2.10")
    assert harness.work(harness.lease("sybil-1")).status_code == 200
    harness.deliver()  # the first copy waits for its check
    assert harness.work(harness.lease("sybil-2")).status_code == 200  # the check, from the same address
    harness.deliver()
    status = harness.status(job)
    assert status["discarded"].get("same_address") == 2 and status["version"] == 0
    from_address("192.0.2.10")
    assert harness.work(harness.lease("sybil-1")).status_code == 200  # the batch starts over
    harness.deliver()
    from_address("198.51.100.20")
    assert harness.work(harness.lease("honest")).status_code == 200
    harness.deliver()
    assert harness.status(job)["version"] == 1


def _updates_by_lease(harness, job: str) -> list[list[str]]:
    """The lease ids behind each folded version, oldest first (the fold log, and META's last fold)."""
    from boto3.dynamodb.conditions import Key

    parts = services_module.services()
    items = parts._table.query(KeyConditionExpression=Key("pk").eq(f"JOB#{job}") & Key("sk").begins_with("VER#"))
    logged = {int(i["version"]): [lease for _, _, lease in json.loads(i["batches"])] for i in items["Items"]}
    last = parts.meta.get(job).last_fold
    if last:
        logged[last.version] = [lease for _, _, lease in last.batches]
    return [logged[v] for v in sorted(logged)]


def _flood(harness, client, honest_address=None) -> set[str]:
    """A median job (K = 5, max_share 0.4: two of an update's five at most
    from one client) worked by `client(turn)`, which leases and completes all
    it can each turn, beside one honest volunteer a turn, until the job
    finishes. The leases the client's results came from."""
    job = harness.create_job(
        Dataset.generate(batches=10, batch_size=4),
        aggregation="median",
        gradients_per_update=5,
        max_share=0.4,
        staleness=10,
    )
    client_leases: set[str] = set()
    for turn in range(40):
        for task in client():
            client_leases.add(token_payload(task)["lease_id"])
            assert harness.work(task).status_code == 200
        harness.deliver()
        if honest_address:
            honest_address(turn)
        if (task := harness.lease(f"honest-{turn}")) is not None:
            assert harness.work(task).status_code == 200
            harness.deliver()
        if harness.status(job)["status"] == "finished":
            break
    status = harness.status(job)
    assert status["status"] == "finished" and status["discarded"].get("over_share", 0) > 0
    updates = _updates_by_lease(harness, job)
    assert len(updates) == 2 and all(len(u) == 5 for u in updates)
    assert [sum(lease in client_leases for lease in u) for u in updates] == [2, 2]
    assert sorted((e, b) for e, b, _ in harness.folds(job)) == [(0, b) for b in range(10)]
    return client_leases


def test_one_identity_gives_at_most_its_share_of_an_update(harness):
    """However many results one volunteer completes, the rest of each update goes to others."""
    _flood(harness, lambda: [t for t in (harness.lease("greedy") for _ in range(4)) if t is not None])


def test_one_address_gives_at_most_its_share_of_an_update(harness, monkeypatch, from_address):
    """However many identities one client mints at one address, and however
    many results it sends, it fills at most max_share of any update."""
    limits(monkeypatch, DISTINCT_ADDRESSES="1")

    def sybils():
        from_address("203.0.113.7")
        return [
            t
            for name in ("sybil-a", "sybil-b", "sybil-c")
            for t in (harness.lease(name) for _ in range(4))
            if t is not None
        ]

    _flood(harness, sybils, lambda turn: from_address(f"198.51.100.{turn + 1}"))
