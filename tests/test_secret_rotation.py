"""Rotating the lease secret (`crowdtrain rotate-secret`: a new AWSCURRENT
version in Secrets Manager). Tokens name the key that signed them: a lease
taken before a rotation completes after it, new leases are signed with the new
key, a warm Lambda that read the keys before the rotation learns of it from
the first token that names the new key, and a token of a key rotated out (two
rotations ago) or of a key never issued is a 401."""

import secrets

import boto3
from moto import mock_aws

from chalicelib.services import override
from chalicelib.store.secrets import PREVIOUS_KEY_SECONDS, REFRESH_SECONDS, RELOAD_SECONDS, SecretsManagerKeys
from chalicelib.tasks.tokens import TokenSigner
from tests.harness import Dataset

SECRET = "crowdtrain-test-lease"


def rotate(harness) -> None:
    harness.secretsmanager.put_secret_value(SecretId=SECRET, SecretString=secrets.token_hex(32))


def key_id(token: str) -> str:
    return token.split(".")[1]


def api_clock(harness) -> list[float]:
    """The API's key cache on a clock the test moves (the Lambda's time since it read the keys)."""
    clock = [0.0]
    override(signer=TokenSigner(SecretsManagerKeys(harness.secretsmanager, SECRET, clock=lambda: clock[0])))
    return clock


def test_a_lease_taken_before_a_rotation_completes_after_it(harness):
    clock = api_clock(harness)
    harness.create_job(Dataset.generate(batches=2, batch_size=4))
    before = harness.lease("a")
    rotate(harness)
    clock[0] += REFRESH_SECONDS
    after = harness.lease("b")
    assert key_id(after["lease_token"]) != key_id(before["lease_token"])  # signed with the new key
    assert harness.work(before).status_code == 200  # the previous key still verifies
    assert harness.work(after).status_code == 200


def test_a_warm_signer_learns_of_a_rotation_from_a_token_of_the_new_key():
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name=SECRET, SecretString="a" * 32)
        clock = [0.0]
        warm = SecretsManagerKeys(client, SECRET, clock=lambda: clock[0])
        old = warm.current()
        client.put_secret_value(SecretId=SECRET, SecretString="b" * 32)
        fresh = SecretsManagerKeys(client, SECRET, clock=lambda: clock[0])
        new = fresh.current()
        assert new.key_id != old.key_id and warm.current() == old  # warm: still its cached keys
        assert warm.find(new.key_id) is None  # read again at most every RELOAD_SECONDS
        clock[0] += RELOAD_SECONDS
        assert warm.find(new.key_id) == new and warm.find(old.key_id) == old
        assert warm.current() == new  # read again: it signs with the new key from now on
        client.put_secret_value(SecretId=SECRET, SecretString="c" * 32)  # a second rotation: `old` is gone
        clock[0] += REFRESH_SECONDS
        assert warm.current().key_id not in (old.key_id, new.key_id)
        assert warm.find(new.key_id) == new and warm.find(old.key_id) is None


def test_a_token_of_a_key_rotated_out_or_never_issued_is_401(harness):
    clock = api_clock(harness)
    harness.create_job(Dataset.generate(batches=1, batch_size=4))
    task = harness.lease("a")
    version, kid, body, mac = task["lease_token"].split(".")
    forged = harness.complete(task, token=f"{version}.{'f' * 32}.{body}.{mac}")
    assert forged.status_code == 401 and b"key is unknown" in forged.body
    rotate(harness)
    rotate(harness)  # twice: the task's key is neither current nor previous
    clock[0] += REFRESH_SECONDS
    loss, data = harness.compute(task)
    assert harness.upload(task, data).status_code in (200, 204)
    reply = harness.complete(task, loss)
    assert reply.status_code == 401 and b"key is unknown" in reply.body


def test_the_previous_key_verifies_only_as_long_as_a_lease_lasts_after_the_rotation(harness):
    """A leaked key stops working one rotation later: past PREVIOUS_KEY_SECONDS
    (the longest lease) since the rotation, a token of the previous key is a 401."""
    clock, wall = [0.0], [0.0]  # the Lambda's time since it read the keys, and the time of day
    keys = SecretsManagerKeys(harness.secretsmanager, SECRET, clock=lambda: clock[0], wall=lambda: wall[0])
    override(signer=TokenSigner(keys))
    harness.create_job(Dataset.generate(batches=2, batch_size=4), lease_seconds=600)
    first, second = harness.lease("a"), harness.lease("b")
    rotate(harness)
    rotated = harness.secretsmanager.get_secret_value(SecretId=SECRET)["CreatedDate"].timestamp()
    clock[0] += REFRESH_SECONDS  # the keys read again
    wall[0] = rotated + PREVIOUS_KEY_SECONDS - 60
    assert harness.work(first).status_code == 200  # within the window: still verifies
    wall[0] = rotated + PREVIOUS_KEY_SECONDS + 1
    loss, data = harness.compute(second)
    assert harness.upload(second, data).status_code in (200, 204)
    reply = harness.complete(second, loss)
    assert reply.status_code == 401 and b"key is unknown" in reply.body
